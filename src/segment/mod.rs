//! Named and anonymous shared-memory segments.
//!
//! A [`Segment`] is a mapped region of shared memory. Named segments are POSIX
//! shared memory objects: the segment `"jobs"` is `/dev/shm/jobs`, the very
//! object Python's `multiprocessing.shared_memory.SharedMemory("jobs")`
//! attaches to. Anonymous segments are `memfd`s: they have no name, appear
//! nowhere in `/dev/shm`, and vanish when the last process holding them exits,
//! however it exits.
//!
//! ```
//! use ipckit::Segment;
//! # fn main() -> ipckit::Result<()> {
//! # let name = format!("ipckit-doc-segment-{}", std::process::id());
//! let seg = Segment::create(&name, 4096)?;          // fails if it exists
//! seg.write_at(0, b"hello")?;
//!
//! let other = Segment::open(&name)?;                // e.g. in another process
//! let mut buf = [0u8; 5];
//! other.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//! drop(seg);                                        // the creator unlinks the name
//! assert!(!Segment::exists(&name)?);
//! # Ok(()) }
//! ```

pub(crate) mod name;

use std::ffi::CString;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use memmap2::MmapRaw;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, ErrorKind, Result};
use crate::platform::{self, OpenHow};

pub use name::MAX_NAME_LEN;

/// The permissions new segments get unless the builder says otherwise:
/// read and write for the owning user only.
pub const DEFAULT_MODE: u32 = 0o600;

/// How long an opener waits for a segment that exists but is still empty
/// (its creator has not sized it yet) before giving up.
const SIZE_WAIT: Duration = Duration::from_secs(2);

/// What to do about an existing object with the same name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CreationMode {
    /// Create a new object; fail with [`ErrorKind::AlreadyExists`] if the name is taken.
    #[default]
    CreateExclusive,
    /// Remove any existing object of that name, then create a new one.
    /// Processes that still have the old one open keep using the old memory.
    PurgeAndCreate,
    /// Open the existing object, or create it if there is none.
    OpenOrCreate,
    /// Open an existing object; fail with [`ErrorKind::NotFound`] if there is none.
    OpenExisting,
}

/// A mapped shared-memory segment.
///
/// Cloning is cheap and shares the mapping. The process that created a named
/// segment *owns* its name: when the last clone of the creating handle is
/// dropped, the name is unlinked (processes that have it mapped keep their
/// mapping; the memory is freed when the last one unmaps it). Call
/// [`persist`](Segment::persist) to leave the name in place.
///
/// The memory is exposed as a raw pointer ([`as_ptr`](Segment::as_ptr)) and
/// through bounds-checked copies ([`read_at`](Segment::read_at),
/// [`write_at`](Segment::write_at)), never as a `&[u8]`: another process may
/// change it at any moment. Copies that race with another process's writes
/// may observe a mix of old and new bytes; synchronise with a lock.
///
/// A `Segment` can be sent to another process inside any serde-encoded value:
/// a named segment travels as its name. An anonymous one inside a
/// [`Process`](crate::process::Process) spawn argument travels as its
/// descriptor (passed with SCM_RIGHTS); in any other value (a queue message,
/// say) as a reference to the sender's descriptor, which the receiver opens
/// through `/proc/<pid>/fd/<n>` — so there the sender must keep its handle
/// until the receiver has decoded it. The pid and descriptor number come
/// from the message, so the receiver opens only what is an ipckit anonymous
/// segment of its own user (a sealed memfd of that name); a token naming
/// any other descriptor is refused (`PermissionDenied`) without opening it
/// or, should it be swapped in between, without mapping it.
///
/// # With Python
///
/// A named segment is the object Python's
/// `multiprocessing.shared_memory.SharedMemory(name)` attaches to. Python
/// 3.11 and 3.12 unlink every segment a process *attached* to when that
/// process exits (its resource tracker; fixed by `track=False` in 3.13), so
/// a Rust-owned segment vanishes from `/dev/shm` shortly after the Python
/// side ends — new opens then fail. Unregister it after attaching:
///
/// ```python
/// from multiprocessing import shared_memory, resource_tracker
/// shm = shared_memory.SharedMemory("jobs")       # created by Rust
/// resource_tracker.unregister(shm._name, "shared_memory")
/// ```
#[derive(Clone)]
pub struct Segment {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bare name (no leading '/'), `None` for anonymous segments.
    name: Option<String>,
    posix_name: Option<CString>,
    fd: OwnedFd,
    map: MmapRaw,
    len: usize,
    ino: u64,
    dev: u64,
    owner: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.owner.load(Ordering::Acquire) {
            if let Some(name) = &self.posix_name {
                // Ignore errors: someone may have unlinked it already.
                let _ = platform::shm_unlink(name);
            }
        }
    }
}

impl fmt::Debug for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Segment")
            .field("name", &self.inner.name)
            .field("len", &self.inner.len)
            .field("owner", &self.is_owner())
            .finish()
    }
}

/// Options for creating or opening a named segment. See [`Segment::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SegmentBuilder {
    name: String,
    size: Option<usize>,
    mode: u32,
    creation: CreationMode,
    other_owners: bool,
}

impl SegmentBuilder {
    /// The size in bytes of a segment to be created (required unless only opening).
    pub fn size(mut self, size: usize) -> Self {
        self.size = Some(size);
        self
    }

    /// Permission bits for a created segment (default `0o600`). They are set
    /// exactly, regardless of the process umask.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// What to do if the name exists (default [`CreationMode::CreateExclusive`]).
    pub fn creation_mode(mut self, mode: CreationMode) -> Self {
        self.creation = mode;
        self
    }

    /// Whether an existing segment owned by another user, or writable by
    /// other users (group or others have write permission), may be opened
    /// (default `false`: refused with [`ErrorKind::PermissionDenied`],
    /// naming the owner and the mode).
    ///
    /// Anyone who can write a `/dev/shm` object can forge what is in it, and
    /// a name is first come, first served: another local user may have
    /// created it before you, mode `0666`, to read what you send or feed you
    /// what they like. Allow other owners only for an object you expect
    /// another account to create; then open the objects inside with their
    /// `open_in`.
    pub fn allow_other_owners(mut self, allow: bool) -> Self {
        self.other_owners = allow;
        self
    }

    /// Creates or opens the segment.
    pub fn build(self) -> Result<Segment> {
        let ctx = |verb: &str| format!("cannot {verb} segment {:?}", self.name);
        let posix = name::posix_name(&self.name).map_err(|e| e.context(ctx("open")))?;
        let need_size = || {
            self.size.filter(|&s| s > 0).ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    "a segment to be created needs a size greater than zero",
                )
                .context(ctx("create"))
            })
        };
        if self.mode & !0o777 != 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("mode {:#o} has bits beyond 0o777", self.mode),
            )
            .context(ctx("create")));
        }
        match self.creation {
            CreationMode::CreateExclusive => {
                Segment::create_posix(&self.name, posix, need_size()?, self.mode)
            }
            CreationMode::PurgeAndCreate => {
                let size = need_size()?;
                match platform::shm_unlink(&posix) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(ctx("purge"), e)),
                }
                Segment::create_posix(&self.name, posix, size, self.mode)
            }
            CreationMode::OpenExisting => {
                Segment::open_posix(&self.name, posix, self.size.unwrap_or(0), self.other_owners)
            }
            CreationMode::OpenOrCreate => {
                let size = need_size()?;
                loop {
                    match Segment::create_posix(&self.name, posix.clone(), size, self.mode) {
                        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                        other => return other,
                    }
                    match Segment::open_posix(&self.name, posix.clone(), size, self.other_owners) {
                        // Unlinked between our two attempts: try creating again.
                        Err(e) if e.kind() == ErrorKind::NotFound => continue,
                        other => return other,
                    }
                }
            }
        }
    }
}

impl Segment {
    /// Creates a new named segment of `size` bytes, zero-filled, mode `0o600`.
    /// Fails with [`ErrorKind::AlreadyExists`] if the name is taken.
    pub fn create(name: &str, size: usize) -> Result<Segment> {
        Segment::builder(name).size(size).build()
    }

    /// Opens an existing named segment; its length is the object's size.
    pub fn open(name: &str) -> Result<Segment> {
        Segment::builder(name)
            .creation_mode(CreationMode::OpenExisting)
            .build()
    }

    /// Opens the named segment, creating it with `size` bytes if it does not
    /// exist. An existing segment smaller than `size` is an error.
    pub fn open_or_create(name: &str, size: usize) -> Result<Segment> {
        Segment::builder(name)
            .size(size)
            .creation_mode(CreationMode::OpenOrCreate)
            .build()
    }

    /// A builder for a named segment: size, permissions and creation mode.
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder {
            name: name.to_owned(),
            size: None,
            mode: DEFAULT_MODE,
            creation: CreationMode::default(),
            other_owners: false,
        }
    }

    /// Creates an anonymous segment of `size` bytes (a sealed `memfd`).
    ///
    /// It leaks nothing: it has no name, and the kernel frees it when the last
    /// process holding it exits, SIGKILL included. Pass it to other processes
    /// inside a serde-encoded value.
    pub fn new(size: usize) -> Result<Segment> {
        let ctx = "cannot create anonymous segment";
        if size == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a segment needs a size greater than zero",
            )
            .context(ctx));
        }
        let fd = platform::memfd_create(c"ipckit-anonymous").map_err(|e| Error::io(ctx, e))?;
        platform::ftruncate(&fd, size as u64).map_err(|e| Error::io(ctx, e))?;
        platform::seal_size(&fd).map_err(|e| Error::io(ctx, e))?;
        Segment::map(fd, None, None, size, false).map_err(|e| e.context(ctx))
    }

    /// Removes the name `name`. Processes that have the segment open keep it.
    pub fn unlink(name: &str) -> Result<()> {
        let posix = name::posix_name(name)?;
        platform::shm_unlink(&posix)
            .map_err(|e| Error::io(format!("cannot unlink segment {name:?}"), e))
    }

    /// Whether a segment named `name` exists.
    pub fn exists(name: &str) -> Result<bool> {
        let posix = name::posix_name(name)?;
        match platform::shm_open(&posix, OpenHow::Existing, 0) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(true),
            Err(e) => Err(Error::io(format!("cannot look up segment {name:?}"), e)),
        }
    }

    fn create_posix(display: &str, posix: CString, size: usize, mode: u32) -> Result<Segment> {
        let ctx = || format!("cannot create segment {display:?}");
        let fd = platform::shm_open(&posix, OpenHow::CreateExclusive, mode)
            .map_err(|e| Error::io(ctx(), e))?;
        // From here on the name is ours: remove it again if sizing fails.
        let setup = || -> std::io::Result<()> {
            platform::fchmod(&fd, mode)?;
            platform::ftruncate(&fd, size as u64)
        };
        if let Err(e) = setup() {
            let _ = platform::shm_unlink(&posix);
            return Err(Error::io(ctx(), e));
        }
        let bare = name::validate(display)?.to_owned();
        Segment::map(fd, Some(bare), Some(posix.clone()), size, true).map_err(|e| {
            let _ = platform::shm_unlink(&posix);
            e.context(ctx())
        })
    }

    fn open_posix(
        display: &str,
        posix: CString,
        min_size: usize,
        other_owners: bool,
    ) -> Result<Segment> {
        let ctx = || format!("cannot open segment {display:?}");
        let fd =
            platform::shm_open(&posix, OpenHow::Existing, 0).map_err(|e| Error::io(ctx(), e))?;
        let st = platform::fstat(fd.as_raw_fd()).map_err(|e| Error::io(ctx(), e))?;
        let owner = st.uid;
        let me = platform::geteuid();
        if owner != me && !other_owners {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "it belongs to user {owner} (mode {:04o}), not to this process's user \
                     {me} (another user may have created it to read or forge what is in \
                     it; SegmentBuilder::allow_other_owners opens it anyway)",
                    st.mode & 0o7777
                ),
            )
            .context(ctx()));
        }
        if st.mode & 0o022 != 0 && !other_owners {
            return Err(Error::new(
                ErrorKind::PermissionDenied,
                format!(
                    "it is writable by other users (owner {owner}, mode {:04o}): any of them \
                     may forge what is in it; SegmentBuilder::allow_other_owners opens it anyway",
                    st.mode & 0o7777
                ),
            )
            .context(ctx()));
        }
        // A creator sizes the object right after creating it; wait briefly
        // for that rather than failing on the window in between.
        let deadline = Instant::now() + SIZE_WAIT;
        let size = loop {
            let st = platform::fstat(fd.as_raw_fd()).map_err(|e| Error::io(ctx(), e))?;
            if st.size > 0 || Instant::now() >= deadline {
                break st.size;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if size == 0 {
            return Err(Error::new(
                ErrorKind::Uninitialized,
                "segment is empty (its creator never sized it)",
            )
            .context(ctx()));
        }
        let size = usize::try_from(size).map_err(|_| {
            Error::new(
                ErrorKind::Unsupported,
                "segment is larger than the address space",
            )
            .context(ctx())
        })?;
        if size < min_size {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("segment exists with {size} bytes, fewer than the {min_size} requested"),
            )
            .context(ctx()));
        }
        let bare = name::validate(display)?.to_owned();
        Segment::map(fd, Some(bare), Some(posix), size, false).map_err(|e| e.context(ctx()))
    }

    fn map(
        fd: OwnedFd,
        name: Option<String>,
        posix_name: Option<CString>,
        len: usize,
        owner: bool,
    ) -> Result<Segment> {
        let st =
            platform::fstat(fd.as_raw_fd()).map_err(|e| Error::io("cannot stat segment", e))?;
        let map = platform::map_shared(&fd, len).map_err(|e| Error::io("cannot map segment", e))?;
        Ok(Segment {
            inner: Arc::new(Inner {
                name,
                posix_name,
                fd,
                map,
                len,
                ino: st.ino,
                dev: st.dev,
                owner: AtomicBool::new(owner),
            }),
        })
    }

    /// The name (without a leading `/`), or `None` for an anonymous segment.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Always false: segments have at least one byte.
    pub fn is_empty(&self) -> bool {
        self.inner.len == 0
    }

    /// Whether this is an anonymous (memfd) segment.
    pub fn is_anonymous(&self) -> bool {
        self.inner.name.is_none()
    }

    /// The start of the mapping. Valid for [`len`](Segment::len) bytes while
    /// any clone of this handle lives; other processes may write it at any time.
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.map.as_mut_ptr()
    }

    /// A pointer to `len` bytes at `offset`, bounds-checked.
    pub(crate) fn ptr_at(&self, offset: usize, len: usize) -> Result<*mut u8> {
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => {
                // SAFETY: offset + len <= mapping length, so the pointer stays inside the mapping.
                Ok(unsafe { self.as_ptr().add(offset) })
            }
            _ => Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "bytes {offset}..{} are outside the segment of {} bytes",
                    offset as u128 + len as u128,
                    self.inner.len
                ),
            )),
        }
    }

    /// Copies `buf.len()` bytes starting at `offset` out of the segment.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> Result<()> {
        let src = self.ptr_at(offset, buf.len())?;
        // SAFETY: `src..src+len` is inside the mapping (checked above) and
        // cannot overlap `buf`, which is process-private memory. The bytes may
        // be written concurrently by another process; `u8` has no invalid values.
        unsafe { std::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the segment starting at `offset`.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> Result<()> {
        let dst = self.ptr_at(offset, data.len())?;
        // SAFETY: `dst..dst+len` is inside the writable shared mapping
        // (checked above) and does not overlap the private `data`.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Whether dropping this handle (its last clone) unlinks the name.
    pub fn is_owner(&self) -> bool {
        self.inner.owner.load(Ordering::Acquire)
    }

    /// Keeps the name after this handle is dropped; someone must later call
    /// [`Segment::unlink`]. Returns whether this handle owned the name.
    #[doc(alias = "release_ownership")]
    pub fn persist(&self) -> bool {
        self.inner.owner.swap(false, Ordering::AcqRel)
    }

    /// Makes this handle unlink the name when its last clone is dropped, as if
    /// it had created it. Useful for the last user of a persisted segment.
    pub fn take_ownership(&self) {
        if self.inner.posix_name.is_some() {
            self.inner.owner.store(true, Ordering::Release);
        }
    }

    fn token(&self) -> SegmentToken {
        use std::os::fd::AsFd;
        match &self.inner.name {
            Some(name) => SegmentToken::Named { name: name.clone() },
            // Inside a spawn argument: pass the memfd itself, so the child
            // has it even if this process drops its handle at once.
            None => match crate::handoff::push(self.inner.fd.as_fd()) {
                Some(Ok(index)) => SegmentToken::AnonymousFd {
                    index,
                    len: self.inner.len as u64,
                },
                _ => self.proc_token(),
            },
        }
    }

    fn proc_token(&self) -> SegmentToken {
        match &self.inner.name {
            Some(name) => SegmentToken::Named { name: name.clone() },
            None => SegmentToken::Anonymous {
                pid: platform::getpid(),
                fd: self.inner.fd.as_raw_fd(),
                dev: self.inner.dev,
                ino: self.inner.ino,
                len: self.inner.len as u64,
            },
        }
    }

    fn from_token(token: SegmentToken) -> Result<Segment> {
        match token {
            SegmentToken::Named { name } => Segment::open(&name),
            SegmentToken::AnonymousFd { index, len } => {
                let ctx = "cannot open an anonymous segment passed by descriptor";
                let fd = crate::handoff::take(index).ok_or_else(|| {
                    Error::new(
                        ErrorKind::NotFound,
                        format!("descriptor {index} was not passed with this value"),
                    )
                    .context(ctx)
                })?;
                let st = platform::fstat(fd.as_raw_fd()).map_err(|e| Error::io(ctx, e))?;
                if st.size != len {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!("the descriptor holds {} bytes, not {len}", st.size),
                    )
                    .context(ctx));
                }
                let len = usize::try_from(len).map_err(|_| {
                    Error::new(
                        ErrorKind::Unsupported,
                        "segment larger than the address space",
                    )
                })?;
                Segment::map(fd, None, None, len, false).map_err(|e| e.context(ctx))
            }
            SegmentToken::Anonymous {
                pid,
                fd,
                dev,
                ino,
                len,
            } => {
                let ctx = || format!("cannot open anonymous segment of process {pid}");
                let file = platform::open_proc_fd(pid, fd).map_err(|e| {
                    Error::io(
                        format!("{}: the sending process must keep its handle until the segment is received", ctx()),
                        e,
                    )
                })?;
                let st = platform::fstat(file.as_raw_fd()).map_err(|e| Error::io(ctx(), e))?;
                if st.ino != ino || st.dev != dev || st.size != len {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        "the handle is stale: the sender no longer holds that segment",
                    )
                    .context(ctx()));
                }
                let len = usize::try_from(len).map_err(|_| {
                    Error::new(
                        ErrorKind::Unsupported,
                        "segment larger than the address space",
                    )
                })?;
                Segment::map(file, None, None, len, false).map_err(|e| e.context(ctx()))
            }
        }
    }

    /// Identity of the underlying memory object (device and inode): the
    /// same in every mapping of it.
    pub(crate) fn file_id(&self) -> (u64, u64) {
        (self.inner.dev, self.inner.ino)
    }
}

#[derive(Serialize, Deserialize)]
enum SegmentToken {
    Named {
        name: String,
    },
    /// A memfd passed beside the encoded value (see `handoff`).
    AnonymousFd {
        index: u32,
        len: u64,
    },
    Anonymous {
        pid: u32,
        fd: i32,
        dev: u64,
        ino: u64,
        len: u64,
    },
}

impl Serialize for Segment {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.token().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Segment {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let token = SegmentToken::deserialize(deserializer)?;
        Segment::from_token(token).map_err(crate::codec::de_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(tag: &str) -> String {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        format!(
            "ipckit-unit-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn create_open_unlink() {
        let name = unique("basic");
        let s = Segment::create(&name, 100).unwrap();
        assert_eq!(s.len(), 100);
        assert_eq!(s.name(), Some(name.as_str()));
        assert!(s.is_owner());
        assert_eq!(
            Segment::create(&name, 100).unwrap_err().kind(),
            ErrorKind::AlreadyExists
        );
        let o = Segment::open(&format!("/{name}")).unwrap();
        assert!(!o.is_owner());
        assert_eq!(o.len(), 100);
        s.write_at(95, b"hello").unwrap();
        let mut b = [0; 5];
        o.read_at(95, &mut b).unwrap();
        assert_eq!(&b, b"hello");
        assert_eq!(
            s.write_at(96, b"hello").unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        assert_eq!(
            o.read_at(usize::MAX, &mut b).unwrap_err().kind(),
            ErrorKind::OutOfRange
        );
        drop(s);
        assert!(!Segment::exists(&name).unwrap());
        // The opener's mapping survives the unlink.
        o.read_at(95, &mut b).unwrap();
        assert_eq!(&b, b"hello");
    }

    #[test]
    fn persist_and_take_ownership() {
        let name = unique("persist");
        let s = Segment::create(&name, 10).unwrap();
        assert!(s.persist());
        drop(s);
        assert!(Segment::exists(&name).unwrap());
        let o = Segment::open(&name).unwrap();
        o.take_ownership();
        drop(o);
        assert!(!Segment::exists(&name).unwrap());
    }

    #[test]
    fn open_or_create_and_sizes() {
        let name = unique("ooc");
        let a = Segment::open_or_create(&name, 64).unwrap();
        assert!(a.is_owner());
        let b = Segment::open_or_create(&name, 32).unwrap();
        assert!(!b.is_owner());
        assert_eq!(b.len(), 64);
        let e = Segment::open_or_create(&name, 128).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            Segment::create(&unique("zero"), 0).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn default_mode_is_0600_and_mode_is_exact() {
        let name = unique("mode");
        let s = Segment::create(&name, 10).unwrap();
        let st = platform::fstat(s.inner.fd.as_raw_fd()).unwrap();
        assert_eq!(st.mode & 0o777, 0o600);
        let name2 = unique("mode2");
        let s2 = Segment::builder(&name2)
            .size(10)
            .mode(0o640)
            .build()
            .unwrap();
        let st = platform::fstat(s2.inner.fd.as_raw_fd()).unwrap();
        assert_eq!(st.mode & 0o777, 0o640);
        // Readable by the group is fine to open; writable by it is not,
        // unless asked for.
        assert!(Segment::open(&name2).is_ok());
        let name3 = unique("mode3");
        let _s3 = Segment::builder(&name3)
            .size(10)
            .mode(0o660)
            .build()
            .unwrap();
        let e = Segment::open(&name3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        assert!(e.to_string().contains("mode 0660"), "{e}");
        assert!(
            Segment::builder(&name3)
                .creation_mode(CreationMode::OpenExisting)
                .allow_other_owners(true)
                .build()
                .is_ok()
        );
        let e = Segment::builder(&unique("badmode"))
            .size(1)
            .mode(0o4777)
            .build()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn purge_and_create_replaces() {
        let name = unique("purge");
        let a = Segment::create(&name, 10).unwrap();
        a.write_at(0, &[7]).unwrap();
        let b = Segment::builder(&name)
            .size(20)
            .creation_mode(CreationMode::PurgeAndCreate)
            .build()
            .unwrap();
        assert_eq!(b.len(), 20);
        let mut x = [9u8];
        b.read_at(0, &mut x).unwrap();
        assert_eq!(x, [0]);
        a.persist(); // the name now belongs to `b`
    }

    #[test]
    fn anonymous_round_trips_through_a_token() {
        let s = Segment::new(4096).unwrap();
        assert!(s.is_anonymous());
        assert_eq!(s.name(), None);
        s.write_at(10, b"anon").unwrap();
        let bytes = postcard::to_allocvec(&s).unwrap();
        let t: Segment = postcard::from_bytes(&bytes).unwrap();
        let mut b = [0; 4];
        t.read_at(10, &mut b).unwrap();
        assert_eq!(&b, b"anon");
        assert_eq!(s.file_id(), t.file_id());
    }

    #[test]
    fn missing_names_are_not_found() {
        let e = Segment::open(&unique("missing")).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.to_string().starts_with("cannot open segment"), "{e}");
        assert_eq!(
            Segment::open("a/b").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        assert_eq!(
            Segment::exists("").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
    }
}
