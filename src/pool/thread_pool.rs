//! A pool of threads with the same interface as [`ProcessPool`](super::ProcessPool).

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::task::{Task, TaskHandle};
use super::{Executor, TaskValue};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::raw::Spinner;

type Job = Box<dyn FnOnce() + Send>;

/// A queued job's task, seen without its type.
trait Pending: Send + Sync {
    /// Cancels it; true if it was still pending.
    fn cancel(&self) -> bool;
    /// Fails it with `e` (the pool broke).
    fn fail(&self, e: Error);
}

impl<R: Send + 'static> Pending for Task<R> {
    fn cancel(&self) -> bool {
        Task::cancel(self)
    }
    fn fail(&self, e: Error) {
        self.complete(Err(e));
    }
}

struct State {
    jobs: VecDeque<(u64, Job, Arc<dyn Pending>)>,
    shutdown: bool,
    /// Why the pool is broken (an initializer panicked): every task fails
    /// with it, as in a `ProcessPool`.
    broken: Option<Error>,
    /// Each thread's handle, by its sequence number. A thread that retires
    /// (`max_tasks_per_child`) is joined by its successor.
    threads: HashMap<u64, JoinHandle<()>>,
    next_thread: u64,
    /// The task each thread runs now, by the thread's sequence number.
    running: HashMap<u64, u64>,
    /// Workers asleep on `Shared::cv` (std's notify is a system call even
    /// when nobody sleeps).
    sleeping: usize,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// Jobs ever pushed (bumped under the lock): an idle worker polls it
    /// for the wait policy's budget before it sleeps on `cv`.
    pushed: AtomicU64,
    name: String,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    max_tasks: Option<usize>,
    /// The one thread that enforces task timeouts, started with the first.
    timer: Mutex<Option<Arc<Timer>>>,
    counters: Arc<super::task::TaskCounters>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A pool of worker threads: Python's `ThreadPoolExecutor`, behind the same
/// [`Executor`] interface as [`ProcessPool`](super::ProcessPool).
///
/// A running thread cannot be stopped: a task submitted with a timeout fails
/// with [`ErrorKind::Timeout`] when it overruns, but its thread finishes the
/// call (and its result is dropped). Dropping the pool shuts it down and
/// waits for running tasks.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: usize,
}

impl fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPool")
            .field("name", &self.shared.name)
            .field("workers", &self.workers)
            .finish()
    }
}

/// Options for a [`ThreadPool`].
#[must_use]
pub struct ThreadPoolBuilder {
    workers: Option<usize>,
    name: String,
    initializer: Option<Arc<dyn Fn() + Send + Sync>>,
    max_tasks: Option<usize>,
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("workers", &self.workers)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ThreadPoolBuilder {
    /// The number of threads (default: the number of CPUs).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// A name prefix for the threads.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Runs `f(arg)` once in each thread before its first task.
    pub fn initializer<A: Clone + Send + Sync + 'static, R: 'static>(
        mut self,
        f: fn(A) -> R,
        arg: A,
    ) -> Self {
        self.initializer = Some(Arc::new(move || {
            let _ = f(arg.clone());
        }));
        self
    }

    /// Replaces a thread after it has run `n` tasks.
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks = Some(n.max(1));
        self
    }

    /// Starts the pool.
    pub fn build(self) -> Result<ThreadPool> {
        let workers = self
            .workers
            .unwrap_or_else(crate::process::cpu_count)
            .max(1);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                shutdown: false,
                broken: None,
                threads: HashMap::new(),
                next_thread: 0,
                running: HashMap::new(),
                sleeping: 0,
            }),
            cv: Condvar::new(),
            pushed: AtomicU64::new(0),
            name: self.name,
            initializer: self.initializer,
            max_tasks: self.max_tasks,
            timer: Mutex::new(None),
            counters: Arc::default(),
        });
        install_panic_hook();
        let pool = ThreadPool { shared, workers };
        for i in 0..workers {
            // On failure, dropping `pool` stops the threads already started.
            start_thread(&pool.shared, i, None)?;
        }
        Ok(pool)
    }
}

/// Starts worker thread `i`; `predecessor` is the retiring thread it
/// replaces, which it joins first.
fn start_thread(shared: &Arc<Shared>, i: usize, predecessor: Option<u64>) -> Result<()> {
    let s = shared.clone();
    // Spawned with the lock held, so the handle is in the map before the
    // thread (or a successor of it) can look for it.
    let mut st = lock(&shared.state);
    let seq = st.next_thread;
    st.next_thread += 1;
    let t = std::thread::Builder::new()
        .name(format!("{}-{i}", shared.name))
        .spawn(move || worker(s, i, seq, predecessor))
        .map_err(|e| Error::io("cannot start a pool thread", e))?;
    st.threads.insert(seq, t);
    Ok(())
}

thread_local! {
    /// Set while this thread runs a pool initializer or task: the panic
    /// hook then records where a panic happened, and prints nothing (the
    /// panic is the task's result, as in a `ProcessPool`).
    static IN_POOL_CALL: RefCell<Option<Option<String>>> = const { RefCell::new(None) };
}

/// Chains a panic hook that, for a panic inside a thread-pool initializer
/// or task, records its location (the message comes with the unwind; the
/// location only to a hook) and prints nothing; every other panic goes to
/// the previous hook. Installed once, when the first pool is built.
pub(crate) fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let ours = IN_POOL_CALL.with(|p| match p.borrow_mut().as_mut() {
                Some(at) => {
                    *at = info.location().map(|l| l.to_string());
                    true
                }
                None => false,
            });
            if !ours {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, catching a panic: its message and, from the hook, location.
pub(crate) fn call_catching<T>(
    f: impl FnOnce() -> T,
) -> std::result::Result<T, (String, Option<String>)> {
    IN_POOL_CALL.with(|p| *p.borrow_mut() = Some(None));
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(f));
    let location = IN_POOL_CALL.with(|p| p.borrow_mut().take()).flatten();
    outcome.map_err(|payload| (panic_message(&payload), location))
}

/// Runs the initializer; the error that breaks the pool if it panics.
fn run_initializer(init: &(dyn Fn() + Send + Sync)) -> Option<Error> {
    let (message, location) = call_catching(init).err()?;
    Some(Error::new(
        ErrorKind::Panicked,
        match location {
            Some(at) => format!("the initializer panicked at {at}: {message}"),
            None => format!("the initializer panicked: {message}"),
        },
    ))
}

/// Marks the pool broken by `why` and fails every queued task with it.
fn break_pool(shared: &Shared, why: Error) {
    let mut st = lock(&shared.state);
    if st.broken.is_some() {
        return;
    }
    for (_, _, task) in st.jobs.drain(..) {
        task.fail(broken_error(&why));
    }
    st.broken = Some(why);
    drop(st);
    shared.cv.notify_all();
}

fn broken_error(why: &Error) -> Error {
    why.clone_error().context("the thread pool is broken")
}

fn worker(shared: Arc<Shared>, i: usize, seq: u64, predecessor: Option<u64>) {
    if let Some(p) = predecessor {
        // It returns right after starting us: a short wait.
        let handle = lock(&shared.state).threads.remove(&p);
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
    if let Some(init) = &shared.initializer {
        if let Some(why) = run_initializer(init.as_ref()) {
            break_pool(&shared, why);
            return;
        }
    }
    let mut done = 0usize;
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if st.broken.is_some() {
                    break None;
                }
                if let Some((id, job, _)) = st.jobs.pop_front() {
                    st.running.insert(seq, id);
                    break Some(job);
                }
                if st.shutdown {
                    break None;
                }
                // Poll before sleeping: a submitter usually comes back
                // within microseconds, sooner than a sleep and wake-up.
                let seen = shared.pushed.load(Ordering::Relaxed);
                drop(st);
                let mut spinner = Spinner::new();
                let mut pushed = false;
                while spinner.spin() {
                    // Ordering: Relaxed; the lock taken next orders the job.
                    if shared.pushed.load(Ordering::Relaxed) != seen {
                        pushed = true;
                        break;
                    }
                }
                st = lock(&shared.state);
                if pushed || !st.jobs.is_empty() || st.shutdown || st.broken.is_some() {
                    continue;
                }
                st.sleeping += 1;
                st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleeping -= 1;
            }
        };
        let Some(job) = job else { return };
        job();
        lock(&shared.state).running.remove(&seq);
        done += 1;
        if shared.max_tasks.is_some_and(|m| done >= m) && !lock(&shared.state).shutdown {
            // Recycle: a fresh thread takes this one's place and joins this
            // one. If none can be started, this one goes on.
            if start_thread(&shared, i, Some(seq)).is_ok() {
                return;
            }
            done = 0;
        }
    }
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// A task's panic as its error, worded as a `ProcessPool`'s.
fn panic_error(id: u64, message: String, location: Option<String>) -> Error {
    let who = std::thread::current()
        .name()
        .map_or_else(|| "a pool thread".to_owned(), |n| format!("thread {n}"));
    Error::new(
        ErrorKind::Panicked,
        match location {
            Some(at) => format!("task {id} panicked in {who} at {at}: {message}"),
            None => format!("task {id} panicked in {who}: {message}"),
        },
    )
}

// -- task timeouts: one timer thread per pool --------------------------------

/// A task with a time limit, seen without its type: `expire` fails it with
/// `Timeout` unless it is done.
trait Timed: Send + Sync {
    fn expire(&self);
}

struct Expiring<R: Send + 'static> {
    task: Arc<Task<R>>,
    timeout: Duration,
}

impl<R: Send + 'static> Timed for Expiring<R> {
    fn expire(&self) {
        if !self.task.state().is_done() {
            self.task.complete(Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "task {} overran its timeout of {:?}",
                    self.task.id, self.timeout
                ),
            )));
        }
    }
}

#[derive(Default)]
struct TimerState {
    /// Deadlines, soonest first; the sequence number keeps equal deadlines
    /// apart (and `Arc<dyn Timed>` out of the ordering).
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    entries: HashMap<u64, Arc<dyn Timed>>,
    next: u64,
    stop: bool,
}

/// The thread that fails tasks which overrun their time limit: one per pool
/// however many tasks have limits.
struct Timer {
    state: Mutex<TimerState>,
    cv: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    fn start(name: &str) -> Result<Arc<Timer>> {
        let timer = Arc::new(Timer {
            state: Mutex::new(TimerState::default()),
            cv: Condvar::new(),
            thread: Mutex::new(None),
        });
        let t = timer.clone();
        let handle = std::thread::Builder::new()
            .name(format!("{name}-timer"))
            .spawn(move || t.run())
            .map_err(|e| Error::io("cannot start the pool's timer thread", e))?;
        *timer.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Ok(timer)
    }

    fn lock(&self) -> MutexGuard<'_, TimerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, deadline: Instant, what: Arc<dyn Timed>) {
        let mut st = self.lock();
        let n = st.next;
        st.next += 1;
        let sooner = st.due.peek().is_none_or(|Reverse((d, _))| deadline < *d);
        st.due.push(Reverse((deadline, n)));
        st.entries.insert(n, what);
        drop(st);
        if sooner {
            self.cv.notify_one();
        }
    }

    fn run(&self) {
        let mut st = self.lock();
        loop {
            let now = Instant::now();
            while let Some(Reverse((d, n))) = st.due.peek().copied() {
                if d > now {
                    break;
                }
                st.due.pop();
                if let Some(what) = st.entries.remove(&n) {
                    drop(st);
                    what.expire();
                    st = self.lock();
                }
            }
            if st.stop {
                return;
            }
            st = match st.due.peek() {
                Some(Reverse((d, _))) => {
                    let wait = d.saturating_duration_since(Instant::now());
                    self.cv
                        .wait_timeout(st, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self.cv.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
    }

    /// Stops the thread: limits not yet reached are dropped (their tasks
    /// finished, or were cancelled by the shutdown).
    fn stop(&self) {
        self.lock().stop = true;
        self.cv.notify_one();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl ThreadPool {
    /// A pool of `n` threads.
    pub fn new(n: usize) -> Result<ThreadPool> {
        ThreadPool::builder().workers(n).build()
    }

    /// Options: worker count, name, initializer, `max_tasks_per_child`.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            workers: None,
            name: "ipckit-thread-pool".to_owned(),
            initializer: None,
            max_tasks: None,
        }
    }

    /// What the pool is doing: tasks pending and running, outcomes so far,
    /// and each thread's task.
    pub fn stats(&self) -> super::PoolStats {
        use std::sync::atomic::Ordering::Relaxed;
        let st = lock(&self.shared.state);
        let mut seqs: Vec<u64> = st.threads.keys().copied().collect();
        seqs.sort_unstable();
        let workers: Vec<super::WorkerStats> = seqs
            .iter()
            .map(|seq| super::WorkerStats {
                pid: None,
                running: st.running.get(seq).copied(),
            })
            .collect();
        let c = &self.shared.counters;
        super::PoolStats {
            pending: st.jobs.len(),
            running: st.running.len(),
            // Ordering: counters only (Relaxed).
            completed: c.completed.load(Relaxed),
            failed: c.failed.load(Relaxed),
            cancelled: c.cancelled.load(Relaxed),
            workers,
        }
    }

    /// The pool's timer, started on first use.
    fn timer(&self) -> Result<Arc<Timer>> {
        let mut t = self.shared.timer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(timer) = &*t {
            return Ok(timer.clone());
        }
        let timer = Timer::start(&self.shared.name)?;
        *t = Some(timer.clone());
        Ok(timer)
    }

    fn enqueue<R: Send + 'static>(
        &self,
        run: impl FnOnce() -> Result<R> + Send + 'static,
        timeout: Option<Duration>,
    ) -> Result<TaskHandle<R>> {
        let task = Task::<R>::counted(&self.shared.counters);
        let t = task.clone();
        let job: Job = Box::new(move || {
            if t.start() {
                let id = t.id;
                let r = call_catching(run)
                    .unwrap_or_else(|(message, location)| Err(panic_error(id, message, location)));
                t.complete(r);
            }
        });
        // A timeout too long to make a deadline of is never enforced.
        let limit = timeout.and_then(|t| deadline_after(t).map(|deadline| (t, deadline)));
        let timer = match limit {
            Some(_) => Some(self.timer()?),
            None => None,
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
        st.jobs.push_back((task.id, job, task.clone()));
        // Ordering: Relaxed; only a hint to stop polling, the job itself
        // is published by the state lock the worker takes next.
        self.shared.pushed.fetch_add(1, Ordering::Relaxed);
        let sleeping = st.sleeping;
        drop(st);
        if sleeping > 0 {
            self.shared.cv.notify_one();
        }
        if let (Some((timeout, deadline)), Some(timer)) = (limit, timer) {
            timer.add(
                deadline,
                Arc::new(Expiring {
                    task: task.clone(),
                    timeout,
                }),
            );
        }
        let shared = self.shared.clone();
        let hook_task = task.clone();
        Ok(TaskHandle {
            task,
            cancel_hook: Some(Arc::new(move |id, _running| {
                let mut st = lock(&shared.state);
                st.jobs.retain(|(j, _, _)| *j != id);
                drop(st);
                hook_task.cancel()
            })),
            drive: None,
        })
    }

    /// Like [`submit`](Executor::submit), failing the task with a timeout
    /// error if it runs longer than `timeout` (the thread itself finishes).
    pub fn submit_with_timeout<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        arg: A,
        timeout: Duration,
    ) -> Result<TaskHandle<R>> {
        self.enqueue(move || Ok(f(arg)), Some(timeout))
    }
}

impl Executor for ThreadPool {
    fn submit<A: TaskValue, R: TaskValue>(&self, f: fn(A) -> R, arg: A) -> Result<TaskHandle<R>> {
        self.enqueue(move || Ok(f(arg)), None)
    }

    fn submit_chunk<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Result<TaskHandle<Vec<R>>> {
        self.enqueue(move || Ok(args.into_iter().map(f).collect()), None)
    }

    fn workers(&self) -> usize {
        self.workers
    }

    fn shutdown(&self, wait: bool, cancel_pending: bool) {
        let threads = {
            let mut st = lock(&self.shared.state);
            st.shutdown = true;
            if cancel_pending {
                for (_, _, task) in st.jobs.drain(..) {
                    task.cancel();
                }
            }
            if wait {
                std::mem::take(&mut st.threads)
            } else {
                HashMap::new()
            }
        };
        self.shared.cv.notify_all();
        for (_, t) in threads {
            let _ = t.join();
        }
        if wait {
            // Threads started by recycling after the take above.
            loop {
                let more = std::mem::take(&mut lock(&self.shared.state).threads);
                if more.is_empty() {
                    break;
                }
                for (_, t) in more {
                    let _ = t.join();
                }
            }
            let timer = self
                .shared
                .timer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(timer) = timer {
                timer.stop();
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}
