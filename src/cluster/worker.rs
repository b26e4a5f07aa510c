//! The worker's side: any program serves a [`ClusterPool`](super::ClusterPool)'s tasks.

use std::cell::Cell;
use std::collections::HashMap;
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
        // Async-signal-safe: one atomic store. Ordering: a flag polled
        // alone, guarding no other data; SeqCst for plainness.
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
    stopping: AtomicBool,
    completed: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    running: AtomicUsize,
    last_rejected: Mutex<Option<String>>,
    /// Tasks whose result was sent and whose acknowledgement is pending.
    unacked: Arc<AtomicUsize>,
    /// The tasks running now, for the heartbeat.
    in_progress: Arc<Mutex<HashMap<u64, jetstream::Message>>>,
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
        // A JetStream cluster that is electing a leader (a node just lost,
        // the cluster just started) answers nothing for a few seconds: a
        // worker started then retries for up to 30 s instead of failing.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let (consumer, policy) = loop {
            let r = shared.rt.block_on(async {
                ensure(&js, shared.replicas, &b.pool, Policy::default(), false).await
            });
            match r {
                Ok(v) => break v,
                Err(e) if transient(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(250));
                }
                Err(e) => {
                    return Err(nats_error(
                        format!("cannot serve the cluster pool {:?}", b.pool),
                        e,
                    ));
                }
            }
        };
        let inner = Arc::new(Inner {
            shared,
            pool: b.pool.clone(),
            registry: registry.clone(),
            consumer,
            stopping: AtomicBool::new(false),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            last_rejected: Mutex::new(None),
            in_progress: Arc::new(Mutex::new(HashMap::new())),
            unacked: Arc::new(AtomicUsize::new(0)),
        });
        spawn_heartbeat(
            &inner.shared,
            Arc::downgrade(&inner.in_progress),
            policy.ack_wait,
        );
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
        self.halt();
        Ok(self.stats())
    }

    /// Stops the threads, then waits (at most the request timeout) for the
    /// last acknowledgements to reach the server.
    fn halt(&mut self) {
        // Ordering: `stopping` is a flag guarding no data (the threads are
        // joined right after); `unacked` is a count the background acks
        // decrement, read until zero: SeqCst for both, off any hot path.
        self.inner.stopping.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.inner.unacked.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let c = self.inner.shared.client.clone();
        let _ =
            self.inner.shared.rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(5), c.flush()).await
            });
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.halt();
        }
    }
}

/// Whether a JetStream setup error may pass by itself (no leader yet).
fn transient(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    [
        "timed out",
        "no responders",
        "unavailable",
        "leader",
        "not ready",
    ]
    .iter()
    .any(|w| e.contains(w))
}

/// How long one pull request waits for a task: the bound on how long a
/// stop takes to be noticed by an idle thread.
const PULL_WAIT: Duration = Duration::from_millis(500);

/// One pull request for one task at a time, on an inbox this thread keeps
/// subscribed: a thread never holds a task it is not running (a task
/// waiting behind a long one would be redelivered elsewhere after
/// `ack_wait`), and a pull costs one message to the server.
fn serve_loop(w: &Inner) {
    let client = w.shared.client.clone();
    let inbox = client.new_inbox();
    let mut sub = match w.shared.rt.block_on(client.subscribe(inbox.clone())) {
        Ok(s) => s,
        Err(e) => {
            reject(w, format!("cannot subscribe for tasks: {e}"));
            return;
        }
    };
    while !w.stopping.load(Ordering::SeqCst) {
        let c = &w.consumer;
        let m = w.shared.rt.block_on(async {
            let request = consumer::pull::BatchConfig {
                batch: 1,
                expires: Some(PULL_WAIT),
                ..Default::default()
            };
            c.request_batch(request, inbox.clone().into()).await.ok()?;
            // The server answers with the task, or a 408 when the request
            // expires; a lost connection answers nothing (the margin).
            let until = tokio::time::Instant::now() + PULL_WAIT + Duration::from_secs(1);
            loop {
                let m = tokio::time::timeout_at(until, sub.next()).await.ok()??;
                match m.status {
                    None => {
                        return Some(jetstream::Message {
                            message: m,
                            context: w.shared.js.clone(),
                        });
                    }
                    Some(s) if s == async_nats::StatusCode::IDLE_HEARTBEAT => continue,
                    Some(_) => return None,
                }
            }
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
    *lock(&w.last_rejected) = Some(why);
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
    let key = HEARTBEAT_KEY.fetch_add(1, Ordering::Relaxed);
    lock(&w.in_progress).insert(key, m.clone());
    let outcome = run(w, &task, attempt);
    lock(&w.in_progress).remove(&key);
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
    let sent = w.shared.rt.block_on(async move {
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes.into())
            .message_id(msg_id);
        js.send_publish(subject, publish).await
    });
    // The task is acknowledged once the server confirms its result is
    // stored, in the background: this thread takes its next task meanwhile.
    // A result the server did not store sends the task back, to run again.
    w.unacked.fetch_add(1, Ordering::SeqCst);
    let unacked = w.unacked.clone();
    w.shared.rt.spawn(async move {
        let stored = match sent {
            Ok(ack) => ack.await.is_ok(),
            Err(_) => false,
        };
        let kind = if stored {
            AckKind::Ack
        } else {
            AckKind::Nak(None)
        };
        let _ = m.ack_with(kind).await;
        unacked.fetch_sub(1, Ordering::SeqCst);
    });
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

static HEARTBEAT_KEY: AtomicU64 = AtomicU64::new(0);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The worker's one heartbeat task: every third of `ack_wait`, tells the
/// server that each running task is still in progress. Runs until the
/// worker is gone (it holds only a weak reference).
fn spawn_heartbeat(
    shared: &Shared,
    in_progress: std::sync::Weak<Mutex<HashMap<u64, jetstream::Message>>>,
    ack_wait: Duration,
) {
    let every = (ack_wait / 3).max(Duration::from_millis(100));
    shared.rt.spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(map) = in_progress.upgrade() else {
                break;
            };
            let running: Vec<jetstream::Message> = lock(&map).values().cloned().collect();
            drop(map);
            for m in running {
                let _ = m.ack_with(AckKind::Progress).await;
            }
        }
    });
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
