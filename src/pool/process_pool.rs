//! A pool of worker processes.
//!
//! Each worker is this executable, started through `ipckit::process` as a
//! daemon, with a task queue of its own and a result queue shared by all
//! (ipckit `Queue`s). The pool sends a task to an idle worker, and up to
//! [`AHEAD`] more behind it, each of which the worker must claim before it
//! starts it (see `Worker::next`), so the pool always knows which task each
//! worker runs: when a worker dies, exactly that task fails. A collector thread takes results, notices dead workers (at
//! most 10 ms late), enforces task timeouts, replaces workers and hands out
//! pending tasks.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::task::{Drive, Task, TaskHandle};
use super::worker::{AHEAD, Claim, FromWorker, ToWorker, WorkerArgs, worker_main};
use super::{Executor, TaskValue};
use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::process::{Liveness, Process, RemoteCall, Report, describe_status};
use crate::queue::Queue;
use crate::sync::raw::deadline_passed;

const TASK_QUEUE: usize = 1 << 20;
const RESULT_QUEUE: usize = 4 << 20;
const COLLECT_SLICE: Duration = Duration::from_millis(10);

/// The typed side of a task, seen by the pool without its types.
trait Slot: Send + Sync {
    fn start(&self) -> bool;
    fn pending(&self) -> bool;
    fn report(&self, report: Report, who: &str);
    fn fail(&self, e: Error);
    fn cancel(&self) -> bool;
}

impl<R: TaskValue> Slot for Task<R> {
    fn start(&self) -> bool {
        Task::start(self)
    }
    fn pending(&self) -> bool {
        self.state() == super::TaskState::Pending
    }
    fn report(&self, report: Report, who: &str) {
        self.complete(match report {
            Report::Returned(bytes) => codec::decode::<R>(&bytes)
                .map_err(|e| e.context(format!("cannot decode the result of task {}", self.id))),
            Report::Panicked { message, location } => Err(Error::new(
                ErrorKind::Panicked,
                match location {
                    Some(at) => format!("task {} panicked in {who} at {at}: {message}", self.id),
                    None => format!("task {} panicked in {who}: {message}", self.id),
                },
            )),
            // The worker chose the kind (Codec for an argument or result
            // that does not decode or encode).
            Report::Failed(e) => Err(e.context(format!("task {} could not run in {who}", self.id))),
        });
    }
    fn fail(&self, e: Error) {
        self.complete(Err(e));
    }
    fn cancel(&self) -> bool {
        Task::cancel(self)
    }
}

struct Job {
    id: u64,
    call: RemoteCall,
    arg: Vec<u8>,
    timeout: Option<Duration>,
    slot: Arc<dyn Slot>,
}

struct Worker {
    generation: u64,
    process: Process<()>,
    tasks: Queue<()>,
    /// The task it runs, and when it must be done by.
    current: Option<(Job, Option<Instant>)>,
    /// Tasks sent after `current` (at most [`AHEAD`]), already in its task
    /// queue, in the order the worker runs them: it starts each as soon as
    /// it has sent the result of the one before, without waiting for the
    /// pool to hear of it. Each stays pending (cancellable) until the pool
    /// hears the one before is done; its claim slot decides between the
    /// worker starting it and the pool cancelling it or, if the worker
    /// dies, retires or another worker is idle, giving it to another.
    next: VecDeque<Ahead>,
    claim: Claim,
    /// Why the pool killed it, and for which task: reported for that task
    /// instead of "died". (By the time the worker dies it may have moved on
    /// to the task sent ahead, which then fails as killed, not timed out.)
    kill_reason: Option<(u64, Error)>,
    stopping: bool,
    /// When it was started, and whether it ever reported a task: a worker
    /// that dies young without one counts towards `State::early_deaths`.
    started: Instant,
    reported: bool,
}

/// A task sent ahead, and the claim slot it was offered in.
struct Ahead {
    job: Job,
    slot: usize,
}

struct State {
    workers: Vec<Option<Worker>>,
    pending: VecDeque<Job>,
    shutdown: bool,
    /// Why the pool is broken: every task fails with this error's kind.
    broken: Option<Error>,
    next_generation: u64,
    /// Workers that died in a row soon after starting, before reporting
    /// anything: past [`MAX_EARLY_DEATHS`] the pool breaks instead of
    /// starting more (a program that kills its workers as they start).
    early_deaths: u32,
}

/// Young deaths in a row after which the pool stops replacing workers.
const MAX_EARLY_DEATHS: u32 = 6;
/// How young a worker's death counts as early.
const EARLY: Duration = Duration::from_secs(2);

struct Config {
    name: String,
    size: usize,
    initializer: Option<(RemoteCall, Vec<u8>)>,
    max_tasks: Option<u64>,
    max_message: usize,
}

/// What a task message adds to its argument (id, call, length prefix, flag).
const TASK_ENVELOPE: usize = 64;

struct Shared {
    state: Mutex<State>,
    results: Queue<()>,
    config: Config,
    /// A thread waiting in `TaskHandle::result` collects results itself
    /// (`Drive`); while one does, the collector thread leaves the results
    /// queue to it.
    driving: AtomicBool,
    /// The collector thread, to unpark.
    collector: OnceLock<std::thread::Thread>,
    counters: Arc<super::task::TaskCounters>,
    /// The counters published for the `ipckit` tool, if asked for.
    board: Option<super::board::Board>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pool of worker processes: Python's `multiprocessing.Pool` and
/// `ProcessPoolExecutor`, behind the [`Executor`] interface.
///
/// Workers are daemons: they die with the pool's process. Dropping the pool
/// shuts it down and waits for pending and running tasks.
pub struct ProcessPool {
    shared: Arc<Shared>,
    collector: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for ProcessPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPool")
            .field("name", &self.shared.config.name)
            .field("workers", &self.shared.config.size)
            .finish()
    }
}

/// Options for a [`ProcessPool`].
#[must_use]
#[derive(Debug)]
pub struct ProcessPoolBuilder {
    workers: Option<usize>,
    name: String,
    initializer: Option<(RemoteCall, Vec<u8>)>,
    init_error: Option<Error>,
    max_tasks: Option<u64>,
    max_message: usize,
    publish: Option<String>,
}

impl ProcessPoolBuilder {
    /// The number of worker processes (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// A name; workers are called `<name>-<n>`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs `f(arg)` once in each worker before its first task. If it fails
    /// (panics), the pool is broken: every task fails, with the kind of the
    /// initializer's failure ([`ErrorKind::Panicked`] for a panic).
    pub fn initializer<A: TaskValue, R: TaskValue>(mut self, f: fn(A) -> R, arg: A) -> Self {
        match codec::encode(&arg) {
            Ok(bytes) => self.initializer = Some((RemoteCall::new(f), bytes)),
            Err(e) => self.init_error = Some(e.context("cannot encode the initializer's argument")),
        }
        self
    }

    /// Replaces a worker after it has run `n` tasks.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = Some(n.max(1));
        self
    }

    /// The largest encoded task argument and result, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE`](crate::codec::DEFAULT_MAX_MESSAGE), 1 GiB). A
    /// larger argument is refused by `submit` (`LimitExceeded`); a task
    /// whose result is larger fails with `LimitExceeded`, and its worker
    /// goes on with the next task.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes.max(1024);
        self
    }

    /// Publishes the pool's counters (tasks pending, running, completed,
    /// failed, cancelled; worker pids) as a named object, so that `ipckit
    /// ls`, `inspect NAME` and `watch NAME` show the running pool. The
    /// object is removed with the pool (or, after a crash, by `ipckit clean
    /// --stale`); `build` fails if the name exists.
    pub fn publish(mut self, name: impl Into<String>) -> Self {
        self.publish = Some(name.into());
        self
    }

    /// Starts the workers.
    pub fn build(self) -> Result<ProcessPool> {
        if let Some(e) = self.init_error {
            return Err(e);
        }
        let size = self
            .workers
            .unwrap_or_else(crate::process::cpu_count)
            .max(1);
        let board = match &self.publish {
            Some(name) => Some(
                super::board::Board::create(name)
                    .map_err(|e| e.context("cannot publish the pool's counters"))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                workers: (0..size).map(|_| None).collect(),
                pending: VecDeque::new(),
                shutdown: false,
                broken: None,
                next_generation: 1,
                early_deaths: 0,
            }),
            driving: AtomicBool::new(false),
            collector: OnceLock::new(),
            counters: Arc::default(),
            board,
            results: {
                // Fenced: the collector or a waiting thread usually sleeps
                // on it, and a sleeper would otherwise issue a membarrier.
                let mut q = Queue::builder(RESULT_QUEUE)
                    .fenced_commits(true)
                    .new()
                    .map_err(|e| e.context("cannot start a process pool"))?;
                q.set_max_message_size(self.max_message);
                q
            },
            config: Config {
                name: self.name,
                size,
                initializer: self.initializer,
                max_tasks: self.max_tasks,
                max_message: self.max_message,
            },
        });
        {
            let mut st = lock(&shared.state);
            for i in 0..size {
                let w = spawn_worker(&shared, &mut st, i)?;
                st.workers[i] = Some(w);
            }
        }
        let s = shared.clone();
        let collector = std::thread::Builder::new()
            .name(format!("{}-collector", shared.config.name))
            .spawn(move || collect(s))
            .map_err(|e| Error::io("cannot start the pool's collector thread", e))?;
        let _ = shared.collector.set(collector.thread().clone());
        Ok(ProcessPool {
            shared,
            collector: Mutex::new(Some(collector)),
        })
    }
}

fn spawn_worker(shared: &Shared, st: &mut State, slot: usize) -> Result<Worker> {
    let generation = st.next_generation;
    st.next_generation += 1;
    // TRUST: the worker *calls* the code offsets it reads from this queue
    // (`RemoteCall::run`). That is sound only because the queue is
    // anonymous — a memfd with no name, handed by descriptor to this one
    // worker at its spawn and to nobody else — so its only writers are this
    // pool and the worker, the same executable. Never make it named or
    // pass it on: whoever can write it chooses what code the worker runs.
    // Fenced, as the results queue is: the worker sleeps on it between tasks.
    let tasks = Queue::<()>::builder(TASK_QUEUE)
        .fenced_commits(true)
        .new()?;
    let claim = Claim::new()?;
    let args = WorkerArgs {
        tasks: tasks.clone(),
        claim: claim.clone(),
        results: shared.results.clone(),
        slot: slot as u32,
        generation,
        initializer: shared.config.initializer.clone(),
        max_tasks: shared.config.max_tasks,
        max_message: shared.config.max_message as u64,
    };
    let process = Process::builder()
        .name(format!("{}-{slot}", shared.config.name))
        .daemon(true)
        .spawn(worker_main, args)
        .map_err(|e| e.context("cannot start a pool worker"))?;
    Ok(Worker {
        generation,
        process,
        tasks,
        current: None,
        next: VecDeque::new(),
        claim,
        kill_reason: None,
        stopping: false,
        started: Instant::now(),
        reported: false,
    })
}

/// A message for a worker's task queue, to send without the state lock;
/// the worker's liveness bounds the send.
type WorkerSend = (Queue<()>, Vec<u8>, Liveness);

/// Gives pending tasks to idle workers, then sends more ahead to busy ones
/// (`Worker::next`, up to [`AHEAD`] each, one per worker per round so that
/// they share them), and lets an idle worker take back a task sent ahead
/// to another when nothing is pending (`steal`). Returns the sends to make
/// after the lock is released.
fn dispatch(st: &mut State) -> Vec<WorkerSend> {
    let mut sends = Vec::new();
    if st.broken.is_some() {
        return sends;
    }
    let mut extra = false;
    loop {
        let (mut gave, mut drained) = (false, false);
        for w in st.workers.iter_mut().flatten() {
            if w.stopping {
                continue;
            }
            let slot = if extra {
                if w.current.is_none() || w.next.len() >= AHEAD {
                    continue;
                }
                match w.claim.free_slot() {
                    Some(slot) => Some(slot),
                    None => continue,
                }
            } else if w.current.is_none() {
                None
            } else {
                continue;
            };
            let job = loop {
                match st.pending.pop_front() {
                    Some(job) if extra && job.slot.pending() => break Some(job),
                    Some(job) if !extra && job.slot.start() => break Some(job),
                    Some(_) => continue, // cancelled while pending
                    None => break None,
                }
            };
            let Some(job) = job else {
                drained = true;
                break;
            };
            if let Some(send) = w.send(job, slot) {
                sends.push(send);
                gave = true;
            }
        }
        if drained {
            steal(st, &mut sends);
            return sends;
        }
        if extra && !gave {
            return sends;
        }
        extra = true;
    }
}

/// Nothing is pending: each idle worker takes back the last task sent
/// ahead to the worker with the most of them, if it wins that task's claim
/// (the other worker has not started it).
fn steal(st: &mut State, sends: &mut Vec<WorkerSend>) {
    loop {
        let Some(idle) = st.workers.iter().position(|w| {
            w.as_ref()
                .is_some_and(|w| w.current.is_none() && !w.stopping)
        }) else {
            return;
        };
        let Some(job) = st
            .workers
            .iter_mut()
            .flatten()
            .filter(|w| !w.next.is_empty())
            .max_by_key(|w| w.next.len())
            .and_then(Worker::take_back_last)
        else {
            return;
        };
        let w = st.workers[idle].as_mut().expect("found above");
        if !job.slot.start() {
            continue; // cancelled meanwhile
        }
        if let Some(send) = w.send(job, None) {
            sends.push(send);
        }
    }
}

impl Worker {
    /// Records that the worker is running `job` from now.
    fn start(&mut self, job: Job) {
        // A timeout too long to make a deadline of is never enforced.
        let deadline = job.timeout.and_then(deadline_after);
        self.current = Some((job, deadline));
    }

    /// Gives `job` to the worker: to run now (`ahead` is `None`; the job
    /// was started), or sent ahead in claim slot `ahead`. Returns the send
    /// to make after the state lock is released; `None` if the task could
    /// not be encoded (it failed).
    fn send(&mut self, job: Job, ahead: Option<usize>) -> Option<WorkerSend> {
        let msg = ToWorker::Run {
            id: job.id,
            call: job.call,
            arg: job.arg.clone(),
            ahead: ahead.map(|slot| slot as u32),
        };
        let bytes = match codec::encode(&msg) {
            Ok(bytes) => bytes,
            Err(e) => {
                job.slot.fail(e);
                return None;
            }
        };
        let send = (self.tasks.clone(), bytes, self.process.liveness());
        match ahead {
            Some(slot) => {
                self.claim.offer(slot, job.id);
                self.next.push_back(Ahead { job, slot });
            }
            None => self.start(job),
        }
        Some(send)
    }

    /// The worker reported task `id` done: report it, and the first task
    /// sent ahead (if any) is the one it runs now. A retiring worker will
    /// not run the tasks sent ahead: they go back to `pending`.
    ///
    /// Two threads may take results off the queue (the collector and a
    /// driver), so reports of one worker can be handled out of order: a
    /// report for a task sent ahead means `current` and the ones before it
    /// are done too (the worker runs them in order) and their reports are
    /// on their way.
    fn finished(&mut self, id: u64, report: Report, retiring: bool, pending: &mut VecDeque<Job>) {
        self.reported = true;
        if retiring {
            // It runs nothing after `id`: every task sent ahead that it has
            // not started goes back (the report may be for one sent ahead,
            // handled before the reports of the tasks before it).
            for job in self.take_back_ahead().into_iter().rev() {
                pending.push_front(job);
            }
            self.stopping = true;
        }
        let who = || {
            format!(
                "worker {} (pid {})",
                self.process.name(),
                self.process.pid()
            )
        };
        if let Some((job, _)) = self.current.take_if(|(job, _)| job.id == id) {
            job.slot.report(report, &who());
            // The worker has started it, or will.
            if let Some(Ahead { job, .. }) = self.next.pop_front() {
                job.slot.start();
                self.start(job);
            }
        } else if let Some(i) = self.next.iter().position(|a| a.job.id == id) {
            let Ahead { job, .. } = self.next.remove(i).expect("found");
            job.slot.report(report, &who());
        }
    }

    /// Takes back the tasks sent ahead that the worker has not started, in
    /// their order; the ones it started (claims it won) stay in `next`.
    /// The last first: a live worker takes them from the front.
    fn take_back_ahead(&mut self) -> Vec<Job> {
        let mut back = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(a) = self.next.pop_back() {
            if self.claim.take(a.slot, a.job.id) {
                back.push(a.job);
            } else {
                kept.push_front(a);
            }
        }
        self.next = kept;
        back.reverse();
        back
    }

    /// Takes back task `id`, sent ahead, if the worker has not started it.
    fn take_back(&mut self, id: u64) -> Option<Job> {
        let i = self.next.iter().position(|a| a.job.id == id)?;
        let a = &self.next[i];
        if self.claim.take(a.slot, a.job.id) {
            self.next.remove(i).map(|a| a.job)
        } else {
            None
        }
    }

    /// Takes back the last task sent ahead, if the worker has not started it.
    fn take_back_last(&mut self) -> Option<Job> {
        let id = self.next.back()?.job.id;
        self.take_back(id)
    }
}

/// Sends tasks to workers. A send waits for room only while its worker
/// lives (a task larger than the queue streams through it as the worker
/// reads): one that died meanwhile ends the send at once (its queue is
/// never read again), and the collector fails its task. So neither
/// `submit` nor the collector ever waits on a dead worker.
fn send_all(sends: Vec<WorkerSend>) {
    for (q, bytes, worker) in sends {
        let _ = q.put_bytes_while(&bytes, &|| worker.is_alive());
    }
}

/// The collector thread.
fn collect(shared: Arc<Shared>) {
    let mut buf = Vec::new();
    loop {
        // SYNC POINT "driving": a driver that stops clears `driving` and
        // then unparks us if work is in flight; we read it before parking,
        // and an unpark before the park makes the park return.
        if shared.driving.load(Ordering::SeqCst) {
            std::thread::park_timeout(COLLECT_SLICE);
        } else {
            match shared
                .results
                .get_bytes_into_timeout(&mut buf, COLLECT_SLICE)
            {
                Ok(()) => handle_message(&shared, &buf),
                Err(e) if e.is_timeout() => {}
                // Unreadable: no task can be told it failed, so every task
                // is, rather than one waiting for ever.
                Err(e) => results_failed(&shared, e),
            }
        }
        let mut st = lock(&shared.state);
        let mut sends = Vec::new();
        supervise(&shared, &mut st, &mut buf);
        sends.extend(dispatch(&mut st));
        let finished = stop_idle_if_shutting_down(&mut st);
        if let Some(board) = &shared.board {
            publish(&shared, &st, board);
        }
        drop(st);
        send_all(sends);
        if finished {
            return;
        }
    }
}

impl Shared {
    /// Whether a task is running or pending, or a result waits in the queue.
    fn work_in_flight(&self) -> bool {
        if !self.results.is_empty() {
            return true;
        }
        let st = lock(&self.state);
        !st.pending.is_empty()
            || st
                .workers
                .iter()
                .flatten()
                .any(|w| w.current.is_some() || !w.next.is_empty())
    }

    fn unpark_collector(&self) {
        if let Some(t) = self.collector.get() {
            t.unpark();
        }
    }
}

impl Drive for Shared {
    /// Polls the results queue for the wait policy's budget, handling what
    /// comes (the collector's work, done here so the result needs no
    /// hand-off between threads); then the waiter sleeps on its task and
    /// the collector takes over.
    fn drive(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) -> bool {
        if self
            .driving
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let mut buf = Vec::new();
        let mut spinner = crate::sync::raw::Spinner::new();
        while !done() && !deadline_passed(deadline) {
            let got = if self.results.is_empty() {
                None
            } else {
                Some(self.results.try_get_bytes_into(&mut buf))
            };
            if let Some(got) = got {
                match got {
                    Ok(()) => handle_message(self, &buf),
                    Err(e) if e.is_would_block() => {}
                    Err(e) => results_failed(self, e),
                }
                let sends = dispatch(&mut lock(&self.state));
                send_all(sends);
            } else if !spinner.spin() {
                break;
            }
        }
        // SYNC POINT "driving" (see `collect`).
        self.driving.store(false, Ordering::SeqCst);
        if self.work_in_flight() {
            self.unpark_collector();
        }
        true
    }
}

/// The results queue gave an error other than a timeout (a report too
/// large for the pool's limit, corrupt bytes): the pool breaks with it,
/// failing every task, since the one it belonged to cannot be known.
fn results_failed(shared: &Shared, e: Error) {
    let mut st = lock(&shared.state);
    if st.broken.is_none() {
        break_pool(&mut st, e.context("cannot read a worker's report"));
    }
}

fn handle_message(shared: &Shared, bytes: &[u8]) {
    let Ok(msg) = codec::decode::<FromWorker>(bytes) else {
        return; // not from one of our workers; ignore
    };
    apply(&mut lock(&shared.state), msg);
}

/// Applies one worker message to the pool's state.
fn apply(st: &mut State, msg: FromWorker) {
    match msg {
        FromWorker::Done {
            slot,
            generation,
            id,
            report,
            retiring,
        } => {
            let Some(Some(w)) = st.workers.get_mut(slot as usize) else {
                return;
            };
            if w.generation != generation {
                return;
            }
            w.finished(id, report, retiring, &mut st.pending);
        }
        FromWorker::InitFailed {
            slot,
            generation,
            report,
        } => {
            let Some(Some(w)) = st.workers.get_mut(slot as usize) else {
                return;
            };
            if w.generation != generation {
                return;
            }
            let why = match report {
                Report::Panicked { message, location } => Error::new(
                    ErrorKind::Panicked,
                    format!(
                        "the initializer panicked{}: {message}",
                        location.map(|l| format!(" at {l}")).unwrap_or_default()
                    ),
                ),
                Report::Failed(e) => e.context("the initializer could not run"),
                Report::Returned(_) => Error::new(ErrorKind::ProcessDied, "the initializer failed"),
            };
            break_pool(st, why);
        }
    }
}

/// The error of a task refused or failed because the pool is broken: the
/// kind of why it broke (`Panicked` for a panicking initializer, the kind of
/// the spawn error for a worker that could not be replaced, …).
fn broken_error(why: &Error) -> Error {
    why.clone_error().context("the process pool is broken")
}

/// Marks the pool broken by `why`, fails every task and stops every worker.
fn break_pool(st: &mut State, why: Error) {
    for job in st.pending.drain(..) {
        job.slot.fail(broken_error(&why));
    }
    for w in st.workers.iter_mut().flatten() {
        if let Some((job, _)) = w.current.take() {
            job.slot.fail(broken_error(&why));
        }
        for Ahead { job, .. } in w.next.drain(..) {
            job.slot.fail(broken_error(&why));
        }
        w.stopping = true;
        let _ = w.process.kill();
    }
    st.broken = Some(why);
}

/// Kills workers whose task overran its timeout, fails the tasks of dead
/// workers and replaces them.
fn supervise(shared: &Shared, st: &mut State, buf: &mut Vec<u8>) {
    let now = Instant::now();
    for w in st.workers.iter_mut().flatten() {
        if let Some((job, Some(deadline))) = &w.current {
            if now >= *deadline && w.kill_reason.is_none() {
                w.kill_reason = Some((
                    job.id,
                    Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "task {} overran its timeout of {:?}; its worker was killed",
                            job.id,
                            job.timeout.unwrap_or_default()
                        ),
                    ),
                ));
                let _ = w.process.kill();
            }
        }
    }
    let dead: Vec<usize> = st
        .workers
        .iter()
        .enumerate()
        .filter(|(_, w)| w.as_ref().is_some_and(|w| !w.process.is_alive()))
        .map(|(i, _)| i)
        .collect();
    if dead.is_empty() {
        return;
    }
    // A worker may have sent its result just before dying: take what is queued first.
    drop_lock_and_drain(shared, st, buf);
    // SYNC POINT "driving" (see `collect` and `Drive::drive`): a driver
    // takes a report off the queue before it locks the state to apply it,
    // so a dead worker's last report may be in a driver's hands, neither
    // in the queue nor applied; failing the worker's task now would lose
    // its result ("died: exit code 0" for a worker retiring after
    // `max_tasks_per_child`). Read after the drain: a driver that took a
    // report the drain missed set `driving` (SeqCst) before taking it; one
    // that starts after this load finds the dead worker's reports drained.
    // The deaths are handled on a later round, once it stopped (a driver
    // applies what it took before clearing `driving`).
    if shared.driving.load(Ordering::SeqCst) {
        return;
    }
    for i in dead {
        let Some(mut w) = st.workers[i].take() else {
            continue;
        };
        // A worker that could not even start its function (the child
        // protocol failed: a program whose main does not call
        // ipckit::init(), another executable) reported why: every
        // replacement would fail the same way.
        let failed_to_start = match w.process.try_join() {
            Err(e) if !matches!(e.kind(), ErrorKind::ProcessDied | ErrorKind::WouldBlock) => {
                Some(e)
            }
            _ => None,
        };
        let young = !w.reported && w.kill_reason.is_none() && w.started.elapsed() < EARLY;
        st.early_deaths = if young { st.early_deaths + 1 } else { 0 };
        if let Some(e) = &failed_to_start {
            // Its tasks fail with the reason, as every later one will.
            let why = e.clone_error().context("a pool worker could not start");
            for job in w
                .next
                .drain(..)
                .map(|a| a.job)
                .chain(w.current.take().map(|(j, _)| j))
            {
                job.slot.fail(broken_error(&why));
            }
        }
        // Sent ahead and not started (see `Worker::next`): they run
        // elsewhere, in their order. Started: the last is what the worker
        // was running when it died; `current` and the others finished, but
        // their reports were lost with it.
        let replace = !st.shutdown && st.broken.is_none();
        for job in w.take_back_ahead().into_iter().rev() {
            if replace {
                st.pending.push_front(job);
            } else {
                job.slot.cancel();
            }
        }
        let mut started: Vec<Job> = w.next.drain(..).map(|a| a.job).collect();
        if let Some(last) = started.pop() {
            last.slot.start();
            for done in w.current.take().map(|(j, _)| j).into_iter().chain(started) {
                done.slot.start();
                done.slot.fail(Error::new(
                    ErrorKind::ProcessDied,
                    format!(
                        "task {} finished, but worker {} (pid {}) died before its result was read",
                        done.id,
                        w.process.name(),
                        w.process.pid()
                    ),
                ));
            }
            w.current = Some((last, None));
        }
        if let Some((job, _)) = w.current {
            let e = match w.kill_reason {
                Some((id, e)) if id == job.id => e,
                other => Error::new(
                    ErrorKind::ProcessDied,
                    format!(
                        "task {} failed: worker {} (pid {}) died: {}{}",
                        job.id,
                        w.process.name(),
                        w.process.pid(),
                        w.process
                            .exit_status()
                            .map_or_else(|| "exit status unknown".to_owned(), describe_status),
                        other.map_or_else(String::new, |(_, why)| format!(
                            " (the pool killed it: {why})"
                        ))
                    ),
                ),
            };
            job.slot.fail(e);
        }
        if let Some(e) = failed_to_start {
            if st.broken.is_none() {
                break_pool(st, e.context("a pool worker could not start"));
            }
            continue;
        }
        if replace && st.early_deaths >= MAX_EARLY_DEATHS {
            break_pool(
                st,
                Error::new(
                    ErrorKind::ProcessDied,
                    format!(
                        "{MAX_EARLY_DEATHS} workers in a row died within {EARLY:?} of starting, \
                         before running anything (the last: {}); no more are started",
                        w.process
                            .exit_status()
                            .map_or_else(|| "exit status unknown".to_owned(), describe_status)
                    ),
                ),
            );
            continue;
        }
        if replace {
            match spawn_worker(shared, st, i) {
                Ok(nw) => st.workers[i] = Some(nw),
                Err(e) => {
                    break_pool(st, e.context("cannot replace a dead worker"));
                }
            }
        }
    }
}

/// Handles the results already queued (non-blocking), with the state lock held.
fn drop_lock_and_drain(shared: &Shared, st: &mut State, buf: &mut Vec<u8>) {
    while shared.results.try_get_bytes_into(buf).is_ok() {
        if let Ok(msg) = codec::decode::<FromWorker>(buf) {
            apply(st, msg);
        }
    }
}

/// When shutting down with nothing pending, stops idle workers. Returns
/// whether every worker has stopped.
fn stop_idle_if_shutting_down(st: &mut State) -> bool {
    if !(st.shutdown || st.broken.is_some()) || !st.pending.is_empty() {
        return false;
    }
    for w in st.workers.iter_mut().flatten() {
        if w.current.is_none() && !w.stopping {
            w.stopping = true;
            w.tasks.close();
        }
    }
    st.workers.iter().all(Option::is_none)
}

/// The pool's stats from its state (held locked by the caller).
fn stats_of(shared: &Shared, st: &State) -> super::PoolStats {
    use std::sync::atomic::Ordering::Relaxed;
    let workers: Vec<super::WorkerStats> = st
        .workers
        .iter()
        .flatten()
        .map(|w| super::WorkerStats {
            pid: Some(w.process.pid()),
            running: w.current.as_ref().map(|(job, _)| job.id),
        })
        .collect();
    let ahead = st
        .workers
        .iter()
        .flatten()
        .map(|w| w.next.len())
        .sum::<usize>();
    let c = &shared.counters;
    super::PoolStats {
        pending: st.pending.iter().filter(|j| j.slot.pending()).count() + ahead,
        running: workers.iter().filter(|w| w.running.is_some()).count(),
        // Ordering: counters only (Relaxed).
        completed: c.completed.load(Relaxed),
        failed: c.failed.load(Relaxed),
        cancelled: c.cancelled.load(Relaxed),
        workers,
    }
}

/// Refreshes the published counters.
fn publish(shared: &Shared, st: &State, board: &super::board::Board) {
    let s = stats_of(shared, st);
    let pids: Vec<u32> = s.workers.iter().filter_map(|w| w.pid).collect();
    board.update(&super::board::Snapshot {
        pending: s.pending as u64,
        running: s.running as u64,
        completed: s.completed,
        failed: s.failed,
        cancelled: s.cancelled,
        pids: &pids,
    });
}

impl ProcessPool {
    /// A pool of `n` worker processes.
    pub fn new(n: usize) -> Result<ProcessPool> {
        ProcessPool::builder().workers(n).build()
    }

    /// Options: worker count, name, initializer, `max_tasks_per_child`.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder {
            workers: None,
            name: "ipckit-pool".to_owned(),
            initializer: None,
            init_error: None,
            max_tasks: None,
            max_message: crate::codec::DEFAULT_MAX_MESSAGE,
            publish: None,
        }
    }

    fn enqueue<R: TaskValue>(
        &self,
        call: RemoteCall,
        arg: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<TaskHandle<R>> {
        let limit = self.shared.config.max_message;
        if arg.len().saturating_add(TASK_ENVELOPE) > limit {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "cannot submit: the argument encodes to {} bytes, over the pool's message \
                     limit of {limit} (ProcessPoolBuilder::max_message_size)",
                    arg.len()
                ),
            ));
        }
        let task = Task::<R>::counted(&self.shared.counters);
        let job = Job {
            id: task.id,
            call,
            arg,
            timeout,
            slot: task.clone(),
        };
        let mut st = lock(&self.shared.state);
        if let Some(why) = &st.broken {
            return Err(broken_error(why));
        }
        if st.shutdown {
            return Err(Error::new(
                ErrorKind::Closed,
                "cannot submit: the pool is shut down",
            ));
        }
        st.pending.push_back(job);
        let sends = dispatch(&mut st);
        drop(st);
        send_all(sends);
        // SYNC POINT "driving": nobody collects, so the collector must.
        if !self.shared.driving.load(Ordering::SeqCst) {
            self.shared.unpark_collector();
        }
        let shared = self.shared.clone();
        Ok(TaskHandle {
            task,
            cancel_hook: Some(Arc::new(move |id, running| cancel(&shared, id, running))),
            drive: Some(self.shared.clone()),
        })
    }

    /// Like [`submit`](Executor::submit), but if the task runs longer than
    /// `timeout` its worker is killed (and replaced) and the task fails with
    /// [`ErrorKind::Timeout`].
    pub fn submit_with_timeout<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        arg: A,
        timeout: Duration,
    ) -> Result<TaskHandle<R>> {
        self.enqueue(RemoteCall::new(f), codec::encode(&arg)?, Some(timeout))
    }

    /// Sends SIGTERM to every worker and shuts the pool down: running tasks
    /// fail, pending ones are cancelled.
    pub fn terminate_workers(&self) {
        self.stop_with(libc::SIGTERM);
    }

    /// Like [`terminate_workers`](Self::terminate_workers), with SIGKILL.
    pub fn kill_workers(&self) {
        self.stop_with(libc::SIGKILL);
    }

    fn stop_with(&self, signal: i32) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            for job in st.pending.drain(..) {
                job.slot.cancel();
            }
            for w in st.workers.iter_mut().flatten() {
                for job in w.take_back_ahead() {
                    job.slot.cancel();
                }
                w.stopping = true;
                let _ = if signal == libc::SIGKILL {
                    w.process.kill()
                } else {
                    w.process.terminate()
                };
            }
        }
        self.join_collector();
    }

    /// What the pool is doing: tasks pending and running, outcomes so far,
    /// and each worker's process and task.
    pub fn stats(&self) -> super::PoolStats {
        stats_of(&self.shared, &lock(&self.shared.state))
    }

    /// The pids of the current workers (for monitoring, or tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        lock(&self.shared.state)
            .workers
            .iter()
            .flatten()
            .map(|w| w.process.pid())
            .collect()
    }

    fn join_collector(&self) {
        let handle = self
            .collector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn cancel(shared: &Shared, id: u64, running: bool) -> bool {
    let mut st = lock(&shared.state);
    if let Some(pos) = st.pending.iter().position(|j| j.id == id) {
        let job = st.pending.remove(pos).expect("found");
        return job.slot.cancel();
    }
    // Sent ahead to a worker and not started: the worker will skip it.
    for w in st.workers.iter_mut().flatten() {
        if w.next.iter().any(|a| a.job.id == id) {
            return w.take_back(id).is_some_and(|job| job.slot.cancel());
        }
    }
    if !running {
        return false;
    }
    for w in st.workers.iter_mut().flatten() {
        let Some((job, _)) = &w.current else {
            continue;
        };
        if job.id == id && w.kill_reason.is_none() {
            let e = || {
                Error::new(
                    ErrorKind::Cancelled,
                    format!("task {id} was cancelled while running; its worker was killed"),
                )
            };
            // Complete the task now, so `cancelled()` holds when this
            // returns; the collector's later report of the death is ignored.
            job.slot.fail(e());
            w.kill_reason = Some((id, e()));
            let _ = w.process.kill();
            return true;
        }
    }
    false
}

impl Executor for ProcessPool {
    fn submit<A: TaskValue, R: TaskValue>(&self, f: fn(A) -> R, arg: A) -> Result<TaskHandle<R>> {
        self.enqueue(RemoteCall::new(f), codec::encode(&arg)?, None)
    }

    fn submit_chunk<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Result<TaskHandle<Vec<R>>> {
        self.enqueue(RemoteCall::chunked(f), codec::encode(&args)?, None)
    }

    fn workers(&self) -> usize {
        self.shared.config.size
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            if cancel_pending {
                for job in st.pending.drain(..) {
                    job.slot.cancel();
                }
                for w in st.workers.iter_mut().flatten() {
                    for job in w.take_back_ahead() {
                        job.slot.cancel();
                    }
                }
            }
        }
        self.shared.unpark_collector();
        if wait {
            self.join_collector();
        }
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}
