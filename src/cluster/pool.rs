//! The submitter's side: an [`Executor`] whose tasks run on [`Worker`](super::Worker)s.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use super::connect::{Cluster, Shared};
use super::registry::{Entry, Registry};
use super::wire::{self, Outcome, TaskMsg};
use super::{check_name, nats_error};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::task::{CancelHook, Task, TaskCounters};
use crate::pool::{Executor, PoolStats, TaskHandle, TaskState, TaskValue};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The JetStream names of pool `name`.
pub(crate) struct Names {
    pub(crate) tasks_stream: String,
    pub(crate) tasks_subject: String,
    pub(crate) results_stream: String,
    pub(crate) consumer: String,
}

impl Names {
    pub(crate) fn of(pool: &str) -> Names {
        Names {
            tasks_stream: format!("IPCKIT_{pool}_TASKS"),
            tasks_subject: format!("ipckit.{pool}.tasks"),
            results_stream: format!("IPCKIT_{pool}_RESULTS"),
            consumer: "workers".to_owned(),
        }
    }
    pub(crate) fn results_subject(pool: &str, client: &str) -> String {
        format!("ipckit.{pool}.results.{client}")
    }
    pub(crate) fn started_subject(pool: &str, client: &str) -> String {
        format!("ipckit.{pool}.started.{client}")
    }
}

/// Redelivery policy of a pool's task consumer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    pub(crate) ack_wait: Duration,
    pub(crate) max_deliver: i64,
    pub(crate) result_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            ack_wait: Duration::from_secs(30),
            max_deliver: 3,
            result_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Makes the pool's streams and consumer if missing. With `set_policy`, an
/// existing consumer gets `policy` (the submitter's settings rule);
/// otherwise an existing one is kept. Returns the consumer's policy.
pub(crate) async fn ensure(
    js: &jetstream::Context,
    replicas: usize,
    pool: &str,
    policy: Policy,
    set_policy: bool,
) -> std::result::Result<(consumer::PullConsumer, Policy), String> {
    let n = Names::of(pool);
    let tasks = js
        .get_or_create_stream(stream::Config {
            name: n.tasks_stream.clone(),
            subjects: vec![n.tasks_subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("the task stream {}: {e}", n.tasks_stream))?;
    js.get_or_create_stream(stream::Config {
        name: n.results_stream.clone(),
        subjects: vec![format!("ipckit.{pool}.results.*")],
        // Limits, read by ordered consumers (no acknowledgements: the
        // fastest delivery). Each submitter purges the results it received
        // (`results_loop`), so the stream holds only results not yet
        // received; those of a submitter that crashed expire after
        // `result_ttl`.
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        max_age: policy.result_ttl,
        duplicate_window: Duration::from_secs(120).min(policy.result_ttl),
        ..Default::default()
    })
    .await
    .map_err(|e| format!("the result stream {}: {e}", n.results_stream))?;
    let config = consumer::pull::Config {
        durable_name: Some(n.consumer.clone()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: policy.ack_wait,
        max_deliver: policy.max_deliver,
        max_ack_pending: -1,
        ..Default::default()
    };
    let existing = tasks
        .get_consumer::<consumer::pull::Config>(&n.consumer)
        .await
        .ok();
    let same = |c: &consumer::PullConsumer| {
        let cfg = &c.cached_info().config;
        cfg.ack_wait == policy.ack_wait && cfg.max_deliver == policy.max_deliver
    };
    let mut c = match existing {
        Some(c) if !set_policy || same(&c) => c,
        Some(_) => {
            // Creating an existing durable consumer updates its settings
            // (ack_wait and max_deliver may change).
            tasks
                .create_consumer(config)
                .await
                .map_err(|e| format!("updating the consumer: {e}"))?;
            tasks
                .get_consumer::<consumer::pull::Config>(&n.consumer)
                .await
                .map_err(|e| format!("the consumer: {e}"))?
        }
        None => tasks
            .get_or_create_consumer(&n.consumer, config)
            .await
            .map_err(|e| format!("the consumer: {e}"))?,
    };
    let info = c.info().await.map_err(|e| format!("the consumer: {e}"))?;
    let got = Policy {
        ack_wait: info.config.ack_wait,
        max_deliver: info.config.max_deliver,
        result_ttl: policy.result_ttl,
    };
    Ok((c, got))
}

/// A submitted task, with its result type erased.
trait Slot: Send + Sync {
    fn state(&self) -> TaskState;
    fn start(&self) -> bool;
    fn cancel(&self) -> bool;
    /// Completes the task with `outcome` here, unless it has done-callbacks:
    /// then returns the completion for the collector thread to run.
    fn deliver(self: Arc<Self>, outcome: Outcome) -> Option<Box<dyn FnOnce() + Send>>;
    fn fail(&self, e: Error);
}

impl<R: DeserializeOwned + Send + 'static> Slot for Task<R> {
    fn state(&self) -> TaskState {
        Task::state(self)
    }
    fn start(&self) -> bool {
        Task::start(self)
    }
    fn cancel(&self) -> bool {
        Task::cancel(self)
    }
    fn deliver(self: Arc<Self>, outcome: Outcome) -> Option<Box<dyn FnOnce() + Send>> {
        let result = match outcome {
            Outcome::Value(v) => crate::codec::decode::<R>(&v)
                .map_err(|e| e.context(format!("the result of task {} from a worker", self.id))),
            Outcome::Error { kind, message } => Err(wire::outcome_error(&kind, &message)),
        };
        match self.complete_unless_callbacks(result) {
            Ok(()) => None,
            Err(result) => Some(Box::new(move || self.complete(result))),
        }
    }
    fn fail(&self, e: Error) {
        self.complete(Err(e));
    }
}

struct Pending {
    slot: Arc<dyn Slot>,
    /// The task's stream sequence, once the server acknowledged it.
    seq: Option<u64>,
    /// Cancelled before the server's acknowledgement came: delete then.
    delete_on_ack: bool,
}

enum Event {
    Acked(u64, std::result::Result<u64, String>),
    /// A completion with callbacks to run.
    Complete(Box<dyn FnOnce() + Send>),
    Started(Vec<u8>),
    MaxDeliveries(Vec<u8>),
    Stop,
}

struct Inner {
    shared: Arc<Shared>,
    pool: String,
    client: String,
    registry: Registry,
    names: Names,
    policy: Policy,
    workers_hint: usize,
    pending: Mutex<HashMap<u64, Pending>>,
    counters: Arc<TaskCounters>,
    closed: AtomicBool,
    events: mpsc::Sender<Event>,
}

/// Settings of a [`ClusterPool`]; from [`ClusterPool::builder`].
#[derive(Debug)]
pub struct ClusterPoolBuilder<'a> {
    cluster: &'a Cluster,
    name: String,
    policy: Policy,
    workers_hint: usize,
}

impl ClusterPoolBuilder<'_> {
    /// How long a worker may hold a task without a result or a progress
    /// heartbeat before it goes to another worker (default 30 s; workers
    /// send heartbeats every third of it while a task runs).
    pub fn ack_wait(mut self, d: Duration) -> Self {
        self.policy.ack_wait = d;
        self
    }

    /// How many times a task is delivered before it fails with
    /// [`ErrorKind::ProcessDied`] (default 3).
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.policy.max_deliver = i64::from(n.max(1));
        self
    }

    /// How long a result waits in the server for a submitter that went
    /// away (default 24 h).
    pub fn result_ttl(mut self, d: Duration) -> Self {
        self.policy.result_ttl = d;
        self
    }

    /// How many workers to plan for: sizes `map`'s in-flight bound
    /// (default 4). The workers themselves come and go freely.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers_hint = n.max(1);
        self
    }

    /// Connects the pool: makes the streams and the consumer if missing
    /// and sets the redelivery policy.
    pub fn connect(self, registry: &Registry) -> Result<ClusterPool> {
        ClusterPool::start(self, registry)
    }
}

/// An [`Executor`] on NATS JetStream: tasks go to [`Worker`](super::Worker)s
/// on any machine; `submit`, `map`, `map_unordered`, [`TaskHandle`] (with
/// `result`, `result_timeout`, `cancel`, `add_done_callback`, `.await`),
/// [`wait`](crate::pool::wait) and [`as_completed`](crate::pool::as_completed)
/// work as on a local pool. See the [module docs](super) for the semantics.
///
/// Functions must be in the [`Registry`] given to
/// [`connect`](ClusterPoolBuilder::connect); `submit` of another fails at once.
pub struct ClusterPool {
    inner: Arc<Inner>,
    collector: Option<JoinHandle<()>>,
    subscriptions: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPool")
            .field("pool", &self.inner.pool)
            .field("client", &self.inner.client)
            .finish_non_exhaustive()
    }
}

fn client_id() -> String {
    let mut b = [0u8; 9];
    let _ = crate::platform::random_bytes(&mut b);
    let mut s = format!("p{}-", std::process::id());
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    s
}

impl ClusterPool {
    /// Settings for the pool `name` on `cluster` (1 to 64 of `A-Z a-z 0-9 _ -`;
    /// workers serve it under the same name).
    pub fn builder<'a>(cluster: &'a Cluster, name: &str) -> ClusterPoolBuilder<'a> {
        ClusterPoolBuilder {
            cluster,
            name: name.to_owned(),
            policy: Policy::default(),
            workers_hint: 4,
        }
    }

    fn start(b: ClusterPoolBuilder<'_>, registry: &Registry) -> Result<ClusterPool> {
        check_name("pool", &b.name)?;
        registry.check()?;
        let shared = b.cluster.shared.clone();
        let js = shared.js.clone();
        let pool = b.name.clone();
        let (_, policy) = shared
            .rt
            .block_on(async { ensure(&js, shared.replicas, &pool, b.policy, true).await })
            .map_err(|e| nats_error(format!("cannot set up the cluster pool {pool:?}"), e))?;
        let client = client_id();
        let names = Names::of(&pool);
        let (tx, rx) = mpsc::channel();

        // Subscriptions, on the runtime; each forwards to the collector.
        let mut subscriptions = Vec::new();
        let results_subject = Names::results_subject(&pool, &client);
        let started_subject = Names::started_subject(&pool, &client);
        let advisory = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            names.tasks_stream, names.consumer
        );
        let c = shared.client.clone();
        let results_stream = names.results_stream.clone();
        let (results, started, advisories) = shared
            .rt
            .block_on(async {
                let st = js
                    .get_stream(&results_stream)
                    .await
                    .map_err(|e| e.to_string())?;
                // An ordered consumer of this submitter's results: no
                // acknowledgements, and it resumes from the last sequence it
                // saw after a reconnect or a server restart.
                let ordered = st
                    .create_consumer(consumer::push::OrderedConfig {
                        deliver_subject: c.new_inbox(),
                        filter_subject: results_subject.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .messages()
                    .await
                    .map_err(|e| e.to_string())?;
                let started = c
                    .subscribe(started_subject)
                    .await
                    .map_err(|e| e.to_string())?;
                let adv = c.subscribe(advisory).await.map_err(|e| e.to_string())?;
                // The subscriptions reach the server before any task is sent.
                c.flush().await.map_err(|e| e.to_string())?;
                Ok::<_, String>((ordered, started, adv))
            })
            .map_err(|e| nats_error(format!("cannot subscribe to the results of {pool:?}"), e))?;
        let t = tx.clone();
        subscriptions.push(shared.rt.handle().spawn(async move {
            let mut s = started;
            while let Some(m) = s.next().await {
                if t.send(Event::Started(m.payload.to_vec())).is_err() {
                    break;
                }
            }
        }));
        let t = tx.clone();
        subscriptions.push(shared.rt.handle().spawn(async move {
            let mut s = advisories;
            while let Some(m) = s.next().await {
                if t.send(Event::MaxDeliveries(m.payload.to_vec())).is_err() {
                    break;
                }
            }
        }));

        let inner = Arc::new(Inner {
            shared,
            pool,
            client,
            registry: registry.clone(),
            names,
            policy,
            workers_hint: b.workers_hint,
            pending: Mutex::new(HashMap::new()),
            counters: Arc::new(TaskCounters::default()),
            closed: AtomicBool::new(false),
            events: tx,
        });
        // Results are matched and completed on the runtime's thread as they
        // come (no hand-off to another thread on the way to the waiter);
        // a task with done-callbacks is completed by the collector thread.
        let weak = Arc::downgrade(&inner);
        subscriptions.push(inner.shared.rt.handle().spawn(results_loop(
            results,
            weak,
            inner.shared.js.clone(),
            inner.names.results_stream.clone(),
            Names::results_subject(&inner.pool, &inner.client),
        )));
        let i = inner.clone();
        let collector = std::thread::Builder::new()
            .name(format!("ipckit-cluster-{}", inner.pool))
            .spawn(move || collect(&i, rx))
            .map_err(|e| Error::io("cannot start the cluster pool's collector", e))?;
        Ok(ClusterPool {
            inner,
            collector: Some(collector),
            subscriptions,
        })
    }

    /// The pool's name.
    pub fn name(&self) -> &str {
        &self.inner.pool
    }

    /// The redelivery policy in force: `(ack_wait, max_deliver)`.
    pub fn policy(&self) -> (Duration, u32) {
        (
            self.inner.policy.ack_wait,
            u32::try_from(self.inner.policy.max_deliver).unwrap_or(u32::MAX),
        )
    }

    /// Submits the registered function `name` (a `fn(A) -> R`): for
    /// functions that `submit` cannot tell apart by address (see
    /// [`Registry`]).
    pub fn submit_named<A: TaskValue, R: TaskValue>(
        &self,
        name: &str,
        arg: A,
    ) -> Result<TaskHandle<R>> {
        let entry = self.inner.registry.by_name_typed::<A, R>(name)?.clone();
        let payload = crate::codec::encode(&arg)?;
        self.submit_entry(&entry, payload, false)
    }

    /// Waits until the server has stored every task submitted so far (each
    /// `submit` returns once its task is sent, before the server confirms):
    /// after `flush`, no task is lost if this program exits or the server
    /// restarts.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = crate::deadline::deadline_after(timeout);
        let mut pause = Duration::from_micros(200);
        loop {
            let unconfirmed = lock(&self.inner.pending)
                .values()
                .filter(|p| p.seq.is_none() && !p.slot.state().is_done())
                .count();
            if unconfirmed == 0 {
                return Ok(());
            }
            if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{unconfirmed} tasks not yet confirmed by the server after {timeout:?}"
                    ),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// What the server holds for this pool now: tasks not yet acknowledged
    /// by a worker (queued or running), and results stored and not yet
    /// received by their submitters.
    pub fn backlog(&self) -> Result<(u64, u64)> {
        let js = self.inner.shared.js.clone();
        let (t, r) = (
            self.inner.names.tasks_stream.clone(),
            self.inner.names.results_stream.clone(),
        );
        self.inner
            .shared
            .rt
            .block_on(async move {
                let mut ts = js.get_stream(&t).await.map_err(|e| e.to_string())?;
                let tasks = ts.info().await.map_err(|e| e.to_string())?.state.messages;
                let mut rs = js.get_stream(&r).await.map_err(|e| e.to_string())?;
                let results = rs.info().await.map_err(|e| e.to_string())?.state.messages;
                Ok::<_, String>((tasks, results))
            })
            .map_err(|e| {
                nats_error(
                    format!("cannot read the backlog of {:?}", self.inner.pool),
                    e,
                )
            })
    }

    /// Counts of this submitter's tasks: pending and running (as far as
    /// workers announced), completed, failed, cancelled. `workers` is empty:
    /// workers are not known to the submitter.
    pub fn stats(&self) -> PoolStats {
        let (mut pending, mut running) = (0, 0);
        for p in lock(&self.inner.pending).values() {
            match p.slot.state() {
                TaskState::Pending => pending += 1,
                TaskState::Running => running += 1,
                _ => {}
            }
        }
        let c = &self.inner.counters;
        PoolStats {
            pending,
            running,
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            cancelled: c.cancelled.load(Ordering::Relaxed),
            workers: Vec::new(),
        }
    }

    fn submit_entry<R: TaskValue>(
        &self,
        entry: &Entry,
        payload: Vec<u8>,
        chunk: bool,
    ) -> Result<TaskHandle<R>> {
        let inner = &self.inner;
        // Ordering: Acquire pairs with `shutdown`'s Release store; a submit
        // racing a shutdown may still go through (as locally).
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::new(
                ErrorKind::Closed,
                format!("the cluster pool {:?} is shut down", inner.pool),
            ));
        }
        let task = Task::<R>::counted(&inner.counters);
        let msg = TaskMsg {
            version: wire::VERSION,
            task: task.id,
            client: inner.client.clone(),
            function: entry.name.clone(),
            arg_type: entry.arg_type.to_owned(),
            ret_type: entry.ret_type.to_owned(),
            chunk,
            payload,
        };
        let bytes = crate::codec::encode(&msg)?;
        inner.shared.check_payload("a task", bytes.len())?;
        let id = task.id;
        lock(&inner.pending).insert(
            id,
            Pending {
                slot: task.clone(),
                seq: None,
                delete_on_ack: false,
            },
        );
        let js = inner.shared.js.clone();
        let subject = inner.names.tasks_subject.clone();
        let sent = inner.shared.rt.block_on(async move {
            js.publish(subject, bytes.into())
                .await
                .map_err(|e| e.to_string())
        });
        match sent {
            Ok(ack) => {
                let events = inner.events.clone();
                inner.shared.rt.spawn(async move {
                    let r = ack.await.map(|a| a.sequence).map_err(|e| e.to_string());
                    let _ = events.send(Event::Acked(id, r));
                });
            }
            Err(e) => {
                lock(&inner.pending).remove(&id);
                return Err(nats_error(format!("cannot submit to {:?}", inner.pool), e));
            }
        }
        let hook_inner = Arc::downgrade(inner);
        let cancel_hook: CancelHook = Arc::new(move |id, _running| match hook_inner.upgrade() {
            Some(i) => cancel(&i, id),
            None => false,
        });
        Ok(TaskHandle {
            task,
            cancel_hook: Some(cancel_hook),
            drive: None,
        })
    }
}

/// Cancels task `id` if no worker announced it: deletes it from the stream.
fn cancel(inner: &Inner, id: u64) -> bool {
    let Some(slot) = lock(&inner.pending).get(&id).map(|p| p.slot.clone()) else {
        return false;
    };
    // Without the pending lock: cancelling runs the task's done-callbacks
    // here, and a callback may submit.
    if !slot.cancel() {
        return false;
    }
    let mut pending = lock(&inner.pending);
    if let Some(p) = pending.get_mut(&id) {
        match p.seq {
            Some(seq) => {
                pending.remove(&id);
                drop(pending);
                delete_task(inner, seq);
            }
            None => p.delete_on_ack = true,
        }
    }
    true
}

fn delete_task(inner: &Inner, seq: u64) {
    let js = inner.shared.js.clone();
    let stream = inner.names.tasks_stream.clone();
    inner.shared.rt.spawn(async move {
        if let Ok(s) = js.get_stream_no_info(&stream).await {
            let _ = s.delete_message(seq).await;
        }
    });
}

/// Receives this submitter's results, and purges those received from the
/// stream: after 1 024 of them, and when none came for 100 ms (one request
/// each time, off the path of any result).
async fn results_loop(
    mut results: consumer::push::Ordered,
    weak: std::sync::Weak<Inner>,
    js: jetstream::Context,
    stream: String,
    subject: String,
) {
    let mut last_seq: Option<u64> = None;
    let mut since_purge = 0u32;
    // Purges what was received so far and starts counting again.
    let purge = |last_seq: &mut Option<u64>, since_purge: &mut u32| {
        let upto = last_seq.take();
        *since_purge = 0;
        let (js, stream, subject) = (js.clone(), stream.clone(), subject.clone());
        async move {
            let Some(upto) = upto else { return };
            if let Ok(s) = js.get_stream_no_info(&stream).await {
                // Every result of ours below `upto + 1`.
                let _ = s.purge().filter(subject).sequence(upto + 1).await;
            }
        }
    };
    loop {
        let next = if last_seq.is_some() {
            match tokio::time::timeout(Duration::from_millis(100), results.next()).await {
                Ok(n) => n,
                Err(_) => {
                    purge(&mut last_seq, &mut since_purge).await;
                    continue;
                }
            }
        } else {
            results.next().await
        };
        let Some(m) = next else { break };
        let Ok(m) = m else { continue };
        let Some(inner) = weak.upgrade() else { break };
        on_result(&inner, &m.payload);
        drop(inner);
        if let Ok(info) = m.info() {
            last_seq = Some(info.stream_sequence);
        }
        since_purge += 1;
        if since_purge >= 1024 {
            purge(&mut last_seq, &mut since_purge).await;
        }
    }
}

/// A result from the results stream: completes its task (or hands the
/// completion to the collector). A result that does not decode cannot be
/// matched to a task and is dropped: a peer writing garbage to our subject
/// can do no more than that (the task then fails by max_deliver or waits).
fn on_result(inner: &Inner, bytes: &[u8]) {
    let Ok(r) = wire::decode_result(bytes) else {
        return;
    };
    let p = lock(&inner.pending).remove(&r.task);
    let Some(p) = p else { return }; // a duplicate, or cancelled
    if let Some(complete) = p.slot.deliver(r.outcome) {
        let _ = inner.events.send(Event::Complete(complete));
    }
}

/// The collector thread: completes tasks as results come. User callbacks
/// run here, never on the runtime's thread, so they may submit.
fn collect(inner: &Inner, rx: mpsc::Receiver<Event>) {
    while let Ok(ev) = rx.recv() {
        match ev {
            Event::Stop => break,
            Event::Acked(id, Ok(seq)) => {
                let mut pending = lock(&inner.pending);
                if let Some(p) = pending.get_mut(&id) {
                    if p.delete_on_ack {
                        pending.remove(&id);
                        drop(pending);
                        delete_task(inner, seq);
                    } else {
                        p.seq = Some(seq);
                    }
                }
            }
            Event::Acked(id, Err(e)) => {
                let p = lock(&inner.pending).remove(&id);
                if let Some(p) = p {
                    p.slot.fail(nats_error(
                        format!("task {id} was not stored by the server"),
                        e,
                    ));
                }
            }
            Event::Started(bytes) => {
                if let Ok(s) = crate::codec::decode::<wire::StartedMsg>(&bytes) {
                    let slot = lock(&inner.pending).get(&s.task).map(|p| p.slot.clone());
                    if let Some(slot) = slot {
                        slot.start();
                    }
                }
            }
            Event::Complete(f) => f(),
            Event::MaxDeliveries(json) => {
                let Some(seq) = wire::advisory_seq(&json) else {
                    continue;
                };
                // Advisories are rare: the pending task with this stream
                // sequence is found by a scan, not kept in an index.
                let p = {
                    let mut pending = lock(&inner.pending);
                    let id = pending
                        .iter()
                        .find(|(_, p)| p.seq == Some(seq))
                        .map(|(id, _)| *id);
                    id.and_then(|id| pending.remove(&id).map(|p| (id, p)))
                };
                if let Some((id, p)) = p {
                    p.slot.fail(Error::new(
                        ErrorKind::ProcessDied,
                        format!(
                            "task {id} was delivered {} times without a result: every worker \
                             that took it died or stalled beyond ack_wait ({:?}); it is not retried",
                            inner.policy.max_deliver, inner.policy.ack_wait
                        ),
                    ));
                    // Out of the work queue, where it would stay for good.
                    delete_task(inner, seq);
                }
            }
        }
    }
}

impl Executor for ClusterPool {
    fn submit<A: TaskValue, R: TaskValue>(&self, f: fn(A) -> R, arg: A) -> Result<TaskHandle<R>> {
        let entry = self.inner.registry.by_function::<A, R>(f as usize)?.clone();
        let payload = crate::codec::encode(&arg)?;
        self.submit_entry(&entry, payload, false)
    }

    fn submit_chunk<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Result<TaskHandle<Vec<R>>> {
        let entry = self.inner.registry.by_function::<A, R>(f as usize)?.clone();
        let payload = crate::codec::encode(&args)?;
        self.submit_entry(&entry, payload, true)
    }

    fn workers(&self) -> usize {
        self.inner.workers_hint
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        self.inner.closed.store(true, Ordering::Release);
        if cancel_pending {
            let ids: Vec<u64> = lock(&self.inner.pending).keys().copied().collect();
            for id in ids {
                cancel(&self.inner, id);
            }
        }
        if wait {
            let mut pause = Duration::from_millis(1);
            while !lock(&self.inner.pending).is_empty() {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for ClusterPool {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        for s in &self.subscriptions {
            s.abort();
        }
        let _ = self.inner.events.send(Event::Stop);
        if let Some(c) = self.collector.take() {
            let _ = c.join();
        }
        // What is left of this submitter's results goes with it.
        let js = self.inner.shared.js.clone();
        let stream = self.inner.names.results_stream.clone();
        let subject = Names::results_subject(&self.inner.pool, &self.inner.client);
        let _ = self.inner.shared.rt.block_on(async move {
            tokio::time::timeout(Duration::from_secs(2), async move {
                if let Ok(s) = js.get_stream_no_info(&stream).await {
                    let _ = s.purge().filter(subject).await;
                }
            })
            .await
        });
        let left: Vec<Pending> = lock(&self.inner.pending).drain().map(|(_, p)| p).collect();
        for p in left {
            p.slot.fail(Error::new(
                ErrorKind::Closed,
                format!(
                    "the cluster pool {:?} was dropped before this task's result came",
                    self.inner.pool
                ),
            ));
        }
    }
}
