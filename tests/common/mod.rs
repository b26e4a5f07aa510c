//! Test support: unique names, a watchdog, a check that nothing is left in
//! /dev/shm, and [`spawn`] (daemon children through `ipckit::process`).
//!
//! [`child`] and [`child_command`] remain for the one test that must start
//! its child under a wrapper (strace): a child entry point is an ordinary
//! `#[test]` function that calls [`child`]; in a normal run it returns at
//! once, and when the test binary is re-executed with `IPCKIT_TEST_CHILD`
//! naming it, it runs the body and exits.
#![allow(dead_code)]

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

const CHILD_ENV: &str = "IPCKIT_TEST_CHILD";
const ARG_ENV: &str = "IPCKIT_TEST_ARG";
const PARENT_ENV: &str = "IPCKIT_TEST_PARENT";

/// How long any single child may run before the parent kills it.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// Per-test context: a unique name prefix and a watchdog. On drop it checks
/// that no /dev/shm entry with its prefix remains.
pub struct Ctx {
    prefix: String,
    counter: AtomicU32,
    watchdog: Option<mpsc::Sender<()>>,
}

impl Ctx {
    /// A context for the test `test`, aborting the process after `limit`.
    pub fn with_limit(test: &str, limit: Duration) -> Ctx {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "ipckit-t{}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            test
        );
        let (tx, rx) = mpsc::channel::<()>();
        let name = test.to_owned();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                eprintln!("watchdog: test {name} still running after {limit:?}; aborting");
                std::process::abort();
            }
        });
        Ctx {
            prefix,
            counter: AtomicU32::new(0),
            watchdog: Some(tx),
        }
    }

    /// A context with the default two-minute watchdog.
    pub fn new(test: &str) -> Ctx {
        Ctx::with_limit(test, Duration::from_secs(120))
    }

    /// A unique object name for this test.
    pub fn name(&self, tag: &str) -> String {
        format!(
            "{}-{}-{tag}",
            self.prefix,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The entries in /dev/shm that this test created and that still exist.
    pub fn leftovers(&self) -> Vec<String> {
        shm_entries()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect()
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        drop(self.watchdog.take());
        let left = self.leftovers();
        for name in &left {
            let _ = std::fs::remove_file(format!("/dev/shm/{name}"));
        }
        if !std::thread::panicking() {
            assert!(left.is_empty(), "test left entries in /dev/shm: {left:?}");
        }
    }
}

/// The names in /dev/shm.
pub fn shm_entries() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The names in /dev/shm, minus those named by tests of this test binary
/// (which run concurrently): what an anonymous object would leak into.
pub fn shm_entries_not_ours() -> Vec<String> {
    let ours = format!("ipckit-t{}-", std::process::id());
    shm_entries()
        .into_iter()
        .filter(|n| !n.starts_with(&ours))
        .collect()
}

/// Starts `f(arg)` in a daemon child (it dies if the test process dies).
pub fn spawn<A, R>(f: fn(A) -> R, arg: A) -> ipckit::process::Process<R>
where
    A: Serialize + DeserializeOwned + Send + 'static,
    R: Serialize + DeserializeOwned,
{
    ipckit::process::Process::builder()
        .daemon(true)
        .spawn(f, arg)
        .expect("spawn child")
}

/// Adds to `cmd` the arguments and environment that make the test binary
/// run `entry` with `arg`. `cmd` is the test binary itself, or a wrapper
/// (such as strace) whose next argument is the test binary.
pub fn child_command<A: Serialize>(mut cmd: Command, entry: &str, arg: &A) -> Command {
    let bytes = postcard::to_allocvec(arg).expect("encode child argument");
    cmd.args([entry, "--exact", "--nocapture", "--test-threads=1", "-q"])
        .env(CHILD_ENV, entry)
        .env(ARG_ENV, hex(&bytes))
        .env(PARENT_ENV, "any");
    cmd
}

/// The body of a child entry point: runs `f` with the decoded argument and
/// exits the process, if this process was started for `entry`; otherwise
/// returns at once (in a normal test run).
pub fn child<A: DeserializeOwned>(entry: &str, f: impl FnOnce(A)) {
    if std::env::var(CHILD_ENV).as_deref() != Ok(entry) {
        return;
    }
    // Die with the parent: no orphan outlives a crashed or aborted test run.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // "any": started through a wrapper (strace), whose pid we do not know.
    if let Ok(parent) = std::env::var(PARENT_ENV).unwrap_or_default().parse::<u32>() {
        // SAFETY: getppid has no preconditions.
        if unsafe { libc::getppid() } as u32 != parent {
            std::process::exit(3); // the parent died before prctl took effect
        }
    }
    // A child must never hang a test run either.
    std::thread::spawn(|| {
        std::thread::sleep(CHILD_TIMEOUT);
        eprintln!("child watchdog: exceeded {CHILD_TIMEOUT:?}");
        std::process::abort();
    });
    let arg = std::env::var(ARG_ENV).expect("child argument");
    let bytes = unhex(&arg);
    let a: A = postcard::from_bytes(&bytes).expect("decode child argument");
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(a)));
    let _ = std::io::stderr().flush();
    std::process::exit(if r.is_ok() { 0 } else { 101 });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// An argument that encodes but refuses to decode (13 is unlucky): for
/// tests of what a child reports when its argument does not decode.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone)]
#[serde(try_from = "u32", into = "u32")]
pub struct Picky(pub u32);

impl TryFrom<u32> for Picky {
    type Error = String;
    fn try_from(v: u32) -> Result<Picky, String> {
        if v == 13 {
            Err("13 is unlucky".to_owned())
        } else {
            Ok(Picky(v))
        }
    }
}

impl From<Picky> for u32 {
    fn from(p: Picky) -> u32 {
        p.0
    }
}

/// A tiny executor: polls a future on this thread, parking between wakes.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
