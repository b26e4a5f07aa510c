//! The worker's side: any program serves a [`ClusterPool`](super::ClusterPool)'s tasks.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures_util::StreamExt;

use super::connect::{Cluster, Shared};
use super::pool::{Names, Policy, ensure};
use super::registry::Registry;
use super::wire::{self, Outcome, ResultMsg, StartedMsg, TaskMsg};
use super::{check_name, nats_error};
use crate::error::{Error, ErrorKind, Result};

thread_local! {
    static ATTEMPT: Cell<u32> = const { Cell::new(0) };
}

/// Inside a task run by a cluster [`Worker`]: which delivery of the task
/// this is (1 the first time, 2 after a worker running it died or stalled,
/// …). 0 outside a cluster task.
pub fn current_attempt() -> u32 {
    ATTEMPT.with(Cell::get)
}

/// Counts of a worker's tasks since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Tasks that returned a value.
    pub completed: u64,
    /// Tasks that failed: panicked, or could not run (unknown function,
    /// other types, undecodable argument, result over the size limit).
    pub failed: u64,
    /// Messages that were not tasks at all (undecodable envelopes):
    /// acknowledged and dropped, since they name no submitter to answer.
    pub rejected: u64,
    /// Tasks running now.
    pub running: usize,
    /// The last rejected message's error, for the operator.
    pub last_rejected: Option<String>,
}

/// Settings of a [`Worker`]; from [`Worker::builder`].
#[derive(Debug)]
pub struct WorkerBuilder<'a> {
    cluster: &'a Cluster,
    pool: String,
    concurrency: usize,
}

impl WorkerBuilder<'_> {
    /// How many tasks run at once, each on a thread of its own (default:
    /// the number of CPUs).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Starts serving in the background; stop with [`Worker::stop`].
    pub fn start(self, registry: &Registry) -> Result<Worker> {
        Worker::start(self, registry)
    }

    /// Serves until SIGINT or SIGTERM, then stops gracefully (running tasks
    /// finish and are acknowledged; tasks not taken stay for other workers).
    /// This turns any program into a worker.
    pub fn serve(self, registry: &Registry) -> Result<WorkerStats> {
        let w = Worker::start(self, registry)?;
        signals::install();
        while !signals::caught() {
            std::thread::sleep(Duration::from_millis(50));
        }
        w.stop()
    }
}

mod signals {
    //! SIGINT/SIGTERM → a flag `serve` polls.
    use std::sync::atomic::{AtomicBool, Ordering};

    static CAUGHT: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_signal(_: libc::c_int) {
        // Async-signal-safe: one atomic store.
        CAUGHT.store(true, Ordering::SeqCst);
    }

    pub(super) fn install() {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: `on_signal` only stores to an atomic, which is
            // async-signal-safe; the handler stays valid for the program's
            // life (a static function).
            unsafe {
                libc::signal(sig, on_signal as *const () as libc::sighandler_t);
            }
        }
    }

    pub(super) fn caught() -> bool {
        CAUGHT.load(Ordering::SeqCst)
    }
}

struct Inner {
    shared: Arc<Shared>,
    pool: String,
    registry: Registry,
    consumer: consumer::PullConsumer,
    policy: Policy,
    stopping: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    running: AtomicUsize,
    last_rejected: Mutex<Option<String>>,
}

/// A worker serving a [`ClusterPool`](super::ClusterPool)'s tasks with the
/// functions of its [`Registry`].
///
/// Each of its `concurrency` threads takes one task at a time from the
/// pool's work-queue stream, runs it, stores its result, and only then
/// acknowledges it; while a task runs, a heartbeat tells the server every
/// third of `ack_wait` that it is still in progress. A panic is the task's
/// error (message and location), as in a local pool. Bad input from the
/// wire (an undecodable envelope or argument, an unknown function name,
/// other types, a result over the server's size limit) is a per-task error
/// or, for a message naming no submitter, a counted rejection: never a
/// worker crash.
pub struct Worker {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("pool", &self.inner.pool)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// Settings for a worker of the pool `name` on `cluster`.
    pub fn builder<'a>(cluster: &'a Cluster, name: &str) -> WorkerBuilder<'a> {
        WorkerBuilder {
            cluster,
            pool: name.to_owned(),
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    fn start(b: WorkerBuilder<'_>, registry: &Registry) -> Result<Worker> {
        check_name("pool", &b.pool)?;
        registry.check()?;
        crate::pool::thread_pool::install_panic_hook();
        let shared = b.cluster.shared.clone();
        let js = shared.js.clone();
        let (consumer, policy) = shared
            .rt
            .block_on(async { ensure(&js, &b.pool, Policy::default(), false).await })
            .map_err(|e| nats_error(format!("cannot serve the cluster pool {:?}", b.pool), e))?;
        let inner = Arc::new(Inner {
            shared,
            pool: b.pool.clone(),
            registry: registry.clone(),
            consumer,
            policy,
            stopping: AtomicBool::new(false),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            last_rejected: Mutex::new(None),
        });
        let mut threads = Vec::new();
        for i in 0..b.concurrency {
            let w = inner.clone();
            let t = std::thread::Builder::new()
                .name(format!("ipckit-worker-{i}"))
                .spawn(move || serve_loop(&w))
                .map_err(|e| Error::io("cannot start a worker thread", e))?;
            threads.push(t);
        }
        Ok(Worker { inner, threads })
    }

    /// The counts so far.
    pub fn stats(&self) -> WorkerStats {
        let i = &self.inner;
        WorkerStats {
            completed: i.completed.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            rejected: i.rejected.load(Ordering::Relaxed),
            running: i.running.load(Ordering::Relaxed),
            last_rejected: i
                .last_rejected
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Stops gracefully: no new task is taken, running ones finish and are
    /// acknowledged. Returns the final counts.
    pub fn stop(mut self) -> Result<WorkerStats> {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Ok(self.stats())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How long one pull request waits for a task: the bound on how long a
/// stop takes to be noticed by an idle thread.
const PULL_WAIT: Duration = Duration::from_millis(500);

fn serve_loop(w: &Inner) {
    while !w.stopping.load(Ordering::SeqCst) {
        let c = &w.consumer;
        let m = w.shared.rt.block_on(async {
            let mut b = c
                .batch()
                .max_messages(1)
                .expires(PULL_WAIT)
                .messages()
                .await
                .ok()?;
            b.next().await?.ok()
        });
        match m {
            Some(m) => handle(w, m),
            // Nothing to do, or the server is away (the client reconnects):
            // a short pause so an unreachable server is not polled hot.
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn reject(w: &Inner, why: String) {
    w.rejected.fetch_add(1, Ordering::Relaxed);
    *w.last_rejected.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
}

fn handle(w: &Inner, m: jetstream::Message) {
    let attempt = m
        .info()
        .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
        .unwrap_or(1);
    let task = match wire::decode_task(&m.payload) {
        Ok(t) => t,
        Err(e) => {
            // No submitter to answer: acknowledged so it is not redelivered.
            reject(w, e.to_string());
            let _ = w.shared.rt.block_on(m.ack());
            return;
        }
    };
    // Best effort: the submitter learns the task is running.
    if let Ok(b) = crate::codec::encode(&StartedMsg {
        task: task.task,
        attempt,
    }) {
        let c = w.shared.client.clone();
        let subject = Names::started_subject(&w.pool, &task.client);
        let _ = w.shared.rt.block_on(c.publish(subject, b.into()));
    }
    w.running.fetch_add(1, Ordering::Relaxed);
    let (stop_beat, beat) = heartbeat(w, &m);
    let outcome = run(w, &task, attempt);
    drop(stop_beat);
    let _ = w.shared.rt.block_on(beat);
    w.running.fetch_sub(1, Ordering::Relaxed);
    let mut ok = matches!(outcome, Outcome::Value(_));
    let result = ResultMsg {
        version: wire::VERSION,
        task: task.task,
        attempt,
        outcome,
    };
    let mut bytes = match crate::codec::encode(&result) {
        Ok(b) => b,
        Err(e) => {
            ok = false;
            error_result(&task, attempt, ErrorKind::Codec, e.to_string())
        }
    };
    let limit = w.shared.client.server_info().max_payload;
    if bytes.len() > limit {
        ok = false;
        bytes = error_result(
            &task,
            attempt,
            ErrorKind::LimitExceeded,
            format!(
                "the result of {} is {} bytes, over the server's max_payload of {limit} bytes",
                wire::shown(&task.function),
                bytes.len()
            ),
        );
    }
    if ok {
        w.completed.fetch_add(1, Ordering::Relaxed);
    } else {
        w.failed.fetch_add(1, Ordering::Relaxed);
    }
    let js = w.shared.js.clone();
    let subject = Names::results_subject(&w.pool, &task.client);
    let msg_id = format!("{}-{}", task.client, task.task);
    let stored = w.shared.rt.block_on(async move {
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes.into())
            .message_id(msg_id);
        match js.send_publish(subject, publish).await {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        }
    });
    let ack = if stored {
        m.ack_with(AckKind::Ack)
    } else {
        // The result was not stored (the server is away): the task goes
        // back, to run again once it returns.
        m.ack_with(AckKind::Nak(None))
    };
    let _ = w.shared.rt.block_on(ack);
}

fn error_result(task: &TaskMsg, attempt: u32, kind: ErrorKind, message: String) -> Vec<u8> {
    crate::codec::encode(&ResultMsg {
        version: wire::VERSION,
        task: task.task,
        attempt,
        outcome: Outcome::Error {
            kind: kind.as_str().to_owned(),
            message,
        },
    })
    .unwrap_or_default()
}

/// A progress heartbeat every third of `ack_wait` until the sender is dropped.
fn heartbeat(
    w: &Inner,
    m: &jetstream::Message,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let every = (w.policy.ack_wait / 3).max(Duration::from_millis(100));
    let acker = m.clone();
    let beat = w.shared.rt.handle().spawn(async move {
        loop {
            tokio::select! {
                _ = &mut rx => break,
                _ = tokio::time::sleep(every) => {
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
            }
        }
    });
    (tx, beat)
}

fn run(w: &Inner, task: &TaskMsg, attempt: u32) -> Outcome {
    let err = |kind: ErrorKind, message: String| Outcome::Error {
        kind: kind.as_str().to_owned(),
        message,
    };
    let Some(entry) = w.registry.get(&task.function) else {
        return err(
            ErrorKind::NotFound,
            format!(
                "no function named {:?} is registered on this worker of {:?} (it has: {})",
                wire::shown(&task.function),
                w.pool,
                w.registry.names().join(", ")
            ),
        );
    };
    if entry.arg_type != task.arg_type || entry.ret_type != task.ret_type {
        return err(
            ErrorKind::WrongType,
            format!(
                "{:?} is fn({}) -> {} on this worker, but the task was submitted as fn({}) -> {}",
                entry.name,
                entry.arg_type,
                entry.ret_type,
                wire::shown(&task.arg_type),
                wire::shown(&task.ret_type)
            ),
        );
    }
    ATTEMPT.with(|a| a.set(attempt));
    let called =
        crate::pool::thread_pool::call_catching(|| (entry.call)(&task.payload, task.chunk));
    ATTEMPT.with(|a| a.set(0));
    match called {
        Ok(Ok(bytes)) => Outcome::Value(bytes),
        Ok(Err(e)) => err(
            e.kind(),
            format!("the argument of {:?} (task {}): {e}", entry.name, task.task),
        ),
        Err((message, location)) => err(
            ErrorKind::Panicked,
            match location {
                Some(at) => format!(
                    "{:?} (task {}) panicked at {at}: {message}",
                    entry.name, task.task
                ),
                None => format!("{:?} (task {}) panicked: {message}", entry.name, task.task),
            },
        ),
    }
}
