//! The child side: what `init()` does in a process started by `spawn`.

use std::io::Write;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::{FD_ENV, IDENTITY, ProcessInfo, STDOUT_ENV};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::platform;

/// Layout version of [`Payload`] and [`Report`].
pub(crate) const PROTOCOL: u32 = 3;

/// What the parent sends its child: which function to run, and its argument.
#[derive(Serialize, Deserialize)]
pub(crate) struct Payload {
    pub protocol: u32,
    /// Device and inode of the parent's executable.
    pub exe: (u64, u64),
    /// Offsets of known functions from the base marker, to check that both
    /// processes lay the executable out alike.
    pub identity: i64,
    /// Offset of the monomorphised trampoline `run::<A, R>`.
    pub trampoline: i64,
    /// Offset of the user's `fn(A) -> R`.
    pub function: i64,
    pub name: String,
    pub parent: ProcessInfo,
    /// Descriptors sent after the payload (SCM_RIGHTS), for handles in `arg`.
    pub fds: u32,
    #[serde(with = "serde_bytes")]
    pub arg: Vec<u8>,
}

/// What the child sends back.
#[derive(Serialize, Deserialize, Debug)]
pub(crate) enum Report {
    /// The encoded return value.
    Returned(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The function panicked.
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// The child could not run the function (bad payload, wrong executable,
    /// an argument or result that does not decode or encode). The error
    /// travels as its kind and text, so the parent sees the kind the child
    /// chose, never one guessed from the text.
    Failed(Error),
}

/// The signature every trampoline has.
pub(crate) type Trampoline = fn(usize, &[u8]) -> Result<Vec<u8>>;

/// Decodes the argument, calls the function at `function`, encodes its result.
pub(crate) fn trampoline<A, R>(function: usize, arg: &[u8]) -> Result<Vec<u8>>
where
    A: serde::de::DeserializeOwned,
    R: Serialize,
{
    // SAFETY: `function` is the address of an `fn(A) -> R` in this very
    // executable: the parent computed its offset from the same base marker
    // in the same file (checked by `run_child` before calling us), and
    // `trampoline::<A, R>` is only ever paired with an `fn(A) -> R`.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(function) };
    let a: A = codec::decode(arg).map_err(|e| e.context("cannot decode the argument"))?;
    let r = f(a);
    codec::encode(&r).map_err(|e| e.context("cannot encode the result"))
}

/// Set while a pool worker runs a task: the task's panic travels back to the
/// pool as an error (like an exception in Python's pool workers), so the
/// default hook's message on stderr would only be noise.
pub(crate) static IN_POOL_TASK: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The panic of the child's main function, captured by the hook.
static PANIC: Mutex<Option<(String, Option<String>)>> = Mutex::new(None);

/// Decodes a `Vec<A>`, calls the function at `function` on each element,
/// encodes the `Vec<R>` (a chunk of a pool's `map`).
pub(crate) fn chunk_trampoline<A, R>(function: usize, arg: &[u8]) -> Result<Vec<u8>>
where
    A: serde::de::DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `trampoline`: `chunk_trampoline::<A, R>` is only ever
    // paired with an `fn(A) -> R` of this executable.
    let f: fn(A) -> R = unsafe { std::mem::transmute::<usize, fn(A) -> R>(function) };
    let args: Vec<A> = codec::decode(arg).map_err(|e| e.context("cannot decode the arguments"))?;
    let results: Vec<R> = args.into_iter().map(f).collect();
    codec::encode(&results).map_err(|e| e.context("cannot encode the results"))
}

/// The last panic of this child's main thread, taken (for pool workers,
/// which go on after a task panics).
pub(crate) fn take_last_panic() -> Option<(String, Option<String>)> {
    PANIC.lock().unwrap_or_else(|e| e.into_inner()).take()
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let p = info.payload();
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

fn send(stream: &mut UnixStream, report: &Report) -> Result<()> {
    let bytes = codec::encode(report)?;
    codec::write_frame(stream, &bytes)
}

fn fail(stream: &mut UnixStream, error: Error) -> ! {
    eprintln!("ipckit child {}: {error}", std::process::id());
    let _ = send(stream, &Report::Failed(error));
    std::process::exit(2);
}

/// In a child of a test binary, the harness ran with stdout on /dev/null
/// (its "running 1 test" chatter, once per child, is noise); the function
/// gets the parent's stdout back.
fn restore_harness_stdout() {
    let Some(fd) = std::env::var_os(STDOUT_ENV)
        .and_then(|v| v.to_str().and_then(|s| s.parse::<RawFd>().ok()))
        .filter(|fd| *fd > 2)
    else {
        return;
    };
    // SAFETY: single-threaded still (the function has not run), as
    // `maybe_run_child` is.
    unsafe { std::env::remove_var(STDOUT_ENV) };
    let _ = std::io::stdout().flush();
    // SAFETY: the parent passed `fd` (a duplicate of its stdout, kept open
    // across exec) for this; after dup2 it is closed and never used again.
    unsafe {
        if libc::dup2(fd, 1) >= 0 {
            libc::close(fd);
        }
    }
}

/// Runs the function the parent asked for and exits. Never returns.
pub(crate) fn run_child(fd: RawFd) -> ! {
    // SAFETY: the parent passed this descriptor (its socket end, kept open
    // across exec for us) in FD_ENV; nothing else in this process owns it.
    let mut stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Our own children must not inherit it.
    let _ = platform::set_cloexec(fd, true);
    let payload: Payload = match codec::read_frame(&mut stream, codec::MAX_FRAME)
        .and_then(|f| f.ok_or_else(|| Error::new(ErrorKind::Closed, "no payload")))
        .and_then(|bytes| codec::decode(&bytes))
    {
        Ok(p) => p,
        Err(e) => fail(
            &mut stream,
            e.context("cannot read the payload from the parent"),
        ),
    };
    if payload.protocol != PROTOCOL {
        fail(
            &mut stream,
            Error::new(
                ErrorKind::Incompatible,
                format!(
                    "parent speaks protocol {}, this executable {PROTOCOL}",
                    payload.protocol
                ),
            ),
        );
    }
    match platform::exe_identity() {
        Ok(exe) if exe == payload.exe => {}
        Ok(_) => fail(
            &mut stream,
            Error::new(
                ErrorKind::Incompatible,
                format!(
                    "this child runs another executable than its parent (process {}); \
                     ipckit children must run the parent's own executable",
                    payload.parent.pid
                ),
            ),
        ),
        Err(e) => fail(&mut stream, Error::io("cannot identify this executable", e)),
    }
    if payload.identity != super::identity_offset() {
        fail(
            &mut stream,
            Error::new(
                ErrorKind::Incompatible,
                "the executable's layout differs from the parent's (another build?)",
            ),
        );
    }
    let _ = IDENTITY.set((payload.name.clone(), Some(payload.parent.clone())));
    restore_harness_stdout();

    // Capture the main function's panic (message and location). With
    // panic=abort nothing runs after the hook, so the hook reports it itself.
    let main_thread = std::thread::current().id();
    let report_fd = fd;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let on_main = std::thread::current().id() == main_thread;
        if on_main {
            let message = panic_message(info);
            let location = info.location().map(|l| l.to_string());
            if cfg!(panic = "abort") {
                // SAFETY: the fd stays open for the process's life; this
                // temporary stream is forgotten, not closed.
                let mut s =
                    std::mem::ManuallyDrop::new(unsafe { UnixStream::from_raw_fd(report_fd) });
                let _ = send(
                    &mut s,
                    &Report::Panicked {
                        message: message.clone(),
                        location: location.clone(),
                    },
                );
            }
            *PANIC.lock().unwrap_or_else(|e| e.into_inner()) = Some((message, location));
        }
        // Relaxed: only the main thread stores the flag, and only the main
        // thread's own panics are silenced.
        if on_main && IN_POOL_TASK.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        if on_main {
            // The function's panic goes to the parent as its result; say
            // so here in one line (with the backtrace if one was asked
            // for), so that an expected panic does not read as a crash.
            let name = IDENTITY.get().map_or("?", |(n, _)| n.as_str());
            let at = info
                .location()
                .map_or_else(String::new, |l| format!(" at {l}"));
            eprintln!(
                "ipckit child {name:?} (pid {}) panicked{at}: {}; its parent's join gets it as a \
                 Panicked error",
                std::process::id(),
                panic_message(info)
            );
            let bt = std::backtrace::Backtrace::capture();
            if bt.status() == std::backtrace::BacktraceStatus::Captured {
                eprintln!("{bt}");
            }
        } else {
            previous(info);
        }
    }));

    let fds = if payload.fds > 0 {
        match platform::recv_fds(fd, payload.fds as usize) {
            Ok(fds) => fds,
            Err(e) => fail(
                &mut stream,
                Error::io("cannot receive descriptors from the parent", e),
            ),
        }
    } else {
        Vec::new()
    };

    let base = super::base_address();
    let at = |offset: i64| (base as i64).wrapping_add(offset) as usize;
    // SAFETY: the parent computed `trampoline` as the offset of a
    // `trampoline::<A, R>` instance from `base_marker` in the same executable
    // (checked above by device/inode and by the identity offset), so this
    // address is that instance here.
    let tramp: Trampoline =
        unsafe { std::mem::transmute::<usize, Trampoline>(at(payload.trampoline)) };
    let function = at(payload.function);
    let arg = payload.arg;
    let outcome =
        std::panic::catch_unwind(move || crate::handoff::provide(fds, || tramp(function, &arg)));
    let (report, code) = match outcome {
        Ok(Ok(bytes)) => (Report::Returned(bytes), 0),
        Ok(Err(e)) => (Report::Failed(e), 2),
        Err(_) => {
            let (message, location) = PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| ("panicked".to_owned(), None));
            (Report::Panicked { message, location }, 101)
        }
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    if send(&mut stream, &report).is_err() {
        // The parent is gone or stopped listening: nothing to report to.
        std::process::exit(3);
    }
    std::process::exit(code);
}

/// This process was started as an ipckit child, but its `main` never
/// called `ipckit::init()`, so it ran the program again instead of the
/// function it was started for — and has now reached a spawn (which would
/// start the same again: a storm). Tells the parent why, through the
/// channel the function's result would have taken, and exits.
pub(crate) fn report_missing_init() -> ! {
    let error = Error::new(
        ErrorKind::Unsupported,
        "the child process ran the program's main again instead of its function: the program \
         never calls ipckit::init(), which must be the first line of main (in tests: \
         ipckit::test_support!() at the root of the test file)",
    );
    let fd = std::env::var_os(FD_ENV)
        .and_then(|v| v.to_str().and_then(|s| s.parse::<RawFd>().ok()))
        .filter(|fd| *fd >= 0);
    match fd {
        // SAFETY: the parent passed this descriptor (its socket end, kept
        // open across exec) in FD_ENV, and nothing in this process took it:
        // `init()`, which would have, never ran.
        Some(fd) => fail(&mut unsafe { UnixStream::from_raw_fd(fd) }, error),
        None => {
            eprintln!("ipckit child {}: {error}", std::process::id());
            std::process::exit(2);
        }
    }
}

/// Reads `FD_ENV` and, if set, runs the child. Removes the variable so that
/// this process's own subprocesses do not mistake themselves for children.
pub(crate) fn maybe_run_child() {
    let Some(value) = std::env::var_os(FD_ENV) else {
        return;
    };
    // SAFETY: `init()` is documented to be the first call in `main`, before
    // the program starts threads, so nothing reads the environment concurrently.
    unsafe { std::env::remove_var(FD_ENV) };
    let fd = value.to_str().and_then(|s| s.parse::<RawFd>().ok());
    match fd {
        Some(fd) if fd >= 0 => run_child(fd),
        _ => {
            eprintln!("ipckit: {FD_ENV} is set to {value:?}, which is not a descriptor");
            std::process::exit(2);
        }
    }
}
