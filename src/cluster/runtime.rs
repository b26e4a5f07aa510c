//! The async runtime behind the blocking API: a current-thread tokio runtime
//! driven by one background thread. Callers block on futures from their own
//! threads ([`Handle::block_on`](tokio::runtime::Handle::block_on) polls the
//! future on the caller's thread, the background thread drives I/O and
//! timers).

use std::future::Future;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::{Error, Result};

pub(crate) struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    pub(crate) fn start() -> Result<Runtime> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io("cannot build the NATS client's runtime", e))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("ipckit-nats".into())
            .spawn(move || {
                rt.block_on(async move {
                    let _ = stopped.await;
                });
                // Tasks still spawned (subscriptions, pending acks) end here.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(|e| Error::io("cannot start the NATS client's thread", e))?;
        Ok(Runtime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub(crate) fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }

    /// Runs `fut` to completion on the calling thread.
    ///
    /// Must not be called from the runtime's own thread (tokio forbids
    /// blocking there); the cluster types call user code (callbacks, task
    /// functions) only on threads of their own, never on the runtime's.
    pub(crate) fn block_on<F: Future>(&self, fut: F) -> F::Output {
        self.handle.block_on(fut)
    }

    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.handle.spawn(fut);
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            // The last handle may be dropped on the runtime's own thread
            // (a task holding it ends there): it cannot join itself.
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
