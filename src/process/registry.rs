//! Bookkeeping for children: their shared state, the list behind
//! `active_children()`, the background reaper of detached children, and the
//! long-lived thread that forks daemons.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use super::ProcessInfo;
use crate::error::{Error, Result};
use crate::platform;

/// What the parent knows about one child; shared by its `Process` handle,
/// the registry and (once detached) the reaper.
pub(crate) struct ChildShared {
    pub pid: u32,
    pub name: String,
    /// `Some` once reaped. Reaping and signalling both happen under this
    /// lock, so a signal can never reach a recycled pid.
    status: Mutex<Option<ExitStatus>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChildShared {
    pub fn new(pid: u32, name: String) -> ChildShared {
        ChildShared {
            pid,
            name,
            status: Mutex::new(None),
        }
    }

    /// Reaps the child if it has exited; its status once it has.
    pub fn try_reap(&self) -> Option<ExitStatus> {
        let mut status = lock(&self.status);
        if status.is_none() {
            match platform::waitpid(self.pid, true) {
                Ok(Some(raw)) => *status = Some(ExitStatus::from_raw(raw)),
                Ok(None) => {}
                // ECHILD: reaped elsewhere (the program called wait()
                // itself); we cannot know how it ended.
                Err(_) => *status = Some(ExitStatus::from_raw(0x7f00)),
            }
        }
        *status
    }

    /// The status, if already reaped (no system call).
    pub fn status(&self) -> Option<ExitStatus> {
        *lock(&self.status)
    }

    /// Sends `signal` unless the child was already reaped.
    pub fn signal(&self, signal: i32) -> Result<()> {
        let status = lock(&self.status);
        if status.is_some() {
            return Ok(());
        }
        match platform::kill(self.pid, signal) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            Err(e) => Err(Error::io(
                format!("cannot signal process {:?} (pid {})", self.name, self.pid),
                e,
            )),
        }
    }

    fn info(&self) -> ProcessInfo {
        ProcessInfo {
            pid: self.pid,
            name: self.name.clone(),
        }
    }
}

static CHILDREN: Mutex<Vec<Arc<ChildShared>>> = Mutex::new(Vec::new());

pub(crate) fn register(child: Arc<ChildShared>) {
    let mut children = lock(&CHILDREN);
    children.retain(|c| c.status().is_none());
    children.push(child);
}

pub(crate) fn active_children() -> Vec<ProcessInfo> {
    let mut children = lock(&CHILDREN);
    children.retain(|c| c.try_reap().is_none());
    children.iter().map(|c| c.info()).collect()
}

type Detached = Arc<ChildShared>;

/// Detached children and whether a reaper thread is running for them.
static DETACHED: Mutex<(Vec<Detached>, bool)> = Mutex::new((Vec::new(), false));

/// Hands a child whose handle was dropped to the background reaper, which
/// polls it every 20 ms and exits when nothing is left to reap.
pub(crate) fn detach(child: Arc<ChildShared>) {
    let mut detached = lock(&DETACHED);
    detached.0.push(child);
    if detached.1 {
        return;
    }
    detached.1 = true;
    let started = std::thread::Builder::new()
        .name("ipckit-reaper".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let mut detached = lock(&DETACHED);
                detached.0.retain(|c| c.try_reap().is_none());
                if detached.0.is_empty() {
                    detached.1 = false;
                    return;
                }
            }
        });
    if started.is_err() {
        // No thread: the children are reaped by the next detach or never;
        // a zombie is the worst outcome.
        detached.1 = false;
    }
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);

/// Spawns `cmd` from a thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` is tied to the thread that forked, not its process:
/// a daemon forked by a short-lived thread would be killed when that thread
/// ends. Forking from this thread ties daemons to the process's life.
pub(crate) fn spawn_on_long_lived_thread(cmd: Command) -> std::io::Result<std::process::Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("ipckit-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the ipckit spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(sender)
        .send((cmd, reply_tx))
        .map_err(|_| std::io::Error::other("the ipckit spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| std::io::Error::other("the ipckit spawner thread is gone"))?
}
