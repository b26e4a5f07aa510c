//! The object skeleton: one generic handle for every ipckit object placed in
//! shared memory.
//!
//! Every shared type — `Mutex`, `Condvar`, `Event`, `Semaphore`, `Barrier`,
//! `Value`, `Array`, `Queue`, `JoinableQueue`, `SharedMap`,
//! `ShareableList` — is a thin typed wrapper around an [`Object<L>`], where
//! the [`Layout`] `L` says what the object looks like in a segment. The
//! skeleton owns everything the types have in common, once:
//!
//! - **placement**: a named segment of its own (`create`, `open`,
//!   `open_or_create`), an anonymous one (`new`), or an offset inside a
//!   segment the caller laid out (`create_in`, `open_in`);
//! - **create → init → publish** ([`Object::create`]): the header is
//!   written, the type's initialiser — passed *only* here, as iceoryx2's
//!   `dynamic_storage` builders do — writes the payload, and one Release
//!   store publishes it;
//! - **open → wait → validate** ([`Object::open`]): wait (bounded) for the
//!   publication, check kind, element type and the length the header's
//!   parameter implies, then the layout's own checks; no initialiser;
//! - `size_in_segment`, the `Send`/`Sync`/`Clone` reasoning, and the serde
//!   token (a handle serialises as its segment and offset; deserialising
//!   opens and validates the object, so a handle can be passed to a child).
//!
//! ```text
//!   Mutex<T>  Value<T>  Array<T>  Queue<T, F>  SharedMap<K, V>  …   typed wrappers
//!       \        |         |          |             |
//!        Object<L: Layout>  — placement, create/open, serde, Send/Sync
//!                 |
//!        place: header protocol (create_in / open_in), Segment, Header
//! ```
//!
//! The wait/wake side has its own single owner, `sync::raw`.

mod place;

use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::layout::TypeFingerprint;
use crate::layout::header::{HEADER_ALIGN, Header, ObjectKind};
use crate::segment::{DEFAULT_MODE, Segment};

use place::ObjectToken;
use place::{INIT_WAIT, Placement, Spec};
pub(crate) use place::{payload_offset, state_at_start};

/// What an object type looks like in shared memory.
///
/// An object is a [`Header`] followed by a payload. The payload starts with
/// the fixed-size [`Shared`](Layout::Shared) state at
/// [`SHARED_AT`](Layout::SHARED_AT); variable-length parts (an array's
/// elements, a queue's ring, a map's slots) follow at offsets the wrapper
/// computes from the header's parameter.
///
/// # Safety
///
/// Implementors promise that:
///
/// - `Shared` is `#[repr(C)]`, holds no pointers, and is valid for **every**
///   bit pattern (atomics, integers, a pthread mutex, `UnsafeCell`s of
///   [`ShmSafe`](crate::ShmSafe) data): after publication another process —
///   or a hostile one — may have written anything there;
/// - `Shared` is only accessed through `&Shared`, whose every mutation goes
///   through atomics or happens under a process-shared lock inside it; so a
///   `&Shared` may be used by any thread of any process at once (hence the
///   `Sync` bound), and a handle is `Send + Sync`;
/// - [`total_len`](Layout::total_len) never returns a length shorter than
///   `SHARED_AT + size_of::<Shared>()`;
/// - `SHARED_AT` is a multiple of `Shared`'s alignment, and
///   [`ALIGN`](Layout::ALIGN) is at least that alignment (objects start at
///   multiples of `ALIGN.max(HEADER_ALIGN)` in page-aligned mappings).
pub(crate) unsafe trait Layout {
    /// The fixed shared state at the start of the payload.
    type Shared: Sync;
    /// The kind recorded in the header.
    const KIND: ObjectKind;
    /// Alignment of the object's first byte (raised to [`HEADER_ALIGN`]).
    const ALIGN: usize = std::mem::align_of::<Self::Shared>();
    /// Offset of the shared state from the object's first byte.
    const SHARED_AT: usize = payload_offset(std::mem::align_of::<Self::Shared>());

    /// The element type recorded in the header ([`TypeFingerprint::NONE`]
    /// for untyped objects such as an `Event`).
    fn fingerprint() -> TypeFingerprint {
        TypeFingerprint::NONE
    }

    /// The object's length, header included, for header parameter `param`
    /// (an array's length, a queue's capacity, …); `None` if no object has
    /// that parameter. The default: a fixed object whose parameter is 0.
    fn total_len(param: u64) -> Option<usize> {
        (param == 0).then_some(fixed_len::<Self::Shared>())
    }

    /// The length an opened object with header `header` must have: by
    /// default what [`total_len`](Layout::total_len) gives for its
    /// parameter. A layout whose length is not a function of the parameter
    /// alone (a `ShareableList`'s slot table) checks it here and in its
    /// wrapper.
    fn expected_len(header: &Header) -> Option<usize> {
        Self::total_len(header.param)
    }

    /// Checks an opened object's payload against its header, beyond the
    /// length (a semaphore's slot count). Runs on every open.
    fn check_opened(_object: &Object<Self>) -> Result<()>
    where
        Self: Sized,
    {
        Ok(())
    }
}

/// The length of an object that is only a header and a `S`.
pub(crate) const fn fixed_len<S>() -> usize {
    payload_offset(std::mem::align_of::<S>()) + std::mem::size_of::<S>()
}

/// Where to create an object.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Create<'a> {
    /// A new named segment of exactly the object's size, mode `0o600`.
    Named(&'a str),
    /// A new anonymous segment (a `memfd`).
    Anonymous,
    /// At an offset inside an existing segment (overwriting what is there).
    In(&'a Segment, usize),
}

/// Where to find an existing object.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Open<'a> {
    /// The object owning the named segment.
    Named(&'a str),
    /// The object at an offset inside a segment.
    In(&'a Segment, usize),
}

/// The memory an initialiser writes: the object's region, exclusively the
/// creator's until [`Object::create`] publishes it.
pub(crate) struct Uninit<L: Layout> {
    base: NonNull<u8>,
    _layout: PhantomData<fn() -> L>,
}

impl<L: Layout> Uninit<L> {
    /// Where the shared state goes (aligned, inside the region).
    pub(crate) fn shared(&self) -> *mut L::Shared {
        self.at(L::SHARED_AT) as *mut L::Shared
    }

    /// Byte `offset` of the object (0 is the header). The caller keeps
    /// `offset` inside the length `L::total_len` gave for this object.
    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        self.base.as_ptr().wrapping_add(offset)
    }
}

/// A handle to an object of layout `L` in shared memory: the segment that
/// keeps the mapping alive, the object's validated header, and the address
/// of its first byte in this process.
pub(crate) struct Object<L: Layout> {
    place: Placement,
    base: NonNull<u8>,
    _layout: PhantomData<fn() -> L>,
}

// SAFETY: `base` points into the mapping that `place.segment` keeps alive
// (segments are Send + Sync); the handle gives out only `&L::Shared`, which
// `Layout`'s contract makes sound to use from any thread of any process at
// once (`L::Shared: Sync`), and raw pointers, whose users justify each use.
unsafe impl<L: Layout> Send for Object<L> {}
// SAFETY: as above.
unsafe impl<L: Layout> Sync for Object<L> {}

impl<L: Layout> Clone for Object<L> {
    fn clone(&self) -> Self {
        Object {
            place: self.place.clone(),
            base: self.base,
            _layout: PhantomData,
        }
    }
}

impl<L: Layout> fmt::Debug for Object<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl<L: Layout> Object<L> {
    fn spec(total_len: usize, param: u64) -> Spec {
        Spec {
            kind: L::KIND,
            ty: L::fingerprint(),
            param,
            total_len,
            align: L::ALIGN.max(HEADER_ALIGN),
        }
    }

    fn kind_name() -> String {
        L::KIND.name().to_ascii_lowercase()
    }

    /// Bytes an object with parameter `param` needs inside a segment.
    pub(crate) fn size_in_segment(param: u64) -> Option<usize> {
        L::total_len(param)
    }

    /// Creates an object with header parameter `param` at `at`: writes the
    /// header, runs `init` on the region, publishes it.
    ///
    /// `init` must initialise `L::Shared` and whatever else the layout has;
    /// the region is exclusively its own and zero-filled when the segment is
    /// new (not when creating inside an existing segment).
    pub(crate) fn create(
        at: Create<'_>,
        param: u64,
        init: impl FnOnce(Uninit<L>) -> Result<()>,
    ) -> Result<Self> {
        Self::create_sized(at, param, Self::len_for(param)?, init)
    }

    fn len_for(param: u64) -> Result<usize> {
        L::total_len(param).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "a {} of that size does not fit in memory",
                    Self::kind_name()
                ),
            )
        })
    }

    /// [`create`](Self::create) for a layout whose length the caller
    /// computed (it must be what `L::expected_len` accepts for the header).
    pub(crate) fn create_sized(
        at: Create<'_>,
        param: u64,
        total_len: usize,
        init: impl FnOnce(Uninit<L>) -> Result<()>,
    ) -> Result<Self> {
        let spec = Self::spec(total_len, param);
        let (segment, offset) = match at {
            Create::Named(name) => (
                Segment::builder(name)
                    .size(total_len)
                    .mode(DEFAULT_MODE)
                    .build()
                    .map_err(|e| {
                        e.context(format!("cannot create {} {name:?}", Self::kind_name()))
                    })?,
                0,
            ),
            Create::Anonymous => (
                Segment::new(total_len).map_err(|e| {
                    e.context(format!("cannot create anonymous {}", Self::kind_name()))
                })?,
                0,
            ),
            Create::In(segment, offset) => (segment.clone(), offset),
        };
        Self::create_at(&segment, offset, spec, init)
    }

    fn create_at(
        segment: &Segment,
        offset: usize,
        spec: Spec,
        init: impl FnOnce(Uninit<L>) -> Result<()>,
    ) -> Result<Self> {
        let place = place::create_in(segment, offset, spec, |base| {
            let base = NonNull::new(base).expect("a mapping is never at address 0");
            init(Uninit {
                base,
                _layout: PhantomData,
            })
        })?;
        Ok(Self::from_place(place))
    }

    /// Opens the object at `at`: waits for its creator to publish it, then
    /// validates kind, element type, length and the layout's own checks.
    pub(crate) fn open(at: Open<'_>) -> Result<Self> {
        let (segment, offset) = match at {
            Open::Named(name) => (
                Segment::open(name).map_err(|e| {
                    e.context(format!("cannot open {} {name:?}", Self::kind_name()))
                })?,
                0,
            ),
            Open::In(segment, offset) => (segment.clone(), offset),
        };
        Self::open_at(&segment, offset)
    }

    fn open_at(segment: &Segment, offset: usize) -> Result<Self> {
        // The length is checked below, against the header's parameter.
        let spec = Self::spec(0, 0);
        let place = place::open_in(segment, offset, &spec, INIT_WAIT)?;
        let expected = L::expected_len(&place.header);
        if expected.map(|l| l as u64) != Some(place.header.total_len) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "header length {} does not match its parameter {} (expected {})",
                    place.header.total_len,
                    place.header.param,
                    expected.map_or_else(|| "no valid object".to_owned(), |l| l.to_string())
                ),
            )
            .context(format!("cannot open {}", place.describe())));
        }
        let object = Self::from_place(place);
        L::check_opened(&object).map_err(|e| e.context(format!("cannot open {object:?}")))?;
        Ok(object)
    }

    /// Opens the named object, or creates it with `param` and `init` if the
    /// name does not exist. Exactly one process creates; the others open
    /// (and wait for the creator's publication).
    pub(crate) fn open_or_create(
        name: &str,
        param: u64,
        init: impl FnOnce(Uninit<L>) -> Result<()>,
    ) -> Result<Self> {
        Self::open_or_create_sized(name, param, Self::len_for(param)?, init)
    }

    /// [`open_or_create`](Self::open_or_create) with a computed length.
    pub(crate) fn open_or_create_sized(
        name: &str,
        param: u64,
        total_len: usize,
        init: impl FnOnce(Uninit<L>) -> Result<()>,
    ) -> Result<Self> {
        match Segment::builder(name)
            .size(total_len)
            .mode(DEFAULT_MODE)
            .build()
        {
            Ok(segment) => Self::create_at(&segment, 0, Self::spec(total_len, param), init),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Self::open(Open::Named(name)),
            Err(e) => Err(e.context(format!("cannot create {} {name:?}", Self::kind_name()))),
        }
    }

    fn from_place(place: Placement) -> Self {
        let base = NonNull::new(place.ptr(0)).expect("a mapping is never at address 0");
        Object {
            place,
            base,
            _layout: PhantomData,
        }
    }

    /// The shared state.
    pub(crate) fn shared(&self) -> &L::Shared {
        // SAFETY: the object's length (validated against the header on open,
        // computed on create) covers `SHARED_AT + size_of::<Shared>()`
        // (Layout's contract), `SHARED_AT` is aligned for `Shared` within an
        // object aligned to `ALIGN` (checked by `place`), the mapping lives
        // as long as `self.place.segment`, and every bit pattern is a valid
        // `Shared` that may be used through `&` concurrently (Layout's contract).
        unsafe { &*(self.base.as_ptr().add(L::SHARED_AT) as *const L::Shared) }
    }

    /// Byte `offset` of the object (0 is the header); `offset` must not
    /// exceed the object's length.
    pub(crate) fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset as u64 <= self.place.header.total_len);
        self.base.as_ptr().wrapping_add(offset)
    }

    /// The header's kind-specific parameter (validated by `L::total_len`).
    pub(crate) fn param(&self) -> u64 {
        self.place.header.param
    }

    /// The validated header (a private copy).
    pub(crate) fn header(&self) -> &Header {
        &self.place.header
    }

    /// The segment the object lives in.
    pub(crate) fn segment(&self) -> &Segment {
        &self.place.segment
    }

    /// The object's offset inside its segment.
    pub(crate) fn offset(&self) -> usize {
        self.place.offset
    }

    /// `mutex "jobs"`, `anonymous queue`, `event at offset 64 of segment "x"`.
    pub(crate) fn describe(&self) -> String {
        self.place.describe()
    }

    /// Adds "cannot {verb} {object}" to an error; builds the text only on error.
    pub(crate) fn context<'s>(&'s self, verb: &'s str) -> impl Fn(Error) -> Error + 's {
        move |e: Error| e.context(format!("cannot {verb} {}", self.describe()))
    }
}

impl<L: Layout> Serialize for Object<L> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.place.token().serialize(s)
    }
}

impl<'de, L: Layout> Deserialize<'de> for Object<L> {
    /// Opens (and validates) the object the token names.
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (segment, offset) = ObjectToken::decode(d)?;
        Object::open_at(&segment, offset).map_err(crate::codec::de_error)
    }
}
