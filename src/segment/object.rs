//! The create → init → publish / open → wait → validate protocol that every
//! ipckit object uses, in one place (DESIGN.md §3).
//!
//! An object occupies `total_len` bytes of a segment starting at a
//! [`HEADER_ALIGN`]-aligned offset: a [`Header`] followed by its payload.
//! Named and anonymous objects own a whole segment (offset 0); embedded
//! objects live at an offset inside a segment someone else laid out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Segment;
use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::{
    HEADER_ALIGN, HEADER_LEN, Header, HeaderError, ObjectKind, STATE_INIT, STATE_OFFSET,
    STATE_READY,
};
use crate::layout::{TypeFingerprint, align_up};
use crate::platform;

/// How long `open` waits for a creator to publish an object it is still
/// initialising before reporting [`ErrorKind::Uninitialized`].
pub(crate) const INIT_WAIT: Duration = Duration::from_secs(2);

/// What a new object looks like.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub kind: ObjectKind,
    pub ty: TypeFingerprint,
    pub param: u64,
    /// Bytes of the object, header included.
    pub total_len: usize,
    /// Alignment the object's start needs: [`HEADER_ALIGN`], or more for a
    /// payload of larger alignment (a `Value<T>` of a 128-aligned `T`).
    pub align: usize,
}

/// Where an object lives: a segment and the offset of its header.
#[derive(Clone, Debug)]
pub(crate) struct Placement {
    pub segment: Segment,
    pub offset: usize,
    pub header: Header,
}

impl Placement {
    /// Pointer to byte `at` of the object (0 = the header), which must lie in it.
    pub fn ptr(&self, at: usize) -> *mut u8 {
        debug_assert!(at <= self.header.total_len as usize);
        // SAFETY: `offset + total_len <= segment.len()` was checked when the
        // object was created or validated, and `at <= total_len`.
        unsafe { self.segment.as_ptr().add(self.offset + at) }
    }

    /// A description for error messages: `"mutex \"jobs\""` or
    /// `"mutex at offset 64 of an anonymous segment"`.
    pub fn describe(&self) -> String {
        describe(self.header.kind(), &self.segment, self.offset)
    }

    /// The token that lets another process open this object.
    pub fn token(&self) -> ObjectToken {
        ObjectToken {
            segment: self.segment.clone(),
            offset: self.offset as u64,
        }
    }
}

fn describe(kind: Option<ObjectKind>, segment: &Segment, offset: usize) -> String {
    let kind = kind.map_or("object", |k| k.name());
    let kind = kind.to_ascii_lowercase();
    match (segment.name(), offset) {
        (Some(name), 0) => format!("{kind} {name:?}"),
        (Some(name), off) => format!("{kind} at offset {off} of segment {name:?}"),
        (None, 0) => format!("anonymous {kind}"),
        (None, off) => format!("{kind} at offset {off} of an anonymous segment"),
    }
}

/// Serialised form of an object handle: its segment and offset.
#[derive(Serialize, Deserialize)]
pub(crate) struct ObjectToken {
    pub segment: Segment,
    pub offset: u64,
}

impl ObjectToken {
    /// Deserialises a token into the segment (opened) and the offset.
    pub fn decode<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<(Segment, usize), D::Error> {
        let t = ObjectToken::deserialize(d)?;
        let offset = usize::try_from(t.offset).map_err(serde::de::Error::custom)?;
        Ok((t.segment, offset))
    }
}

/// Offset of a payload of alignment `align` that follows the header.
pub(crate) const fn payload_offset(align: usize) -> usize {
    match align_up(HEADER_LEN, align) {
        Some(v) => v,
        None => HEADER_LEN,
    }
}

fn state_word(segment: &Segment, offset: usize) -> &AtomicU32 {
    // SAFETY: callers checked that `offset + HEADER_LEN <= segment.len()` and
    // that `offset` is HEADER_ALIGN-aligned (the mapping is page-aligned), so
    // the state word is in bounds and 4-byte aligned. It is only ever accessed
    // atomically. The returned reference borrows `segment`, which keeps the
    // mapping alive.
    unsafe { &*(segment.as_ptr().add(offset + STATE_OFFSET) as *const AtomicU32) }
}

/// The state word of the object at offset 0 of `segment`, read with
/// Acquire (SYNC POINT "publish"), or `None` if the segment is shorter than
/// a header. For `ipckit::admin`, which inspects objects it did not open
/// through `open_in`.
pub(crate) fn state_at_start(segment: &Segment) -> Option<u32> {
    (segment.len() >= HEADER_LEN).then(|| state_word(segment, 0).load(Ordering::Acquire))
}

fn check_range(segment: &Segment, offset: usize, len: usize, align: usize) -> Result<()> {
    let align = align.max(HEADER_ALIGN);
    if offset % align != 0 {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("offset {offset} is not a multiple of {align}"),
        ));
    }
    segment.ptr_at(offset, len).map(drop)
}

/// Writes a header at `offset`, runs `init` on the object's base pointer, and
/// publishes the object.
///
/// `init` receives a pointer to the first byte of the object (the header) and
/// must initialise the payload; it may assume the payload bytes are
/// exclusively its own until this function returns.
pub(crate) fn create_in(
    segment: &Segment,
    offset: usize,
    spec: Spec,
    init: impl FnOnce(*mut u8) -> Result<()>,
) -> Result<Placement> {
    check_range(segment, offset, spec.total_len, spec.align).map_err(|e| {
        e.context(format!(
            "cannot create {}",
            describe(Some(spec.kind), segment, offset)
        ))
    })?;
    let me = platform::current_process();
    let mut header = Header::new(spec.kind, spec.ty, spec.total_len as u64, spec.param);
    header.creator_pid = me.pid;
    header.creator_start_time = me.start_time;
    header.created_unix_nanos = platform::unix_time_nanos();
    let bytes = header.encode();

    let state = state_word(segment, offset);
    // Mark the region as not-ready before touching anything else, so an
    // opener of a reused region never validates a half-written header.
    state.store(0, Ordering::Release);
    let base = segment.ptr_at(offset, spec.total_len)?;
    // SAFETY: `base..base+HEADER_LEN` is inside the segment (checked above).
    // The state word (bytes 8..12) is skipped: it is only written atomically.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), base, STATE_OFFSET);
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr().add(STATE_OFFSET + 4),
            base.add(STATE_OFFSET + 4),
            HEADER_LEN - STATE_OFFSET - 4,
        );
    }
    state.store(STATE_INIT, Ordering::Release);
    init(base)?;
    // SYNC POINT "publish": everything `init` wrote happens-before an
    // opener's Acquire load that sees STATE_READY.
    state.store(STATE_READY, Ordering::Release);
    Ok(Placement {
        segment: segment.clone(),
        offset,
        header,
    })
}

/// Waits (bounded) for the object at `offset` to be published, then validates
/// its header against `kind` and `ty`.
pub(crate) fn open_in(
    segment: &Segment,
    offset: usize,
    spec: &Spec,
    wait: Duration,
) -> Result<Placement> {
    let (kind, ty) = (spec.kind, spec.ty);
    let align = spec.align.max(HEADER_ALIGN);
    let ctx = || format!("cannot open {}", describe(Some(kind), segment, offset));
    if offset % align != 0 || segment.ptr_at(offset, HEADER_LEN).is_err() {
        let available = segment.len().saturating_sub(offset) as u64;
        let err = if offset % align != 0 {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("offset {offset} is not a multiple of {align}"),
            )
        } else {
            header_error(HeaderError::Truncated {
                needed: HEADER_LEN as u64,
                available,
            })
        };
        return Err(err.context(ctx()));
    }
    let state = state_word(segment, offset);
    let deadline = Instant::now() + wait;
    let mut bytes = [0u8; HEADER_LEN];
    loop {
        // SYNC POINT "publish" (see create_in).
        let s = state.load(Ordering::Acquire);
        segment.read_at(offset, &mut bytes)?;
        if s == STATE_READY {
            break;
        }
        let empty = bytes[..STATE_OFFSET].iter().all(|&b| b == 0);
        if !(s == STATE_INIT || (s == 0 && empty)) {
            // Not an object being created: report what is wrong with it.
            let err = match Header::decode(&bytes) {
                Err(e) => header_error(e),
                Ok(_) => Error::new(ErrorKind::Corrupt, format!("invalid state word {s:#010x}")),
            };
            return Err(err.context(ctx()));
        }
        if Instant::now() >= deadline {
            return Err(Error::new(
                ErrorKind::Uninitialized,
                "its creator never finished initialising it (it may have died while creating it)",
            )
            .context(ctx()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let header = Header::decode(&bytes).map_err(|e| header_error(e).context(ctx()))?;
    let available = (segment.len() - offset) as u64;
    header
        .validate(kind, ty, available)
        .map_err(|e| header_error(e).context(ctx()))?;
    Ok(Placement {
        segment: segment.clone(),
        offset,
        header,
    })
}

/// Maps a header problem to an error of the right kind.
pub(crate) fn header_error(e: HeaderError) -> Error {
    let kind = match &e {
        HeaderError::WrongKind { .. } => ErrorKind::WrongKind,
        HeaderError::WrongType { .. } => ErrorKind::WrongType,
        HeaderError::Version(_) => ErrorKind::Incompatible,
        HeaderError::Truncated { .. }
        | HeaderError::BadMagic(_)
        | HeaderError::BadHeaderLen(_)
        | HeaderError::Checksum
        | HeaderError::BadLength(_) => ErrorKind::Corrupt,
    };
    Error::new(kind, e.to_string())
}

/// Fails with a `Corrupt` error unless the header's total length is exactly
/// what the object's parameters imply.
pub(crate) fn expect_len(place: &Placement, expected: Option<usize>) -> Result<()> {
    match expected {
        Some(len) if len as u64 == place.header.total_len => Ok(()),
        _ => Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "header length {} does not match its parameters (expected {})",
                place.header.total_len,
                expected.map_or_else(|| "an overflow".to_owned(), |l| l.to_string())
            ),
        )
        .context(format!("cannot open {}", place.describe()))),
    }
}

/// How a typed object is created or found; shared by every object type's
/// constructors.
pub(crate) enum Location<'a> {
    /// A new named segment of exactly the object's size.
    Create { name: &'a str, mode: u32 },
    /// An existing named segment.
    Open { name: &'a str },
    /// Open the named object, or create it.
    OpenOrCreate { name: &'a str, mode: u32 },
    /// A new anonymous segment.
    Anonymous,
    /// Inside an existing segment, at an offset: create a new object there.
    CreateIn { segment: &'a Segment, offset: usize },
    /// Inside an existing segment, at an offset: open the object there.
    OpenIn { segment: &'a Segment, offset: usize },
}

/// Creates or opens an object at `loc`.
///
/// `spec` describes the object to create; `validate` checks an opened
/// object's header parameters and returns its expected total length.
pub(crate) fn locate(
    loc: Location<'_>,
    spec: Spec,
    init: impl FnOnce(*mut u8) -> Result<()>,
    validate: impl Fn(&Header) -> Option<usize>,
) -> Result<Placement> {
    let kind_name = spec.kind.name().to_ascii_lowercase();
    let opened = |place: Placement, validate: &dyn Fn(&Header) -> Option<usize>| {
        expect_len(&place, validate(&place.header)).map(|()| place)
    };
    let validate = &validate;
    match loc {
        Location::Create { name, mode } => {
            let seg = Segment::builder(name)
                .size(spec.total_len)
                .mode(mode)
                .build()
                .map_err(|e| e.context(format!("cannot create {kind_name} {name:?}")))?;
            create_in(&seg, 0, spec, init)
        }
        Location::Open { name } => {
            let seg = Segment::open(name)
                .map_err(|e| e.context(format!("cannot open {kind_name} {name:?}")))?;
            let place = open_in(&seg, 0, &spec, INIT_WAIT)?;
            opened(place, validate)
        }
        Location::OpenOrCreate { name, mode } => {
            match Segment::builder(name)
                .size(spec.total_len)
                .mode(mode)
                .build()
            {
                Ok(seg) => create_in(&seg, 0, spec, init),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let seg = Segment::open(name)
                        .map_err(|e| e.context(format!("cannot open {kind_name} {name:?}")))?;
                    let place = open_in(&seg, 0, &spec, INIT_WAIT)?;
                    opened(place, validate)
                }
                Err(e) => Err(e.context(format!("cannot create {kind_name} {name:?}"))),
            }
        }
        Location::Anonymous => {
            let seg = Segment::anonymous(spec.total_len)
                .map_err(|e| e.context(format!("cannot create anonymous {kind_name}")))?;
            create_in(&seg, 0, spec, init)
        }
        Location::CreateIn { segment, offset } => create_in(segment, offset, spec, init),
        Location::OpenIn { segment, offset } => {
            let place = open_in(segment, offset, &spec, INIT_WAIT)?;
            opened(place, validate)
        }
    }
}
