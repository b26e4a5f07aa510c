//! Run a Rust function in a child process: Python's `multiprocessing.Process`.
//!
//! ```standalone_crate
//! use ipckit::process::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init(); // first line of main: in a child, runs the function and exits
//!     let child = Process::spawn(square, 12)?;
//!     assert_eq!(child.join()?, 144);
//!     Ok(())
//! }
//! ```
//!
//! # How it works
//!
//! A child is this same executable, started again (through `/proc/self/exe`,
//! so it is the very file the parent runs even if the path was replaced on
//! disk). The parent sends it, over a private socket, which function to run
//! and the serde-encoded argument; [`init`] in the child's `main` receives
//! them, checks that the executable is the parent's, runs the function and
//! sends back the encoded result — or the panic message and location. The
//! function is a plain `fn(A) -> R` (a closure that captures nothing
//! coerces to one) defined in the executable itself.
//!
//! Arguments may contain ipckit handles — segments, locks, values, queues —
//! named or anonymous: they open the same objects in the child.
//!
//! # Daemons and dropped handles
//!
//! A *daemon* child ([`Builder::daemon`]) is killed by the kernel as soon as
//! its parent process dies, however it dies (SIGKILL included): no orphan
//! outlives its parent. A non-daemon child (the default, as in Python) keeps
//! running if its parent dies.
//!
//! Dropping a [`Process`] handle without joining it *detaches* the child: it
//! keeps running, and ipckit reaps it in the background when it exits, so no
//! zombie is left. Python instead joins non-daemon children when the
//! interpreter exits; in Rust, join them (or call [`active_children`] to see
//! which still run) before `main` returns.
//!
//! # Tests
//!
//! Integration tests have no `main` to put [`init`] in; invoke
//! [`test_support!()`](crate::test_support) once at the root of the test file
//! instead. Doc tests that spawn must be standalone (mark the code block
//! `standalone_crate`, as the one above) and call [`init`] in their own
//! `fn main`.

mod child;
mod registry;

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::platform;
use child::Payload;
use registry::ChildShared;

/// Environment variable naming the child's end of the parent socket.
const FD_ENV: &str = "IPCKIT_PROCESS_FD";
/// In a child started by a test binary: a duplicate of the parent's stdout,
/// restored as the child's own before its function runs (see `spawn`).
const STDOUT_ENV: &str = "IPCKIT_PROCESS_STDOUT";

/// The test that `test_support!()` defines, run in test binaries' children.
#[doc(hidden)]
pub const TEST_ENTRY: &str = "__ipckit_child";

/// Default limit on the size of a child's encoded result: the crate's one
/// message limit, [`crate::codec::DEFAULT_MAX_MESSAGE`].
pub const DEFAULT_MAX_RESULT: usize = crate::codec::DEFAULT_MAX_MESSAGE;

/// This process's name and parent, set once: by `run_child` in a child.
static IDENTITY: OnceLock<(String, Option<ProcessInfo>)> = OnceLock::new();

/// Whether `init()` ran in this process (so it is a normal program, not a test harness).
static INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// A function whose address anchors the offsets sent to children.
#[inline(never)]
fn base_marker() {
    std::hint::black_box(());
}

/// The address of the base marker in this process.
fn base_address() -> usize {
    base_marker as *const () as usize
}

/// The offset of a second known function from the base marker: equal in
/// parent and child exactly when both run the same layout of the same code.
fn identity_offset() -> i64 {
    offset_of(init as *const () as usize)
}

fn offset_of(f: usize) -> i64 {
    (f as i64).wrapping_sub(base_address() as i64)
}

/// A function call that can run in another process of this executable:
/// offsets of a trampoline and of the function from the base marker. Used
/// by process pools to send tasks to long-lived workers.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct RemoteCall {
    trampoline: i64,
    function: i64,
}

pub(crate) use child::Report;

impl RemoteCall {
    /// A call of `f` with one encoded `A`, returning an encoded `R`.
    pub(crate) fn new<A, R>(f: fn(A) -> R) -> RemoteCall
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let t: child::Trampoline = child::trampoline::<A, R>;
        RemoteCall {
            trampoline: offset_of(t as usize),
            function: offset_of(f as usize),
        }
    }

    /// A call of `f` on each element of an encoded `Vec<A>`, returning an
    /// encoded `Vec<R>`.
    pub(crate) fn chunked<A, R>(f: fn(A) -> R) -> RemoteCall
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        let t: child::Trampoline = child::chunk_trampoline::<A, R>;
        RemoteCall {
            trampoline: offset_of(t as usize),
            function: offset_of(f as usize),
        }
    }

    /// Runs the call here, catching a panic. Only in a process of the same
    /// executable as the one that made the call (a pool worker, whose
    /// identity `init()` checked when it started).
    pub(crate) fn run(&self, arg: &[u8]) -> Report {
        let base = base_address();
        let at = |offset: i64| (base as i64).wrapping_add(offset) as usize;
        // SAFETY: `trampoline` was computed by `RemoteCall::new`/`chunked` in
        // a process running this same executable (checked at the worker's
        // start by `run_child`), so the address is that trampoline here.
        // The call arrives through a pool's private, anonymous task queue,
        // written only by that pool (see `spawn_worker`): no other process
        // can put offsets there. A `RemoteCall` from anywhere else must
        // never reach `run`.
        let tramp: child::Trampoline =
            unsafe { std::mem::transmute::<usize, child::Trampoline>(at(self.trampoline)) };
        let function = at(self.function);
        child::IN_POOL_TASK.store(true, Ordering::Relaxed);
        let outcome = std::panic::catch_unwind(|| tramp(function, arg));
        child::IN_POOL_TASK.store(false, Ordering::Relaxed);
        match outcome {
            Ok(Ok(bytes)) => Report::Returned(bytes),
            Ok(Err(e)) => Report::Failed(e),
            Err(_) => {
                let (message, location) =
                    child::take_last_panic().unwrap_or_else(|| ("panicked".to_owned(), None));
                Report::Panicked { message, location }
            }
        }
    }
}

/// Makes this program usable as an ipckit child. Call it first in `main`.
///
/// In a normal run it returns at once. In a process started by
/// [`Process::spawn`] it runs the requested function, reports the result to
/// the parent and exits — it never returns. Call it before anything else:
/// before parsing arguments, starting threads or printing.
pub fn init() {
    INIT_CALLED.store(true, Ordering::Relaxed);
    // Start the membarrier registration now, while the process most
    // likely has one thread and it is quick (see `platform`).
    crate::platform::membarrier_registered();
    child::maybe_run_child();
}

/// Support for integration tests: defines the test through which the test
/// binary's children run. Invoke once at the root of each test file that
/// spawns processes.
///
/// ```no_run
/// ipckit::test_support!();
///
/// fn double(x: i32) -> i32 { x * 2 }
///
/// #[test]
/// fn doubles_in_a_child() {
///     assert_eq!(ipckit::process::Process::spawn(double, 21).unwrap().join().unwrap(), 42);
/// }
/// ```
#[macro_export]
macro_rules! test_support {
    () => {
        #[test]
        fn __ipckit_child() {
            $crate::process::__run_test_child();
        }
    };
}

#[doc(hidden)]
pub fn __run_test_child() {
    child::maybe_run_child();
}

/// A process's pid and name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    pid: u32,
    name: String,
}

impl ProcessInfo {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name: `"MainProcess"` for a program started normally, the name
    /// given at spawn (default `"Process-N"`) for a child.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// This process: its pid and name.
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        pid: std::process::id(),
        name: IDENTITY
            .get()
            .map_or_else(|| "MainProcess".to_owned(), |(n, _)| n.clone()),
    }
}

/// The process that spawned this one, if this is an ipckit child.
pub fn parent_process() -> Option<ProcessInfo> {
    IDENTITY.get().and_then(|(_, p)| p.clone())
}

/// The children spawned by this process that are still running (daemons
/// and detached ones included).
pub fn active_children() -> Vec<ProcessInfo> {
    registry::active_children()
}

/// The number of CPUs this process may run on (respects affinity masks and
/// cgroup quotas), at least 1.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Options for a child process. See [`Process::builder`].
#[must_use]
pub struct Builder {
    name: Option<String>,
    daemon: bool,
    env: Vec<(OsString, Option<OsString>)>,
    env_clear: bool,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    executable: Option<std::path::PathBuf>,
    max_result: usize,
}

impl fmt::Debug for Builder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("daemon", &self.daemon)
            .field("env", &self.env)
            .field("env_clear", &self.env_clear)
            .field("max_result", &self.max_result)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Default options: named `Process-N`, not a daemon, the parent's
    /// environment, stdin from `/dev/null` (as Python does), stdout and
    /// stderr inherited.
    pub fn new() -> Builder {
        Builder {
            name: None,
            daemon: false,
            env: Vec::new(),
            env_clear: false,
            stdin: None,
            stdout: None,
            stderr: None,
            executable: None,
            max_result: DEFAULT_MAX_RESULT,
        }
    }

    /// The child's name (reported by `current_process()` in the child).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// A daemon child is killed as soon as this process dies, however it dies.
    pub fn daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes an environment variable for the child.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> Self {
        self.env.push((key.into(), None));
        self
    }

    /// Starts the child with an empty environment (plus what `env` adds).
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's standard input (default: `/dev/null`).
    pub fn stdin(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stdin = Some(stdio.into());
        self
    }

    /// The child's standard output (default: inherited).
    pub fn stdout(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stdout = Some(stdio.into());
        self
    }

    /// The child's standard error (default: inherited).
    pub fn stderr(mut self, stdio: impl Into<Stdio>) -> Self {
        self.stderr = Some(stdio.into());
        self
    }

    /// Runs the child from this file instead of `/proc/self/exe` (Python's
    /// `set_executable`). It must be the parent's own executable — the same
    /// file, e.g. through another path or a symlink — or the child refuses to
    /// run and `join` reports the mismatch.
    pub fn executable(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.executable = Some(path.into());
        self
    }

    /// The largest encoded result accepted from the child (default 1 GiB);
    /// a larger one fails `join` with [`ErrorKind::LimitExceeded`].
    pub fn max_result_size(mut self, bytes: usize) -> Self {
        self.max_result = bytes;
        self
    }

    /// Starts `f(arg)` in a child process.
    pub fn spawn<A, R>(self, f: fn(A) -> R, arg: A) -> Result<Process<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned,
    {
        static COUNTER: AtomicU64 = AtomicU64::new(1);
        if std::env::var_os(FD_ENV).is_some() {
            // Started as a child, yet running main (init() was never
            // called): report that to the parent and exit, rather than
            // start another copy that would do the same.
            child::report_missing_init();
        }
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("Process-{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let ctx = || format!("cannot spawn process {name:?}");
        let trampoline: child::Trampoline = child::trampoline::<A, R>;
        let exe = platform::exe_identity().map_err(|e| Error::io(ctx(), e))?;
        // Handles that are descriptors (sockets, memfds) push duplicates
        // while the argument is encoded; they travel beside it (SCM_RIGHTS).
        let (arg_bytes, fds) = crate::handoff::collect(|| codec::encode(&arg));
        let payload = Payload {
            protocol: child::PROTOCOL,
            exe,
            identity: identity_offset(),
            trampoline: offset_of(trampoline as usize),
            function: offset_of(f as usize),
            name: name.clone(),
            parent: current_process(),
            fds: fds.len() as u32,
            arg: arg_bytes.map_err(|e| e.context(ctx()))?,
        };
        let payload = codec::encode(&payload).map_err(|e| e.context(ctx()))?;

        let (ours, theirs) = UnixStream::pair().map_err(|e| Error::io(ctx(), e))?;
        let theirs_fd = theirs.as_raw_fd();
        let program = self
            .executable
            .clone()
            .unwrap_or_else(|| "/proc/self/exe".into());
        let mut cmd = Command::new(program);
        if let Some(arg0) = std::env::args_os().next() {
            cmd.arg0(arg0);
        }
        // A test harness: run only the entry `test_support!()` defines. The
        // harness prints its "running 1 test" before that entry runs: its
        // stdout goes to /dev/null, and the child gets the real one back
        // (a duplicate passed in STDOUT_ENV) before running the function.
        let harness_stdout = if !INIT_CALLED.load(Ordering::Relaxed) {
            cmd.args([
                TEST_ENTRY,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ]);
            if self.stdout.is_none() {
                platform::dup(1).ok()
            } else {
                None
            }
        } else {
            None
        };
        if self.env_clear {
            cmd.env_clear();
        }
        for (k, v) in &self.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env(FD_ENV, theirs_fd.to_string());
        cmd.stdin(self.stdin.unwrap_or_else(Stdio::null));
        if let Some(s) = self.stdout {
            cmd.stdout(s);
        }
        let kept_stdout = harness_stdout.as_ref().map(|fd| fd.as_raw_fd());
        if let Some(fd) = kept_stdout {
            cmd.env(STDOUT_ENV, fd.to_string());
            cmd.stdout(Stdio::null());
        }
        if let Some(s) = self.stderr {
            cmd.stderr(s);
        }
        let daemon = self.daemon;
        let parent = std::process::id();
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (fcntl, prctl, getppid, _exit).
        unsafe {
            cmd.pre_exec(move || platform::child_pre_exec(theirs_fd, kept_stdout, daemon, parent));
        }
        let child = if daemon {
            // PR_SET_PDEATHSIG fires when the *thread* that forked dies, so
            // daemons are forked by a thread that lives as long as the process.
            registry::spawn_on_long_lived_thread(cmd)
        } else {
            cmd.spawn()
        }
        .map_err(|e| Error::io(ctx(), e))?;
        drop(theirs);
        drop(harness_stdout);
        let pid = child.id();
        let pidfd = platform::pidfd_open(pid).ok();
        let shared = Arc::new(ChildShared::new(pid, name.clone()));
        registry::register(shared.clone());

        let mut process = Process {
            shared,
            daemon,
            child,
            stream: Some(ours),
            pidfd,
            received: Vec::new(),
            eof: false,
            outcome: None,
            spawn_error: None,
            max_result: self.max_result,
            _result: PhantomData,
        };
        // The child reads its payload first thing, so this only blocks for
        // arguments larger than the socket buffer, until the child has them.
        if let Some(stream) = process.stream.as_mut() {
            let _ = stream.set_write_timeout(Some(Duration::from_secs(60)));
            let sent = codec::write_frame(stream, &payload).and_then(|()| {
                let raw: Vec<_> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
                if raw.is_empty() {
                    return Ok(());
                }
                platform::send_fds(stream.as_raw_fd(), &raw)
                    .map_err(|e| Error::io("cannot pass descriptors to the child", e))
            });
            if let Err(e) = sent {
                process.spawn_error = Some(e);
            }
        }
        // The child has its own copies of any descriptors in `arg` now (in
        // flight with SCM_RIGHTS, or received). Dropping ours lets a pipe end
        // moved into the child report EOF when the child dies.
        drop(arg);
        drop(fds);
        Ok(process)
    }
}

/// How a joined child ended, kept so later calls can report it.
enum Outcome<R> {
    Returned(Option<R>),
    Failed(Error),
}

/// Whether a child still runs, askable from any thread (see
/// `Process::liveness`).
#[derive(Clone)]
pub(crate) struct Liveness(Arc<ChildShared>);

impl Liveness {
    pub(crate) fn is_alive(&self) -> bool {
        self.0.try_reap().is_none()
    }
}

/// A running (or finished) child process, and the way to its result.
///
/// Obtained from [`Process::spawn`] or [`Builder::spawn`].
pub struct Process<R> {
    shared: Arc<ChildShared>,
    daemon: bool,
    child: std::process::Child,
    stream: Option<UnixStream>,
    pidfd: Option<OwnedFd>,
    received: Vec<u8>,
    eof: bool,
    outcome: Option<Outcome<R>>,
    spawn_error: Option<Error>,
    max_result: usize,
    _result: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid())
            .field("name", &self.name())
            .field("daemon", &self.daemon)
            .field("exit_status", &self.exit_status())
            .finish()
    }
}

impl Process<()> {
    /// Options for a child process: name, daemon flag, environment, stdio.
    pub fn builder() -> Builder {
        Builder::new()
    }
}

impl<R: Serialize + DeserializeOwned> Process<R> {
    /// Starts `f(arg)` in a child process with default options.
    ///
    /// `f` must be a function (or a closure that captures nothing) defined in
    /// this executable; `arg` is serde-encoded and may contain ipckit handles.
    pub fn spawn<A>(f: fn(A) -> R, arg: A) -> Result<Process<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
    {
        Builder::new().spawn(f, arg)
    }

    /// Waits for the child to finish and returns what its function returned.
    ///
    /// A panic in the child is an [`ErrorKind::Panicked`] error carrying the
    /// message and location; a child that ended without a result (killed,
    /// aborted, `exit`ed) is an [`ErrorKind::ProcessDied`] error naming its
    /// exit status.
    pub fn join(mut self) -> Result<R> {
        self.join_until(None)
    }

    /// Like [`join`](Self::join), but gives up after `timeout` with a timeout
    /// error, leaving the child running and the handle usable.
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R> {
        self.join_until(deadline_after(timeout))
    }

    /// Like [`join`](Self::join), but gives up at `deadline`.
    pub fn join_deadline(&mut self, deadline: Instant) -> Result<R> {
        self.join_until(Some(deadline))
    }

    /// The result if the child has finished, a would-block error if not.
    pub fn try_join(&mut self) -> Result<R> {
        self.join_until(Some(Instant::now())).map_err(|e| {
            if e.is_timeout() {
                Error::new(
                    ErrorKind::WouldBlock,
                    format!("{} is still running", self.describe()),
                )
            } else {
                e
            }
        })
    }

    fn describe(&self) -> String {
        format!("process {:?} (pid {})", self.name(), self.pid())
    }

    fn join_until(&mut self, deadline: Option<Instant>) -> Result<R> {
        if self.outcome.is_none() {
            self.read_report(deadline)?;
            self.wait_exit(deadline)?;
            let outcome = self.interpret();
            self.outcome = Some(outcome);
        }
        match self.outcome.as_mut() {
            Some(Outcome::Returned(r)) => r.take().ok_or_else(|| {
                Error::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "{} was already joined and its result taken",
                        self.describe()
                    ),
                )
            }),
            Some(Outcome::Failed(e)) => Err(e.clone_error()),
            None => unreachable!("outcome set above"),
        }
    }

    /// Reads from the child's socket until it closes (the child exited).
    fn read_report(&mut self, deadline: Option<Instant>) -> Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let mut chunk = vec![0u8; 64 * 1024];
        while !self.eof {
            let rem = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let ready = match rem {
                None => true,
                Some(rem) => platform::poll_readable(stream.as_raw_fd(), Some(rem))
                    .map_err(|e| Error::io("cannot wait for the child", e))?,
            };
            if !ready {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "timed out waiting for process {:?} (pid {})",
                        self.shared.name, self.shared.pid
                    ),
                ));
            }
            match stream.read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.received.extend_from_slice(&chunk[..n]);
                    if self.received.len() > self.max_result.saturating_add(4096) {
                        // Stop reading: the report is over the limit.
                        let _ = platform::kill(self.shared.pid, libc::SIGKILL);
                        self.eof = true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // ECONNRESET and the like: the child is gone.
                Err(_) => self.eof = true,
            }
        }
        self.stream = None;
        Ok(())
    }

    /// Waits until the child has exited and is reaped.
    fn wait_exit(&mut self, deadline: Option<Instant>) -> Result<()> {
        loop {
            if self.shared.try_reap().is_some() {
                return Ok(());
            }
            let rem = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if rem.is_some_and(|r| r.is_zero()) {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("timed out waiting for {} to exit", self.describe()),
                ));
            }
            match &self.pidfd {
                Some(fd) => {
                    let _ = platform::poll_readable(fd.as_raw_fd(), rem);
                }
                None => {
                    std::thread::sleep(rem.unwrap_or(Duration::MAX).min(Duration::from_millis(1)))
                }
            }
        }
    }

    fn interpret(&mut self) -> Outcome<R> {
        let who = self.describe();
        let status = self.shared.status();
        let died = |what: &str| {
            Error::new(
                ErrorKind::ProcessDied,
                format!(
                    "{who} {what}: {}",
                    status.map_or_else(|| "exit status unknown".to_owned(), describe_status)
                ),
            )
        };
        let frame = {
            let mut r = &self.received[..];
            codec::read_frame(&mut r, self.max_result)
        };
        let report = match frame {
            Ok(Some(bytes)) => match codec::decode::<Report>(&bytes) {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Failed(e.context(format!("{who} sent a garbled report")));
                }
            },
            Ok(None) => {
                let mut e = died("ended without a result");
                if status.is_some_and(|s| s.code() == Some(0)) && self.spawn_error.is_none() {
                    // A clean exit that never reported: most likely the
                    // program never ran the child protocol.
                    e = e.context_suffix(
                        " (if the function did not call exit(), check that ipckit::init() is the \
                         first line of main, or that the test file invokes ipckit::test_support!())",
                    );
                }
                if let Some(spawn_error) = &self.spawn_error {
                    e = e.context_suffix(&format!("; sending its argument failed: {spawn_error}"));
                }
                return Outcome::Failed(e);
            }
            Err(e) if e.kind() == ErrorKind::LimitExceeded => {
                return Outcome::Failed(e.context(format!("{who} returned too large a result")));
            }
            Err(_) => return Outcome::Failed(died("ended in the middle of sending its result")),
        };
        match report {
            Report::Returned(bytes) => match codec::decode::<R>(&bytes) {
                Ok(r) => Outcome::Returned(Some(r)),
                Err(e) => Outcome::Failed(e.context(format!("cannot decode the result of {who}"))),
            },
            Report::Panicked { message, location } => Outcome::Failed(Error::new(
                ErrorKind::Panicked,
                match location {
                    Some(at) => format!("{who} panicked at {at}: {message}"),
                    None => format!("{who} panicked: {message}"),
                },
            )),
            // The child chose the kind (Incompatible for another
            // executable, Codec for an argument that does not decode, …).
            Report::Failed(e) => {
                Outcome::Failed(e.context(format!("{who} could not run its function")))
            }
        }
    }
}

impl<R> Process<R> {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether this child is a daemon.
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// Whether the child is still running.
    pub fn is_alive(&self) -> bool {
        self.shared.try_reap().is_none()
    }

    /// A handle that answers [`is_alive`](Self::is_alive) for this child
    /// from any thread, without the `Process`.
    pub(crate) fn liveness(&self) -> Liveness {
        Liveness(self.shared.clone())
    }

    /// How the child ended (exit code or signal), once it has.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.shared.try_reap()
    }

    /// Asks the child to stop with SIGTERM (Python's `terminate()`). Does
    /// nothing if it already exited.
    pub fn terminate(&self) -> Result<()> {
        self.shared.signal(libc::SIGTERM)
    }

    /// Kills the child with SIGKILL (Python's `kill()`). Does nothing if it
    /// already exited.
    pub fn kill(&self) -> Result<()> {
        self.shared.signal(libc::SIGKILL)
    }

    /// The child's stdin, if it was set to `Stdio::piped()`.
    pub fn stdin(&mut self) -> Option<&mut std::process::ChildStdin> {
        self.child.stdin.as_mut()
    }

    /// The child's stdout, if it was set to `Stdio::piped()`.
    pub fn stdout(&mut self) -> Option<&mut std::process::ChildStdout> {
        self.child.stdout.as_mut()
    }

    /// The child's stderr, if it was set to `Stdio::piped()`.
    pub fn stderr(&mut self) -> Option<&mut std::process::ChildStderr> {
        self.child.stderr.as_mut()
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if self.shared.try_reap().is_none() {
            // Detach: the child keeps running; the reaper collects it.
            registry::detach(self.shared.clone());
        }
    }
}

/// "exit code 3", "killed by signal 9 (SIGKILL)".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        format!("exit code {code}")
    } else if let Some(sig) = status.signal() {
        let name = match sig {
            libc::SIGKILL => " (SIGKILL)",
            libc::SIGTERM => " (SIGTERM)",
            libc::SIGABRT => " (SIGABRT)",
            libc::SIGSEGV => " (SIGSEGV)",
            libc::SIGBUS => " (SIGBUS)",
            libc::SIGINT => " (SIGINT)",
            _ => "",
        };
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        format!("killed by signal {sig}{name}{core}")
    } else {
        format!("wait status {:#x}", status.into_raw())
    }
}
