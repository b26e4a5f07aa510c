//! Operations tooling: list, inspect and clean up the ipckit objects in
//! `/dev/shm` — the library side of the `ipckit` command-line tool, for
//! programs that want to clean up at start.
//!
//! ```no_run
//! # fn main() -> ipckit::Result<()> {
//! for obj in ipckit::admin::list(false)? {
//!     println!("{} {} {}", obj.name, obj.kind_name(), obj.status());
//! }
//! let removed = ipckit::admin::clean_stale(false)?;
//! eprintln!("removed {} stale objects", removed.len());
//! # Ok(()) }
//! ```
//!
//! # What is listed
//!
//! Every entry of `/dev/shm`. An entry whose first bytes hold the ipckit
//! magic is an *ipckit object*: its 128-byte header is decoded (kind, size,
//! element type, creator, creation time); a header that fails validation is
//! reported as [`Health::Corrupt`] with the reason. Anything else is
//! [`Health::Foreign`] and listed only when asked for (`all`): files of other
//! programs, Python's `SharedMemory`, and ipckit's own raw [`Segment`]s, which
//! carry no header (their bytes are all the user's) and so cannot be told
//! apart from foreign files.
//!
//! # Staleness and "in use"
//!
//! An object is **stale** when it has a valid ipckit header, its creator is
//! dead — no process has its pid *and* its start time, so a recycled pid is
//! not mistaken for the creator — and no live process maps it or holds a
//! descriptor to it. Users are found by scanning `/proc/*/maps` and
//! `/proc/*/fd/*`; the header records no users, so nothing is added to any
//! hot path. Without privileges the maps and descriptors of other users'
//! processes cannot be read: such processes are invisible, so run the tool
//! as the user that runs the programs (or as root) before removing
//! anything. Objects in other mount or PID namespaces (containers) are not
//! seen either.
//!
//! Removing an object only removes its *name* (`shm_unlink`): a process that
//! has it mapped keeps working on the memory, which the kernel frees when the
//! last mapping goes. There is an unavoidable window between the check and
//! the unlink in which a process may open the object by name.
//!
//! # Reading other processes' memory
//!
//! Objects are never mapped: headers are read with `pread` when listing,
//! and [`inspect`] (and so `ipckit watch`) reads the start of the object —
//! its header, queue state or lock — with `pread` into a private copy and
//! decodes that. So it takes no lock and writes nothing, another process
//! truncating the object cannot kill the tool with SIGBUS, and every value
//! read is validated before use: a corrupt object gives an error or odd
//! numbers, never a panic or undefined behaviour.
//!
//! [`Segment`]: crate::Segment

pub mod text;

use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::layout::header::{
    HEADER_LEN, Header, MAGIC, ObjectKind, STATE_INIT, STATE_OFFSET, STATE_READY,
};
use crate::object;
use crate::platform::{self, ProcessId, ShmEntry, ShmUsers};
use crate::segment::{Segment, name as seg_name};
use crate::sync::raw::{LockSnapshot, RawMutex};

/// The process that created an object, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Creator {
    /// Its pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (0 if it could not be read).
    pub start_time: u64,
    /// Whether a process with this pid *and* start time is running now.
    pub alive: bool,
}

/// What the first bytes of an entry say.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Health {
    /// A valid header, published: the object is ready for use.
    Ready,
    /// A valid header whose creator has not published it yet (it is being
    /// created, or its creator died while creating it).
    Initializing,
    /// The ipckit magic, but a header that fails validation; the reason.
    Corrupt(String),
    /// No ipckit header: another program's file, Python's `SharedMemory`,
    /// a raw ipckit `Segment`, an empty file or not a regular file.
    Foreign,
}

/// One entry of `/dev/shm`, as [`list`] describes it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The name (`/dev/shm/<name>`; the POSIX name is `/<name>`).
    pub name: String,
    /// The file's size in bytes.
    pub size: u64,
    /// The owning user id.
    pub uid: u32,
    /// The permission bits (ipckit creates objects `0600`; anything wider
    /// is shared with other users on purpose or by someone else).
    pub mode: u32,
    /// Whether the entry is a valid, a corrupt, or no ipckit object.
    pub health: Health,
    /// The decoded header ([`Health::Ready`] and [`Health::Initializing`]).
    pub header: Option<Header>,
    /// The creator, from the header.
    pub creator: Option<Creator>,
    /// Live processes that map the object or hold it open (sorted pids).
    pub users: Vec<u32>,
    /// Time since creation, from the header (`None` if unknown or in the future).
    pub age: Option<Duration>,
    dev: u64,
    ino: u64,
}

impl ObjectInfo {
    /// Whether the entry starts with the ipckit magic (valid or corrupt header).
    pub fn is_ipckit(&self) -> bool {
        !matches!(self.health, Health::Foreign)
    }

    /// The object kind, if the header is valid and this build knows the kind.
    pub fn kind(&self) -> Option<ObjectKind> {
        self.header.and_then(|h| h.kind())
    }

    /// The kind as shown to users: `"Queue"`, `"kind 42"` (unknown to this
    /// build), `"?"` (corrupt header) or `"-"` (foreign).
    pub fn kind_name(&self) -> String {
        match (&self.header, &self.health) {
            (Some(h), _) => match h.kind() {
                Some(k) => k.name().to_owned(),
                None => format!("kind {}", h.kind_code),
            },
            (None, Health::Foreign) => "-".to_owned(),
            (None, _) => "?".to_owned(),
        }
    }

    /// The element type name recorded in the header (possibly truncated).
    pub fn type_name(&self) -> Option<String> {
        self.header.map(|h| h.type_name()).filter(|t| !t.is_empty())
    }

    /// Whether some live process maps the object or holds it open.
    pub fn in_use(&self) -> bool {
        !self.users.is_empty()
    }

    /// Stale: a valid ipckit header, a dead creator and no live user.
    /// [`clean_stale`] removes exactly these.
    pub fn is_stale(&self) -> bool {
        self.header.is_some() && self.creator.is_some_and(|c| !c.alive) && self.users.is_empty()
    }

    /// One word for the state: `live` (creator running), `orphaned`
    /// (creator dead, still used), `stale`, `creating`, `corrupt` or `foreign`.
    pub fn status(&self) -> &'static str {
        match &self.health {
            Health::Foreign => "foreign",
            Health::Corrupt(_) => "corrupt",
            _ if self.is_stale() => "stale",
            _ if self.creator.is_some_and(|c| !c.alive) => "orphaned",
            Health::Initializing => "creating",
            _ => "live",
        }
    }

    /// The object as a JSON object (one line).
    pub fn to_json(&self) -> String {
        text::object_json(self)
    }
}

/// Decodes the first bytes of an entry. Pure: no system calls.
fn classify(bytes: &[u8], file_size: u64) -> (Health, Option<Header>) {
    if bytes.len() < 8 || bytes[..8] != MAGIC.to_le_bytes() {
        return (Health::Foreign, None);
    }
    let Ok(b) = <&[u8; HEADER_LEN]>::try_from(bytes) else {
        return (
            Health::Corrupt(format!(
                "truncated header: {} bytes, a header needs {HEADER_LEN}",
                bytes.len()
            )),
            None,
        );
    };
    let header = match Header::decode(b) {
        Ok(h) => h,
        Err(e) => return (Health::Corrupt(e.to_string()), None),
    };
    if header.total_len < HEADER_LEN as u64 || header.total_len > file_size {
        let why = format!(
            "header claims {} bytes but the segment has {file_size}",
            header.total_len
        );
        return (Health::Corrupt(why), None);
    }
    let mut state = [0u8; 4];
    state.copy_from_slice(&b[STATE_OFFSET..STATE_OFFSET + 4]);
    match u32::from_le_bytes(state) {
        STATE_READY => (Health::Ready, Some(header)),
        // 0: the creator resets the state before rewriting a header.
        STATE_INIT | 0 => (Health::Initializing, Some(header)),
        s => (
            Health::Corrupt(format!("invalid state word {s:#010x}")),
            None,
        ),
    }
}

fn age_of(header: &Header, now_nanos: u64) -> Option<Duration> {
    (header.created_unix_nanos != 0 && header.created_unix_nanos <= now_nanos)
        .then(|| Duration::from_nanos(now_nanos - header.created_unix_nanos))
}

fn describe(entry: ShmEntry, bytes: &[u8], users: &ShmUsers, now: u64) -> ObjectInfo {
    let (health, header) = if entry.regular && entry.utf8 {
        classify(bytes, entry.size)
    } else {
        (Health::Foreign, None)
    };
    let creator = header.map(|h| Creator {
        pid: h.creator_pid,
        start_time: h.creator_start_time,
        alive: platform::process_alive(ProcessId {
            pid: h.creator_pid,
            start_time: h.creator_start_time,
        }),
    });
    ObjectInfo {
        users: users.pids.get(&entry.name).cloned().unwrap_or_default(),
        age: header.as_ref().and_then(|h| age_of(h, now)),
        name: entry.name,
        size: entry.size,
        uid: entry.uid,
        mode: entry.mode,
        health,
        header,
        creator,
        dev: entry.dev,
        ino: entry.ino,
    }
}

fn io_ctx(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_owned(), e)
}

fn scan_users() -> Result<ShmUsers> {
    platform::shm_users().map_err(io_ctx("cannot scan /proc for users of /dev/shm"))
}

/// Reads one entry's first bytes; `None` if it vanished meanwhile.
fn read_entry(name: &str) -> Result<Option<(ShmEntry, Vec<u8>)>> {
    let mut buf = vec![0u8; HEADER_LEN];
    match platform::read_shm_start(name, &mut buf) {
        Ok((n, entry)) => {
            buf.truncate(n);
            Ok(Some((entry, buf)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("cannot read {name:?} in /dev/shm"), e)),
    }
}

/// Lists `/dev/shm`: the ipckit objects, and with `all` also every other
/// entry (as [`Health::Foreign`]). Sorted by name.
///
/// Entries that cannot be read (another user's, mode 0600) are listed as
/// foreign when `all` is set and left out otherwise.
pub fn list(all: bool) -> Result<Vec<ObjectInfo>> {
    let entries = platform::shm_entries().map_err(io_ctx("cannot list /dev/shm"))?;
    let mut read = Vec::with_capacity(entries.len());
    for entry in entries {
        let bytes = if entry.regular && entry.utf8 {
            match read_entry(&entry.name) {
                Ok(Some((_, b))) => b,
                Ok(None) => continue,
                Err(_) => Vec::new(),
            }
        } else {
            Vec::new()
        };
        read.push((entry, bytes));
    }
    // Scan for users only now: this process holds none of the files open.
    let users = scan_users()?;
    let now = platform::unix_time_nanos();
    Ok(read
        .into_iter()
        .map(|(entry, bytes)| describe(entry, &bytes, &users, now))
        .filter(|o| all || o.is_ipckit())
        .collect())
}

fn not_found(name: &str) -> Error {
    Error::new(
        ErrorKind::NotFound,
        format!("no object {name:?} in /dev/shm"),
    )
}

/// Describes one entry of `/dev/shm`, as [`list`] would.
pub fn info(name: &str) -> Result<ObjectInfo> {
    let bare = seg_name::validate(name)?;
    let (entry, bytes) = read_entry(bare)?.ok_or_else(|| not_found(bare))?;
    let users = scan_users()?;
    Ok(describe(entry, &bytes, &users, platform::unix_time_nanos()))
}

/// The state of a queue, read without taking its locks (a snapshot that
/// may mix moments of a busy queue).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueInfo {
    /// Ring capacity in bytes.
    pub capacity: u64,
    /// Limit on queued messages.
    pub max_items: u64,
    /// Messages queued.
    pub items: u64,
    /// Bytes of the ring in use (frames with their 8-byte headers and padding).
    pub used_bytes: u64,
    /// Messages put since creation, modulo 2^28.
    pub messages_put: u64,
    /// Messages taken since creation, modulo 2^28.
    pub messages_got: u64,
    /// Whether the queue was closed.
    pub closed: bool,
    /// A producer is in the middle of streaming a message larger than half the ring.
    pub stream_open: bool,
    /// Producers asleep waiting for space. Producers wait for space while
    /// holding the producer lock, so this is 0 or 1; further producers queue
    /// on the lock (see [`LockInfo::waiters`]). A process killed while asleep
    /// stays counted (it only costs spurious wake-ups).
    pub waiting_producers: u32,
    /// Consumers asleep waiting for data (0 or 1, as for producers).
    pub waiting_consumers: u32,
    /// The process keeping the first part of a message it began to read
    /// when its `try_get`/`get_timeout` ran out of time mid-stream; its next
    /// get continues that message, other consumers wait (or, if it died,
    /// skip the rest).
    pub partial_reader: Option<u32>,
    /// Tasks put and not yet marked done ([`ObjectKind::JoinableQueue`] only).
    pub unfinished_tasks: Option<u64>,
}

/// The thread holding a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockOwner {
    /// The owning thread (the kernel's TID, as recorded in the lock).
    pub tid: u32,
    /// Its process, if the thread still exists (and the lock's record of
    /// the holder's process names it).
    pub pid: Option<u32>,
    /// Whether the thread is still running.
    pub alive: bool,
}

/// One robust lock inside an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// Which lock: `"lock"`, `"producer lock"`, `"consumer lock"`.
    pub name: &'static str,
    /// The holder, if the lock is held.
    pub owner: Option<LockOwner>,
    /// The holder recorded died holding the lock, and nobody has locked it
    /// since (the next locker takes it over and is told).
    pub owner_died: bool,
    /// A holder died and the data was not yet marked consistent.
    pub inconsistent: bool,
    /// Threads are registered as sleeping for the lock (a snapshot; a
    /// locker killed asleep stays counted until the next unlock's wake-up
    /// repairs the count).
    pub waiters: bool,
}

/// What [`inspect`] found.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Inspection {
    /// The entry, as [`list`] describes it.
    pub info: ObjectInfo,
    /// The queue's state, for queues and joinable queues.
    pub queue: Option<QueueInfo>,
    /// The object's locks: queues, mutexes, values and arrays.
    pub locks: Vec<LockInfo>,
    /// A `Value`'s value, or an `Array`'s first elements, for the plain
    /// types the tool can print (integers, floats, `bool`, `char`), as
    /// read without taking the lock (a snapshot that may be mid-update).
    pub contents: Option<String>,
    /// Why no details could be read, if so (still being created, a
    /// layout that does not add up, …).
    pub note: Option<String>,
}

impl Inspection {
    /// The inspection as a JSON object (one line).
    pub fn to_json(&self) -> String {
        text::inspection_json(self)
    }
}

fn lock_info(name: &'static str, snap: LockSnapshot) -> LockInfo {
    let owner = snap
        .owner_tid
        .map(|tid| match platform::thread_process(tid) {
            // The thread id may have been recycled: the holder's process tag
            // must name the thread's process.
            Ok(Some(p)) if snap.tag_matches(p) => LockOwner {
                tid,
                pid: Some(p.pid),
                alive: true,
            },
            Ok(_) => LockOwner {
                tid,
                pid: None,
                alive: false,
            },
            // Cannot tell: err on the side of "alive".
            Err(_) => LockOwner {
                tid,
                pid: None,
                alive: true,
            },
        });
    LockInfo {
        name,
        owner,
        owner_died: owner.is_some_and(|o| !o.alive),
        inconsistent: snap.inconsistent,
        waiters: snap.waiters > 0,
    }
}

/// Where the lock of a `Mutex`, `Value` or `Array` lies, from its header;
/// `None` if the header's numbers do not describe a valid layout.
fn lock_offset(header: &Header) -> Option<usize> {
    let align = std::mem::align_of::<RawMutex>();
    let offset = match header.kind()? {
        // A `MutexCell<T>`: the lock first, aligned for the cell (see `sync::mutex`).
        ObjectKind::Mutex | ObjectKind::Value => {
            let t = header.type_align as usize;
            if !t.is_power_of_two() || t > 1 << 20 {
                return None;
            }
            object::payload_offset(align.max(t))
        }
        // The lock, then the elements (see `value::Array`).
        ObjectKind::Array => object::payload_offset(align),
        _ => return None,
    };
    let end = offset.checked_add(std::mem::size_of::<RawMutex>())?;
    (end as u64 <= header.total_len).then_some(offset)
}

/// Most elements of an `Array` that `inspect` prints.
const SHOWN_ELEMENTS: u64 = 16;

/// Where a `Value`'s value or an `Array`'s first elements lie and how many
/// bytes they take, for a plain element type (see [`render_contents`]);
/// `None` otherwise or if the header's numbers do not add up.
fn contents_span(header: &Header, lock_at: usize) -> Option<(usize, usize)> {
    let size = usize::try_from(header.type_size).ok()?;
    let align = usize::try_from(header.type_align).ok()?;
    if !matches!(size, 1 | 2 | 4 | 8 | 16) || !align.is_power_of_two() || align > 16 {
        return None;
    }
    plain_type(&header.type_name())?;
    let count = match header.kind()? {
        ObjectKind::Value => 1,
        ObjectKind::Array => header.param.min(SHOWN_ELEMENTS) as usize,
        _ => return None,
    };
    let at = (lock_at + std::mem::size_of::<RawMutex>()).checked_next_multiple_of(align)?;
    let n = size.checked_mul(count)?;
    ((at + n) as u64 <= header.total_len).then_some((at, n))
}

/// The plain types whose bytes `inspect` can print.
fn plain_type(name: &str) -> Option<&'static str> {
    const PLAIN: [&str; 16] = [
        "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16", "i32", "i64", "i128", "isize",
        "f32", "f64", "bool", "char",
    ];
    PLAIN.iter().copied().find(|p| *p == name)
}

/// One element of a plain type, from its little-endian bytes.
fn render_one(ty: &str, b: &[u8]) -> Option<String> {
    let n = |len: usize| -> Option<u128> {
        let mut buf = [0u8; 16];
        buf.get_mut(..len)?.copy_from_slice(b.get(..len)?);
        Some(u128::from_le_bytes(buf))
    };
    let len = b.len();
    Some(match ty {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => n(len)?.to_string(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => {
            let v = n(len)?;
            let bits = len * 8;
            // Sign-extend from `bits`.
            let shift = 128 - bits;
            (((v << shift) as i128) >> shift).to_string()
        }
        "f32" => f32::from_le_bytes(b.try_into().ok()?).to_string(),
        "f64" => f64::from_le_bytes(b.try_into().ok()?).to_string(),
        "bool" => match b.first()? {
            0 => "false".to_owned(),
            1 => "true".to_owned(),
            other => format!("{other} (not a valid bool)"),
        },
        "char" => {
            let v = u32::from_le_bytes(b.try_into().ok()?);
            char::from_u32(v).map_or_else(
                || format!("{v:#x} (not a valid char)"),
                |c| format!("{c:?}"),
            )
        }
        _ => return None,
    })
}

/// A `Value`'s value or an `Array`'s elements (the first
/// [`SHOWN_ELEMENTS`], then how many more), from their bytes.
fn render_contents(header: &Header, raw: &[u8]) -> Option<String> {
    let ty = plain_type(&header.type_name())?;
    let size = usize::try_from(header.type_size).ok()?;
    let items: Option<Vec<String>> = raw.chunks(size).map(|b| render_one(ty, b)).collect();
    let items = items?;
    match header.kind()? {
        ObjectKind::Value => items.into_iter().next(),
        _ => {
            let more = header.param.saturating_sub(items.len() as u64);
            let mut s = format!("[{}", items.join(", "));
            if more > 0 {
                s.push_str(&format!(", … ({more} more)"));
            }
            s.push(']');
            Some(s)
        }
    }
}

/// Reads the details of a ready object from a private copy of its start,
/// read with `pread`: the object is never mapped, so another process
/// truncating it cannot kill this one with SIGBUS, and nothing read can
/// change while it is decoded.
fn details(name: &str, info: &ObjectInfo, insp: &mut Inspection) -> Result<()> {
    let Some(file_header) = info.header else {
        return Ok(());
    };
    let need = match file_header.kind() {
        Some(ObjectKind::Queue | ObjectKind::JoinableQueue) => crate::queue::SNAPSHOT_LEN,
        Some(ObjectKind::Pool) => {
            let (at, len) = crate::pool::board_span();
            at + len
        }
        Some(ObjectKind::Mutex | ObjectKind::Value | ObjectKind::Array) => {
            match lock_offset(&file_header) {
                Some(off) => match contents_span(&file_header, off) {
                    Some((at, n)) => at + n,
                    None => off + std::mem::size_of::<RawMutex>(),
                },
                None => {
                    insp.note = Some("the header does not describe a valid lock layout".to_owned());
                    return Ok(());
                }
            }
        }
        _ => return Ok(()),
    };
    let mut bytes = vec![0u8; need];
    let (read, entry) = platform::read_shm_start(name, &mut bytes)
        .map_err(|e| Error::io(format!("cannot read {name:?} in /dev/shm"), e))?;
    if read < need {
        insp.note = Some(format!(
            "the object holds {read} bytes, fewer than its header describes"
        ));
        return Ok(());
    }
    // The copy: an anonymous segment, so the decoders below read it as
    // they would read the object (atomics at aligned offsets).
    let seg = Segment::new(need)?;
    seg.write_at(0, &bytes)?;
    if object::state_at_start(&seg) != Some(STATE_READY) {
        insp.note = Some("the object is not initialised".to_owned());
        return Ok(());
    }
    let head: &[u8; HEADER_LEN] = bytes
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Error::new(ErrorKind::Corrupt, "shorter than a header"))?;
    let header = Header::decode(head).map_err(|e| Error::new(ErrorKind::Corrupt, e.to_string()))?;
    if header != file_header || header.total_len > entry.size {
        insp.note = Some("the object changed while being inspected".to_owned());
        return Ok(());
    }
    match header.kind() {
        Some(ObjectKind::Queue | ObjectKind::JoinableQueue) => {
            let s = crate::queue::snapshot(&seg, &header, entry.size)?;
            insp.queue = Some(QueueInfo {
                capacity: s.capacity,
                max_items: s.max_items,
                items: s.items,
                used_bytes: s.used_bytes,
                messages_put: s.produced,
                messages_got: s.consumed,
                closed: s.shared.closed,
                stream_open: s.shared.stream_open,
                waiting_producers: s.shared.sleeping_producers,
                waiting_consumers: s.shared.sleeping_consumers,
                partial_reader: (s.shared.partial_reader != 0).then_some(s.shared.partial_reader),
                unfinished_tasks: s.unfinished,
            });
            insp.locks = vec![
                lock_info("producer lock", s.shared.prod_lock),
                lock_info("consumer lock", s.shared.cons_lock),
            ];
        }
        Some(ObjectKind::Pool) => {
            let (at, _) = crate::pool::board_span();
            match bytes.get(at..).and_then(crate::pool::decode_board) {
                Some((pending, running, completed, failed, cancelled, pids)) => {
                    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                    insp.contents = Some(format!(
                        "pending {pending}, running {running}, completed {completed}, failed \
                         {failed}, cancelled {cancelled}; {} workers: {}",
                        pids.len(),
                        pids.join(" ")
                    ));
                }
                None => insp.note = Some("the pool's counters do not add up".to_owned()),
            }
        }
        _ => match lock_offset(&header) {
            Some(off) => {
                let at = seg.ptr_at(off, std::mem::size_of::<RawMutex>())?;
                // SAFETY: `off` is a multiple of RawMutex's alignment inside
                // the page-aligned mapping (`payload_offset` rounds to it) and
                // the range was bounds-checked by `ptr_at`. Only the lock
                // word and the flag are read, by atomic loads, so any bytes
                // are valid; `seg` keeps the mapping alive for the borrow.
                let snap = unsafe { &*(at as *const RawMutex) }.snapshot();
                insp.locks = vec![lock_info("lock", snap)];
                insp.contents = contents_span(&header, off)
                    .and_then(|(at, n)| bytes.get(at..at + n))
                    .and_then(|raw| render_contents(&header, raw));
            }
            None => insp.note = Some("the header does not describe a valid lock layout".to_owned()),
        },
    }
    Ok(())
}

/// Describes one object in detail: its header, and for a queue its
/// capacity, usage, counters, closed flag, waiters and lock owners; for a
/// `Mutex`, `Value` or `Array` its lock's owner. Takes no lock and writes
/// nothing. A corrupt or foreign entry is described, not an error.
pub fn inspect(name: &str) -> Result<Inspection> {
    let ctx = |e: Error| e.context(format!("cannot inspect {name:?}"));
    // `info` scans for users before this process maps the object.
    let info = self::info(name).map_err(ctx)?;
    let mut insp = Inspection {
        info,
        queue: None,
        locks: Vec::new(),
        contents: None,
        note: None,
    };
    if insp.info.health == Health::Initializing {
        insp.note = Some("the object is not initialised".to_owned());
    } else if insp.info.health == Health::Ready {
        let bare = insp.info.name.clone();
        if let Err(e) = details(&bare, &insp.info.clone(), &mut insp) {
            if e.kind() == ErrorKind::NotFound {
                return Err(ctx(e));
            }
            insp.note = Some(e.to_string());
        }
    }
    Ok(insp)
}

/// A queue's state now: what `ipckit watch` refreshes.
///
/// Errors if `name` is not a queue.
pub fn queue_info(name: &str) -> Result<QueueInfo> {
    let insp = inspect(name)?;
    match insp.queue {
        Some(q) => Ok(q),
        None => Err(Error::new(
            ErrorKind::WrongKind,
            match (&insp.note, insp.info.is_ipckit()) {
                (Some(note), _) => note.clone(),
                (None, true) => format!("it is a {}, not a queue", insp.info.kind_name()),
                (None, false) => "it is not an ipckit object".to_owned(),
            },
        )
        .context(format!("cannot read queue {name:?}"))),
    }
}

/// Messages between two readings of [`QueueInfo::messages_put`] or
/// [`QueueInfo::messages_got`] (the counters wrap at 2^28).
pub fn counter_delta(earlier: u64, later: u64) -> u64 {
    crate::queue::counter_delta(earlier, later)
}

fn unlink(name: &str) -> Result<()> {
    let posix = seg_name::posix_name(name)?;
    platform::shm_unlink(&posix).map_err(|e| Error::io(format!("cannot remove {name:?}"), e))
}

/// Removes the name `name` from `/dev/shm`; returns what it was.
///
/// Without `force`, only an ipckit object (valid or corrupt header) that no
/// live process uses and whose creator is dead is removed; a foreign file,
/// an object in use or an object whose creator still runs is refused with
/// an [`ErrorKind::InvalidArgument`] error saying why. With `force` the name
/// is removed regardless (processes that use it keep their mapping).
pub fn remove(name: &str, force: bool) -> Result<ObjectInfo> {
    let ctx = |e: Error| e.context(format!("cannot remove {name:?}"));
    let info = self::info(name).map_err(ctx)?;
    let refuse = |why: String| {
        Err(ctx(Error::new(
            ErrorKind::InvalidArgument,
            format!("{why}; --force removes it anyway"),
        )))
    };
    if !force {
        if !info.is_ipckit() {
            return refuse("it is not an ipckit object".to_owned());
        }
        if info.in_use() {
            return refuse(format!(
                "it is in use by {}",
                text::pid_list("process", &info.users)
            ));
        }
        if let Some(c) = info.creator.filter(|c| c.alive) {
            return refuse(format!("its creator (pid {}) is still running", c.pid));
        }
    }
    unlink(&info.name).map_err(|e| {
        // The context is already in the message.
        if e.is_not_found() {
            ctx(not_found(name))
        } else {
            e
        }
    })?;
    Ok(info)
}

/// Removes every stale object (see [`ObjectInfo::is_stale`]); with
/// `dry_run`, removes nothing. Returns the stale objects found.
pub fn clean_stale(dry_run: bool) -> Result<Vec<ObjectInfo>> {
    clean_stale_with_prefix("", dry_run)
}

/// [`clean_stale`] restricted to names that start with `prefix`.
pub fn clean_stale_with_prefix(prefix: &str, dry_run: bool) -> Result<Vec<ObjectInfo>> {
    let stale: Vec<ObjectInfo> = list(false)?
        .into_iter()
        .filter(|o| o.name.starts_with(prefix) && o.is_stale())
        .collect();
    if dry_run || stale.is_empty() {
        return Ok(stale);
    }
    // Check again just before unlinking: a process may have opened an
    // object since the listing, or its name may now be a new object.
    let users = scan_users()?;
    let now = platform::unix_time_nanos();
    let mut removed = Vec::new();
    let mut first_error = None;
    for old in stale {
        let Some((entry, bytes)) = read_entry(&old.name)? else {
            continue;
        };
        let fresh = describe(entry, &bytes, &users, now);
        if (fresh.dev, fresh.ino) != (old.dev, old.ino)
            || fresh.header != old.header
            || !fresh.is_stale()
        {
            continue;
        }
        match unlink(&fresh.name) {
            Ok(()) => removed.push(fresh),
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e.context(format!(
            "removed {} stale objects, but not all",
            removed.len()
        ))),
        None => Ok(removed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::TypeFingerprint;

    fn header_bytes(state: u32, total: u64) -> [u8; HEADER_LEN] {
        let mut h = Header::new(ObjectKind::Queue, TypeFingerprint::of::<u64>(), total, 4096);
        h.creator_pid = 1;
        h.creator_start_time = 2;
        h.created_unix_nanos = 1_000_000_000;
        let mut b = h.encode();
        b[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&state.to_le_bytes());
        b
    }

    #[test]
    fn classifies_headers() {
        let b = header_bytes(STATE_READY, 8192);
        let (health, h) = classify(&b, 8192);
        assert_eq!(health, Health::Ready);
        assert_eq!(h.unwrap().kind(), Some(ObjectKind::Queue));
        assert_eq!(classify(&b, 4096).0.clone(), {
            Health::Corrupt("header claims 8192 bytes but the segment has 4096".into())
        });
        assert_eq!(
            classify(&header_bytes(STATE_INIT, 8192), 8192).0,
            Health::Initializing
        );
        assert!(matches!(
            classify(&header_bytes(7, 8192), 8192).0,
            Health::Corrupt(r) if r.contains("state word")
        ));
        let mut bad = b;
        bad[40] ^= 1;
        assert_eq!(
            classify(&bad, 8192).0,
            Health::Corrupt("header checksum mismatch (corrupt header)".into())
        );
        assert!(
            matches!(classify(&b[..64], 8192).0, Health::Corrupt(r) if r.contains("truncated"))
        );
        assert_eq!(classify(b"hello", 5).0, Health::Foreign);
        assert_eq!(classify(&[], 0).0, Health::Foreign);
        assert_eq!(classify(&[0u8; HEADER_LEN], 4096).0, Health::Foreign);
    }

    #[test]
    fn ages_come_from_the_header() {
        let (_, h) = classify(&header_bytes(STATE_READY, 8192), 8192);
        let h = h.unwrap();
        assert_eq!(age_of(&h, 3_000_000_000), Some(Duration::from_secs(2)));
        assert_eq!(age_of(&h, 0), None);
    }

    #[test]
    fn lock_offsets_follow_the_layouts() {
        let mut h = Header::new(ObjectKind::Mutex, TypeFingerprint::of::<u64>(), 256, 0);
        assert_eq!(lock_offset(&h), Some(128));
        h.type_align = 3;
        assert_eq!(lock_offset(&h), None);
        h.type_align = 256;
        h.total_len = 256;
        assert_eq!(
            lock_offset(&h),
            None,
            "the lock would lie beyond the object"
        );
        let q = Header::new(ObjectKind::Queue, TypeFingerprint::of::<u64>(), 1 << 20, 0);
        assert_eq!(lock_offset(&q), None);
    }

    #[test]
    fn inspects_a_live_mutex_and_value_in_this_process() {
        let name = format!("ipckit-unit-admin-{}-m", std::process::id());
        let m = crate::sync::Mutex::create(&name, 5u64).unwrap();
        let guard = m.lock().unwrap();
        let insp = inspect(&name).unwrap();
        assert_eq!(insp.info.kind(), Some(ObjectKind::Mutex));
        assert_eq!(insp.info.status(), "live");
        assert!(insp.info.users.contains(&std::process::id()));
        let lock = insp.locks[0];
        let owner = lock.owner.expect("held");
        assert_eq!(owner.pid, Some(std::process::id()));
        assert!(owner.alive);
        drop(guard);
        let insp = inspect(&name).unwrap();
        assert_eq!(insp.locks[0].owner, None);
        let e = remove(&name, false).unwrap_err();
        assert!(e.to_string().contains("in use by process"), "{e}");
        drop(m);
        assert!(info(&name).unwrap_err().is_not_found());

        let vname = format!("ipckit-unit-admin-{}-v", std::process::id());
        let v = crate::Value::create(&vname, 1u32).unwrap();
        let insp = inspect(&vname).unwrap();
        assert_eq!(insp.info.kind(), Some(ObjectKind::Value));
        assert_eq!(insp.locks.len(), 1);
        assert_eq!(insp.info.type_name().as_deref(), Some("u32"));
        drop(v);
    }

    #[test]
    fn inspects_a_queue_in_this_process() {
        let name = format!("ipckit-unit-admin-{}-q", std::process::id());
        let q = crate::queue::JoinableQueue::<u32>::create(&name, 4096).unwrap();
        q.put(&1).unwrap();
        q.put(&2).unwrap();
        q.get().unwrap();
        let s = queue_info(&name).unwrap();
        assert_eq!(s.capacity, 4096);
        assert_eq!((s.items, s.messages_put, s.messages_got), (1, 2, 1));
        assert_eq!(s.used_bytes, 16);
        assert_eq!(s.unfinished_tasks, Some(2));
        assert!(!s.closed);
        q.close();
        assert!(queue_info(&name).unwrap().closed);
        assert_eq!(counter_delta(5, 7), 2);
        assert_eq!(counter_delta((1 << 28) - 1, 1), 2);
        drop(q);
    }
}
