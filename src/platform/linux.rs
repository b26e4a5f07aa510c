//! Linux implementation of the platform layer.

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cvt_r(mut f: impl FnMut() -> libc::c_int) -> io::Result<libc::c_int> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

// ---------------------------------------------------------------------------
// Shared memory objects
// ---------------------------------------------------------------------------

/// How `shm_open` should treat an existing name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpenHow {
    /// `O_CREAT | O_EXCL`: fail if it exists.
    CreateExclusive,
    /// Open an existing object only.
    Existing,
}

/// `shm_open(3)` with `O_RDWR | O_CLOEXEC`. `name` includes the leading `/`.
pub(crate) fn shm_open(name: &CStr, how: OpenHow, mode: u32) -> io::Result<OwnedFd> {
    let flags = libc::O_RDWR
        | libc::O_CLOEXEC
        | match how {
            OpenHow::CreateExclusive => libc::O_CREAT | libc::O_EXCL,
            OpenHow::Existing => 0,
        };
    // SAFETY: `name` is a valid NUL-terminated string; the flags and mode are plain integers.
    let fd = cvt_r(|| unsafe { libc::shm_open(name.as_ptr(), flags, mode as libc::mode_t) })?;
    // SAFETY: `shm_open` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_unlink(3)`.
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string.
    cvt(unsafe { libc::shm_unlink(name.as_ptr()) }).map(drop)
}

/// `memfd_create(2)` with close-on-exec and sealing allowed.
pub(crate) fn memfd_create(name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = cvt(unsafe { libc::memfd_create(name.as_ptr(), flags) })?;
    // SAFETY: `memfd_create` returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Seals a memfd against resizing, so no holder can shrink it under another's
/// mapping (which would turn that holder's accesses into SIGBUS).
pub(crate) fn seal_size(fd: &OwnedFd) -> io::Result<()> {
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS takes an integer argument; `fd` is open.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) }).map(drop)
}

/// `ftruncate(2)`.
pub(crate) fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "size too large"))?;
    // SAFETY: `fd` is open; `len` is non-negative.
    cvt_r(|| unsafe { libc::ftruncate(fd.as_raw_fd(), len) }).map(drop)
}

/// `fchmod(2)`: sets the exact mode, independent of the umask.
pub(crate) fn fchmod(fd: &OwnedFd, mode: u32) -> io::Result<()> {
    // SAFETY: `fd` is open; `mode` is a plain integer.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) }).map(drop)
}

/// What `fstat` tells about a shared memory object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileStat {
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
}

/// `fstat(2)`.
pub(crate) fn fstat(fd: RawFd) -> io::Result<FileStat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `st` points to writable memory of the right size; `fd` is a descriptor.
    cvt(unsafe { libc::fstat(fd, st.as_mut_ptr()) })?;
    // SAFETY: `fstat` succeeded, so it initialised `st`.
    let st = unsafe { st.assume_init() };
    Ok(FileStat {
        size: st.st_size as u64,
        dev: st.st_dev,
        ino: st.st_ino,
        mode: st.st_mode,
        uid: st.st_uid,
    })
}

/// The effective user id of this process.
pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Maps `len` bytes of `fd` shared and read-write.
pub(crate) fn map_shared(fd: &OwnedFd, len: usize) -> io::Result<MmapRaw> {
    MmapOptions::new().len(len).map_raw(fd)
}

/// Opens another process's anonymous segment through `/proc/<pid>/fd/<fd>`.
///
/// This is how an anonymous (memfd) segment reaches another process: the
/// receiver opens the sender's descriptor by path, which gives it a new open
/// file description of the same memory file. `pid` and `fd` come from a
/// message, so they are not trusted: only an ipckit memfd is opened — the
/// link must name a memfd before anything is opened (no device, FIFO,
/// socket or file of whatever process the message names is ever opened
/// read-write), and what was opened must be a regular file sealed against
/// resizing as ipckit seals its segments, owned by this user. Anything else
/// is `PermissionDenied`.
pub(crate) fn open_proc_fd(pid: u32, fd: i32) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    let refuse = |why: &str| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("/proc/{pid}/fd/{fd} {why}"),
        )
    };
    let path = format!("/proc/{pid}/fd/{fd}");
    let target = std::fs::read_link(&path)?;
    if !target
        .as_os_str()
        .as_bytes()
        .starts_with(b"/memfd:ipckit-anonymous")
    {
        return Err(refuse("is not an anonymous segment"));
    }
    // Non-blocking and no controlling terminal, should the descriptor have
    // been swapped for something else between the look and the open.
    let file = File::options()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let fd_now = OwnedFd::from(file);
    let st = fstat(fd_now.as_raw_fd())?;
    if st.mode & libc::S_IFMT != libc::S_IFREG {
        return Err(refuse("is not a regular file"));
    }
    if st.uid != geteuid() {
        return Err(refuse(&format!("belongs to uid {}", st.uid)));
    }
    // SAFETY: F_GET_SEALS takes no argument; `fd_now` is open.
    let seals = unsafe { libc::fcntl(fd_now.as_raw_fd(), libc::F_GET_SEALS) };
    let wanted = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
    if seals < 0 || seals & wanted != wanted {
        return Err(refuse("is not a sealed ipckit segment"));
    }
    Ok(fd_now)
}

// ---------------------------------------------------------------------------
// Futex
// ---------------------------------------------------------------------------

/// Outcome of [`futex_wait`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, value changed before sleeping, or interrupted: re-check the word.
    Retry,
    /// The timeout passed.
    TimedOut,
}

/// Sleeps while `*word == expected`, for at most `timeout` (forever if `None`).
///
/// Uses the shared futex namespace (no `FUTEX_PRIVATE_FLAG`), so waiters and
/// wakers may live in different processes that map the same memory.
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> FutexWait {
    let ts;
    let ts_ptr = match timeout {
        Some(d) => {
            ts = libc::timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            };
            &ts as *const libc::timespec
        }
        None => std::ptr::null(),
    };
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the
    // call; FUTEX_WAIT only reads it and compares it with `expected`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        FutexWait::TimedOut
    } else {
        FutexWait::Retry
    }
}

/// Wakes up to `n` waiters sleeping on `word`; returns how many were woken.
pub(crate) fn futex_wake(word: &AtomicU32, n: u32) -> usize {
    let n = n.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a valid, aligned 32-bit atomic; FUTEX_WAKE does not access it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    r.max(0) as usize
}

// ---------------------------------------------------------------------------
// Threads: identity and liveness (for lock owners)
// ---------------------------------------------------------------------------

/// A value cached per thread and recomputed in a `fork` child: `cell` holds
/// it with the pid it was computed in (no pid is 0, so a cell made as
/// `(_, 0)` has never been filled). The fast path is a few instructions and
/// inlines, the `thread_local!` access included; `compute` runs out of
/// line. (A computation inside a `LocalKey::with` closure kept `with` out
/// of line, reaching the slot through an indirect call: ~28 instructions
/// per ask instead of ~5; see `docs/design-measurements.md`,
/// "Thread-locals through a small inlined fast path".)
#[inline]
pub(crate) fn cached_per_thread<T: Copy>(
    cell: &'static std::thread::LocalKey<std::cell::Cell<(T, u32)>>,
    compute: fn() -> T,
) -> T {
    let pid = getpid();
    let (value, at) = cell.get();
    if at == pid {
        return value;
    }
    fill_per_thread(cell, pid, compute)
}

#[cold]
#[inline(never)]
fn fill_per_thread<T: Copy>(
    cell: &'static std::thread::LocalKey<std::cell::Cell<(T, u32)>>,
    pid: u32,
    compute: fn() -> T,
) -> T {
    let value = compute();
    cell.set((value, pid));
    value
}

/// The calling thread's kernel id (`gettid`), cached per thread. The cache
/// remembers the process it was taken in, so a `fork` child (whose only
/// thread has a new id) computes its own.
#[inline]
pub(crate) fn current_tid() -> u32 {
    thread_local! {
        static TID: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
    }
    cached_per_thread(&TID, || {
        // SAFETY: gettid has no preconditions and cannot fail.
        unsafe { libc::gettid() as u32 }
    })
}

/// Whether no thread with id `tid` exists (`kill(tid, 0)` fails with
/// `ESRCH`; Linux accepts thread ids there). One system call: a cheap
/// first test; a thread that exists may still be a zombie or a recycled id
/// (see [`thread_process`]).
pub(crate) fn thread_gone(tid: u32) -> bool {
    if tid == 0 || tid > i32::MAX as u32 {
        return true;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(tid as libc::pid_t, 0) };
    r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// The process of the running thread `tid`: `Ok(None)` if no such thread
/// runs (gone, or a zombie), `Err` if `/proc` cannot tell.
pub(crate) fn thread_process(tid: u32) -> io::Result<Option<ProcessId>> {
    let st = match thread_status(tid) {
        Ok(st) => st,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if st.state == b'Z' || st.state == b'X' {
        return Ok(None);
    }
    match read_proc_stat(st.tgid) {
        Ok(stat) if stat.state == b'Z' || stat.state == b'X' => Ok(None),
        Ok(stat) => Ok(Some(ProcessId {
            pid: st.tgid,
            start_time: stat.start_time,
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The number of runnable threads on the machine right now (the fourth
/// field of `/proc/loadavg`, "running/total"), the caller included.
pub(crate) fn runnable_threads() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

/// Nanoseconds on `CLOCK_MONOTONIC_COARSE`: the time of the last tick
/// (a few ms of resolution), read from the vDSO in a few ns where
/// `Instant::now()` takes ~23 ns on this project's VM. For caches that
/// expire after milliseconds (the spin policy's busy check), not for
/// deadlines.
pub(crate) fn coarse_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

/// Nanoseconds on `CLOCK_MONOTONIC`: one clock for every process of the
/// machine, so a timestamp one process stores in shared memory means the
/// same to another.
pub(crate) fn monotonic_nanos() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// A process, identified so that a recycled pid is not mistaken for it: the
/// pid plus the process's start time in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

/// What `/proc/<pid>/stat` says about a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    pub state: u8,
    pub num_threads: u64,
    pub start_time: u64,
}

/// Parses the fields ipckit needs from the text of `/proc/<pid>/stat`.
///
/// The command name (field 2) is in parentheses and may itself contain spaces
/// and parentheses, so parsing starts after the *last* `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    // After the command: field 3 is the state, field 20 the number of
    // threads, field 22 the start time.
    let state = fields.next()?.bytes().next()?;
    let num_threads = fields.nth(20 - 4)?.parse().ok()?;
    let start_time = fields.nth(22 - 21)?.parse().ok()?;
    Some(ProcStat {
        state,
        num_threads,
        start_time,
    })
}

fn read_proc_stat(pid: u32) -> io::Result<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// This process's identity, cached: 0 in `CACHED_PID` means "not computed".
/// Reset in a `fork` child by an atfork handler, so a forked child does not
/// report its parent's identity.
static CACHED_PID: AtomicU32 = AtomicU32::new(0);
static CACHED_START: AtomicU64 = AtomicU64::new(0);

extern "C" fn reset_identity_after_fork() {
    // Only atomics: async-signal-safe, as an atfork child handler must be.
    CACHED_PID.store(0, Ordering::Relaxed);
}

/// The calling process's id, without a system call after the first.
#[inline]
pub(crate) fn getpid() -> u32 {
    current_process().pid
}

/// This process's identity (pid and start time). Computed once; operations
/// that record their holder (semaphore permits) make no system call for it.
/// Every lock asks (for its owner word), so the cached answer is inlined and
/// the first computation kept out of line.
#[inline]
pub(crate) fn current_process() -> ProcessId {
    // Ordering: the start time is stored before the pid (Release) and read
    // after it (Acquire), so a non-zero pid comes with its start time.
    let pid = CACHED_PID.load(Ordering::Acquire);
    if pid != 0 {
        return ProcessId {
            pid,
            start_time: CACHED_START.load(Ordering::Relaxed),
        };
    }
    compute_current_process()
}

#[cold]
#[inline(never)]
fn compute_current_process() -> ProcessId {
    static ATFORK: OnceLock<()> = OnceLock::new();
    ATFORK.get_or_init(|| {
        // SAFETY: registers a handler that only stores to an atomic.
        unsafe { libc::pthread_atfork(None, None, Some(reset_identity_after_fork)) };
    });
    let pid = std::process::id();
    let start_time = read_proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
    CACHED_START.store(start_time, Ordering::Relaxed);
    CACHED_PID.store(pid, Ordering::Release);
    ProcessId { pid, start_time }
}

/// Whether the process `id` is still running.
///
/// A zombie (dead, not yet reaped) counts as dead; a pid now used by a
/// different process (different start time) counts as dead. When `/proc` cannot
/// be read, the answer errs on the side of "alive".
pub(crate) fn process_alive(id: ProcessId) -> bool {
    if id.pid == 0 || id.pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 performs only the existence and permission check.
    let r = unsafe { libc::kill(id.pid as libc::pid_t, 0) };
    if r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return false;
    }
    match read_proc_stat(id.pid) {
        Ok(stat) => {
            let zombie = stat.state == b'Z' || stat.state == b'X';
            let same = id.start_time == 0 || stat.start_time == id.start_time;
            !zombie && same
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(_) => true,
    }
}

/// Nanoseconds since the Unix epoch (for "created at" fields).
pub(crate) fn unix_time_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------
// /dev/shm and /proc scanning (for `ipckit::admin`)
// ---------------------------------------------------------------------------

/// Where Linux keeps POSIX shared-memory objects.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// An entry of [`SHM_DIR`], as `lstat` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShmEntry {
    /// File name (lossily converted if it is not UTF-8).
    pub name: String,
    /// Whether the name is valid UTF-8 (otherwise `name` is not its real name).
    pub utf8: bool,
    /// A regular file (only those can be shared-memory objects).
    pub regular: bool,
    pub size: u64,
    pub uid: u32,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
}

fn shm_entry(name: std::ffi::OsString, m: &std::fs::Metadata) -> ShmEntry {
    use std::os::unix::fs::MetadataExt;
    ShmEntry {
        utf8: name.to_str().is_some(),
        name: name.to_string_lossy().into_owned(),
        regular: m.file_type().is_file(),
        size: m.len(),
        uid: m.uid(),
        mode: m.mode() & 0o7777,
        dev: m.dev(),
        ino: m.ino(),
    }
}

/// Every entry of [`SHM_DIR`], sorted by name. Entries that vanish while
/// being listed are left out.
pub(crate) fn shm_entries() -> io::Result<Vec<ShmEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(SHM_DIR)? {
        let Ok(entry) = entry else { continue };
        // `DirEntry::metadata` does not follow symbolic links.
        let Ok(m) = entry.metadata() else { continue };
        out.push(shm_entry(entry.file_name(), &m));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads the first `buf.len()` bytes (or fewer, if the file is shorter) of
/// `/dev/shm/<name>` by `pread`, without mapping it, and describes the file.
/// `name` must be a bare, validated name. Symbolic links are not followed
/// and a FIFO does not block the open; nothing is read from a file that is
/// not regular.
pub(crate) fn read_shm_start(name: &str, buf: &mut [u8]) -> io::Result<(usize, ShmEntry)> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(format!("{SHM_DIR}/{name}"))?;
    let m = file.metadata()?;
    let entry = shm_entry(name.into(), &m);
    if !entry.regular {
        return Ok((0, entry));
    }
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, entry))
}

/// Which processes map or hold open which `/dev/shm` names.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShmUsers {
    /// Name → pids (sorted, without duplicates).
    pub pids: std::collections::HashMap<String, Vec<u32>>,
    /// Processes whose maps or descriptors could not be read (another
    /// user's, without privileges): they may use objects unseen.
    pub unreadable: usize,
}

/// The `/dev/shm` name a line of `/proc/<pid>/maps` maps, if any. A mapping
/// of an object whose name was since unlinked ends in ` (deleted)` and does
/// not use the name any more.
pub(crate) fn maps_line_shm_name(line: &str) -> Option<&str> {
    // address perms offset dev inode [path]; the path may contain spaces.
    let mut rest = line;
    for _ in 0..5 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ')?;
        rest = &rest[end..];
    }
    shm_path_name(rest.trim_start_matches(' '))
}

/// The `/dev/shm` name of a path such as a `/proc/<pid>/fd/<n>` link's
/// target, if it names a live (not unlinked) object there.
pub(crate) fn shm_path_name(path: &str) -> Option<&str> {
    let name = path.strip_prefix("/dev/shm/")?;
    if name.is_empty() || name.contains('/') || name.ends_with(" (deleted)") {
        return None;
    }
    Some(name)
}

/// Scans `/proc/*/maps` and `/proc/*/fd/*` for users of `/dev/shm` objects.
/// Processes that exit during the scan are skipped; processes whose files
/// cannot be read are counted in [`ShmUsers::unreadable`].
pub(crate) fn shm_users() -> io::Result<ShmUsers> {
    let mut users = ShmUsers::default();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let mut names: Vec<String> = Vec::new();
        let mut denied = false;
        match std::fs::read(format!("/proc/{pid}/maps")) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                names.extend(
                    text.lines()
                        .filter_map(maps_line_shm_name)
                        .map(str::to_owned),
                );
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
        match std::fs::read_dir(format!("/proc/{pid}/fd")) {
            Ok(fds) => {
                for fd in fds.flatten() {
                    if let Ok(target) = std::fs::read_link(fd.path()) {
                        if let Some(name) = target.to_str().and_then(shm_path_name) {
                            names.push(name.to_owned());
                        }
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = true,
            Err(_) => {}
        }
        users.unreadable += usize::from(denied);
        for name in names {
            let pids = users.pids.entry(name).or_default();
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    for pids in users.pids.values_mut() {
        pids.sort_unstable();
    }
    Ok(users)
}

/// What `/proc/<tid>/status` says about a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ThreadStatus {
    /// The thread's process (thread group id).
    pub tgid: u32,
    /// The state letter (`R`, `S`, `Z`, …).
    pub state: u8,
}

/// Parses the `State:` and `Tgid:` lines of a `/proc/<tid>/status` text.
pub(crate) fn parse_thread_status(text: &str) -> Option<ThreadStatus> {
    let mut tgid = None;
    let mut state = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("State:") {
            state = v.trim_start().bytes().next();
        } else if let Some(v) = line.strip_prefix("Tgid:") {
            tgid = v.trim().parse().ok();
        }
    }
    Some(ThreadStatus {
        tgid: tgid?,
        state: state?,
    })
}

/// The status of thread `tid` (of any process: `/proc/<tid>` exists for
/// every thread, though only leaders are listed). `NotFound` if none.
pub(crate) fn thread_status(tid: u32) -> io::Result<ThreadStatus> {
    if tid == 0 || tid > i32::MAX as u32 {
        return Err(io::Error::from(io::ErrorKind::NotFound));
    }
    let text = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    parse_thread_status(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc status"))
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// `waitpid(pid, WNOHANG or 0)`: the raw wait status once the child has
/// exited, `None` if it is still running (only with `nohang`).
pub(crate) fn waitpid(pid: u32, nohang: bool) -> io::Result<Option<i32>> {
    let mut status = 0;
    let flags = if nohang { libc::WNOHANG } else { 0 };
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is one of our children.
        let r = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, flags) };
        match r {
            -1 => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            0 => return Ok(None),
            _ => return Ok(Some(status)),
        }
    }
}

/// `kill(2)`.
pub(crate) fn kill(pid: u32, signal: i32) -> io::Result<()> {
    // SAFETY: plain kill(2); callers only signal children they have not reaped.
    cvt(unsafe { libc::kill(pid as libc::pid_t, signal) }).map(drop)
}

/// `pidfd_open(2)` (Linux 5.3+): a descriptor that polls readable when the
/// process exits.
pub(crate) fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits until `fd` is readable or `timeout` passes; `Ok(true)` if readable.
pub(crate) fn poll_readable(fd: RawFd, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = match timeout {
        None => -1,
        // Round up so a 0.5 ms wait does not become a busy poll.
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = cvt_r(|| unsafe { libc::poll(&mut pfd, 1, ms) })?;
    Ok(r > 0)
}

/// `poll(2)` on several descriptors; fills in `revents`.
pub(crate) fn poll_many(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ms = match timeout {
        None => -1,
        Some(d) => d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int,
    };
    // SAFETY: `fds` is a valid array of pollfd of the given length.
    let r = cvt_r(|| unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) })?;
    Ok(r as usize)
}

/// Sets or clears close-on-exec on `fd`.
pub(crate) fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD/F_SETFD on a descriptor number; no memory is passed.
    unsafe {
        let flags = cvt(libc::fcntl(fd, libc::F_GETFD))?;
        let flags = if on {
            flags | libc::FD_CLOEXEC
        } else {
            flags & !libc::FD_CLOEXEC
        };
        cvt(libc::fcntl(fd, libc::F_SETFD, flags)).map(drop)
    }
}

/// Runs in a freshly forked child, before `exec`: keeps `fd` across exec,
/// and for a daemon asks for SIGKILL when the parent dies. Only
/// async-signal-safe calls.
pub(crate) fn child_pre_exec(
    fd: RawFd,
    also_keep: Option<RawFd>,
    daemon: bool,
    parent: u32,
) -> io::Result<()> {
    set_cloexec(fd, false)?;
    if let Some(k) = also_keep {
        set_cloexec(k, false)?;
    }
    if daemon {
        // SAFETY: prctl with integer arguments.
        cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) })?;
        // The parent may have died before prctl: then we must not run.
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(1) };
        }
    }
    Ok(())
}

/// Device and inode of this process's executable.
pub(crate) fn exe_identity() -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/self/exe")?;
    Ok((m.dev(), m.ino()))
}

// ---------------------------------------------------------------------------
// membarrier
// ---------------------------------------------------------------------------

const MEMBARRIER_CMD_QUERY: libc::c_int = 0;
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

fn membarrier(cmd: libc::c_int) -> io::Result<libc::c_long> {
    // SAFETY: membarrier(2) takes a command and flags; no memory is passed.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Whether this process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`;
/// the first call starts the registration. A registered process may skip
/// the store-load fence on a hot path whose rare slow path calls
/// [`membarrier_global`] instead (an asymmetric Dekker, as userspace RCU does).
///
/// Registering is quick in a process with one thread, but in one with
/// several the kernel waits for an RCU grace period (measured here: ~20 ms,
/// in every test child and pool worker). So a single-threaded process
/// registers at once, and any other in a helper thread: until it is done
/// the answer is `false` and callers keep fencing, which is always correct.
///
/// `IPCKIT_MEMBARRIER=off` in the environment makes it `false` (and
/// [`membarrier_global`] a no-op), as on a kernel without membarrier: the
/// switch that tests the fenced fallback.
#[inline]
pub(crate) fn membarrier_registered() -> bool {
    // The answer of every commit after the first: one load, inlined.
    // Ordering: see `MEMBARRIER`.
    match MEMBARRIER.load(Ordering::Acquire) {
        MB_YES => true,
        MB_PENDING | MB_NO => false,
        _ => membarrier_register(),
    }
}

/// Whether this process is registered for membarrier: one of the `MB_`
/// states. Ordering: `MB_YES` is stored (Release) after the registration
/// returned and read with Acquire, so a caller that sees it commits
/// unfenced only after the kernel registered the process.
static MEMBARRIER: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(MB_UNASKED);
const MB_UNASKED: u8 = 0;
const MB_PENDING: u8 = 1;
const MB_YES: u8 = 2;
const MB_NO: u8 = 3;

/// The first ask of [`membarrier_registered`]: registers (or starts a
/// thread that does), and answers for now.
#[cold]
fn membarrier_register() -> bool {
    fn register() -> bool {
        let ok = membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED).is_ok();
        MEMBARRIER.store(if ok { MB_YES } else { MB_NO }, Ordering::Release);
        ok
    }
    if MEMBARRIER
        .compare_exchange(MB_UNASKED, MB_PENDING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return MEMBARRIER.load(Ordering::Acquire) == MB_YES;
    }
    let needed = (MEMBARRIER_CMD_GLOBAL_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)
        as libc::c_long;
    if membarrier_disabled() || membarrier(MEMBARRIER_CMD_QUERY).unwrap_or(0) & needed != needed {
        MEMBARRIER.store(MB_NO, Ordering::Release);
        return false;
    }
    if own_thread_count().is_ok_and(|n| n == 1) {
        return register();
    }
    let spawned = std::thread::Builder::new()
        .name("ipckit-membarrier".into())
        .spawn(|| {
            register();
        });
    if spawned.is_err() {
        return register();
    }
    false
}

/// How many threads this process has.
fn own_thread_count() -> io::Result<u64> {
    read_proc_stat(std::process::id()).map(|s| s.num_threads)
}

/// Makes every running thread of every registered process execute a full
/// memory barrier before returning. `false` if unavailable.
pub(crate) fn membarrier_global() -> bool {
    !membarrier_disabled() && membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED).is_ok()
}

/// Whether `IPCKIT_MEMBARRIER=off` asks to behave as if membarrier did not
/// exist (read once per process).
fn membarrier_disabled() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os("IPCKIT_MEMBARRIER").is_some_and(|v| v == "off"))
}

// ---------------------------------------------------------------------------
// Passing descriptors and randomness
// ---------------------------------------------------------------------------

/// Most descriptors sent in one message.
const FDS_PER_MESSAGE: usize = 250;

/// Sends `fds` over a unix socket (SCM_RIGHTS), each batch attached to one
/// byte of data.
pub(crate) fn send_fds(sock: RawFd, fds: &[RawFd]) -> io::Result<()> {
    for chunk in fds.chunks(FDS_PER_MESSAGE) {
        let byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        let bytes = std::mem::size_of_val(chunk);
        // SAFETY: CMSG_SPACE is a pure size computation.
        let space = unsafe { libc::CMSG_SPACE(bytes as u32) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: a zeroed msghdr is valid; every pointer set below points to
        // live buffers of the given lengths; CMSG_FIRSTHDR/CMSG_DATA address
        // inside `control`, which has room for one header and `bytes` bytes.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(
                chunk.as_ptr() as *const u8,
                libc::CMSG_DATA(cmsg),
                bytes,
            );
            cvt_r(|| libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) as libc::c_int)?;
        }
    }
    Ok(())
}

/// Receives exactly `n` descriptors sent by [`send_fds`] (close-on-exec).
pub(crate) fn recv_fds(sock: RawFd, n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let want = (n - out.len()).min(FDS_PER_MESSAGE);
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr() as *mut libc::c_void,
            iov_len: 1,
        };
        // SAFETY: a pure size computation.
        let space =
            unsafe { libc::CMSG_SPACE((want * std::mem::size_of::<RawFd>()) as u32) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: as in `send_fds`; the kernel writes at most `space`
        // control bytes, and we only read headers it reports as present.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
            msg.msg_controllen = space as _;
            let r = cvt_r(|| libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) as libc::c_int)?;
            if r == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed before sending descriptors",
                ));
            }
            let mut got = 0;
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                    let count = len / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        let fd = std::ptr::read_unaligned((data as *const RawFd).add(i));
                        out.push(OwnedFd::from_raw_fd(fd));
                        got += 1;
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
            if msg.msg_flags & libc::MSG_CTRUNC != 0 || got == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "descriptors missing or truncated",
                ));
            }
        }
    }
    Ok(out)
}

/// Fills `buf` with random bytes from the kernel (getrandom(2)).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes at most `len - filled` bytes into `buf[filled..]`.
        let r = unsafe {
            libc::getrandom(
                buf[filled..].as_mut_ptr() as *mut libc::c_void,
                buf.len() - filled,
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(())
}

/// Duplicates a descriptor (close-on-exec).
pub(crate) fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor number returns a new descriptor.
    let new = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn counts_own_threads() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        // This thread and `t` at least.
        assert!(own_thread_count().unwrap() >= 2);
        tx.send(()).unwrap();
        t.join().unwrap().unwrap();
    }

    #[test]
    fn parses_proc_stat_with_odd_command_names() {
        let text = "1234 (a (weird) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 98765 1000 10";
        let s = parse_proc_stat(text).unwrap();
        assert_eq!(s.state, b'S');
        assert_eq!(s.num_threads, 1);
        assert_eq!(s.start_time, 98765);
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn finds_shm_names_in_maps_lines_and_links() {
        let line = "7f0000000000-7f0000001000 rw-s 00000000 00:1a 1234                       /dev/shm/jobs";
        assert_eq!(maps_line_shm_name(line), Some("jobs"));
        let spaced = "7f00-7f01 rw-s 00000000 00:1a 1234 /dev/shm/my jobs";
        assert_eq!(maps_line_shm_name(spaced), Some("my jobs"));
        let deleted = "7f00-7f01 rw-s 00000000 00:1a 1234 /dev/shm/jobs (deleted)";
        assert_eq!(maps_line_shm_name(deleted), None);
        let anon = "7f00-7f01 rw-p 00000000 00:00 0 ";
        assert_eq!(maps_line_shm_name(anon), None);
        let memfd = "7f00-7f01 rw-s 00000000 00:01 99 /memfd:ipckit-anonymous (deleted)";
        assert_eq!(maps_line_shm_name(memfd), None);
        assert_eq!(maps_line_shm_name("garbage"), None);
        assert_eq!(maps_line_shm_name(""), None);
        assert_eq!(shm_path_name("/dev/shm/x"), Some("x"));
        assert_eq!(shm_path_name("/dev/shm/"), None);
        assert_eq!(shm_path_name("/dev/shm/a/b"), None);
        assert_eq!(shm_path_name("/tmp/x"), None);
    }

    #[test]
    fn parses_thread_status() {
        let text =
            "Name:\tx\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\nPid:\t4243\n";
        assert_eq!(
            parse_thread_status(text),
            Some(ThreadStatus {
                tgid: 4242,
                state: b'S'
            })
        );
        assert_eq!(parse_thread_status("Name:\tx\n"), None);
        let me = thread_status(std::process::id()).unwrap();
        assert_eq!(me.tgid, std::process::id());
        assert_eq!(
            thread_status(0).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn current_process_is_alive_and_stable() {
        let me = current_process();
        assert_eq!(me.pid, std::process::id());
        assert!(me.start_time > 0);
        assert!(process_alive(me));
        assert_eq!(me, current_process());
        let recycled = ProcessId {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!process_alive(recycled));
    }

    #[test]
    fn futex_wait_times_out_and_skips_on_mismatch() {
        let w = AtomicU32::new(5);
        let t = Instant::now();
        assert_eq!(
            futex_wait(&w, 5, Some(Duration::from_millis(20))),
            FutexWait::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
        assert_eq!(futex_wait(&w, 6, None), FutexWait::Retry);
        assert_eq!(futex_wake(&w, 1), 0);
    }
}
