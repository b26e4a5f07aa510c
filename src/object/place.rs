//! The placement protocol of every ipckit object: create →
//! init → publish, and open → wait → validate, as two separate functions.
//!
//! An object occupies `total_len` bytes of a segment starting at a
//! [`HEADER_ALIGN`]-aligned offset: a [`Header`] followed by its payload.
//! Named and anonymous objects own a whole segment (offset 0); embedded
//! objects live at an offset inside a segment someone else laid out.
//!
//! # The state word while an object is being created
//!
//! | state seen by an opener | header bytes | meaning | opener |
//! |---|---|---|---|
//! | 0 | anything | fresh memory, or a creator copying the header | waits |
//! | `STATE_INIT` | a complete header | the creator is initialising the payload | waits |
//! | `STATE_READY` | a complete header | published (SYNC POINT "publish") | validates |
//! | anything else | | not an ipckit object being created | reports what is wrong |
//!
//! A creator stores 0 before it writes the header, so an opener that saw 0
//! never trusts header bytes it read then. An opener that saw
//! `STATE_READY` re-reads the state after copying the header (a seqlock
//! read): if a creator re-initialised the region meanwhile (`create_in` over
//! an old object), the copy may be torn and is read again. A wait is
//! bounded by [`INIT_WAIT`]; then the object is reported `Uninitialized`
//! (its creator may have died while creating it) — never `Corrupt`.

use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::{
    HEADER_ALIGN, HEADER_LEN, Header, HeaderError, ObjectKind, STATE_INIT, STATE_OFFSET,
    STATE_READY,
};
use crate::layout::{TypeFingerprint, align_up};
use crate::platform;
use crate::segment::Segment;

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
/// its header against `spec`'s kind and type (not its length: that depends
/// on the header's parameter, which the caller checks).
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
    // No deadline (a wait too long for `Instant`) means waiting for good.
    let deadline = Instant::now().checked_add(wait);
    let mut bytes = [0u8; HEADER_LEN];
    loop {
        // SYNC POINT "publish" (see create_in).
        let s = state.load(Ordering::Acquire);
        if s == STATE_READY {
            segment.read_at(offset, &mut bytes)?;
            // Seqlock read: the copy is whole only if the state did not
            // change while it was taken (a creator re-initialising the
            // region stores 0 first). The fence orders the copy's loads
            // before the second load of the state.
            fence(Ordering::Acquire);
            if state.load(Ordering::Relaxed) == STATE_READY {
                break;
            }
            continue;
        }
        if s != 0 && s != STATE_INIT {
            // Not an object being created: report what is wrong with it.
            segment.read_at(offset, &mut bytes)?;
            let err = match Header::decode(&bytes) {
                Err(e) => header_error(e),
                Ok(_) => Error::new(ErrorKind::Corrupt, format!("invalid state word {s:#010x}")),
            };
            return Err(err.context(ctx()));
        }
        // 0 or STATE_INIT: being created. Whatever the header bytes hold
        // now, they are the creator's work in progress.
        if deadline.is_some_and(|d| Instant::now() >= d) {
            // Still not published: a creator that died mid-way, or bytes
            // that were never an ipckit object. Say which, if the bytes tell.
            segment.read_at(offset, &mut bytes)?;
            let never_written = bytes.iter().all(|&b| b == 0);
            let err = match Header::decode(&bytes) {
                Err(e) if s == 0 && !never_written => header_error(e),
                _ => Error::new(
                    ErrorKind::Uninitialized,
                    "its creator never finished initialising it (it may have died while creating it)",
                ),
            };
            return Err(err.context(ctx()));
        }
        std::thread::yield_now();
        if state.load(Ordering::Relaxed) != s {
            continue;
        }
        std::thread::sleep(Duration::from_micros(200));
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
