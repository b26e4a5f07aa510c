//! Pools of workers and futures: Python's `multiprocessing.Pool` and
//! `concurrent.futures`, with the same [`Executor`] interface for processes
//! ([`ProcessPool`]) and threads ([`ThreadPool`]).
//!
//! ```no_run
//! use ipckit::pool::{Executor, ProcessPool};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init();
//!     let pool = ProcessPool::new(4)?;
//!     let task = pool.submit(square, 7)?;          // a TaskHandle (a future)
//!     assert_eq!(task.result()?, 49);
//!     let squares: Vec<u64> = pool.map(square, 0..100).collect::<ipckit::Result<_>>()?;
//!     assert_eq!(squares[9], 81);
//!     Ok(())
//! }
//! ```
//!
//! # Python's futures loops
//!
//! `for f in as_completed(fs): f.result()` — results in the order they
//! finish, each with the index of its handle:
//!
//! ```
//! use ipckit::pool::{completed, Executor, ThreadPool};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! # fn main() -> ipckit::Result<()> {
//! let pool = ThreadPool::new(4)?;
//! let handles = (0..10).map(|x| pool.submit(square, x)).collect::<ipckit::Result<Vec<_>>>()?;
//! let mut total = 0;
//! for (i, result) in completed(handles) {
//!     let r = result?;
//!     assert_eq!(r, (i * i) as u64);
//!     total += r;
//! }
//! assert_eq!(total, 285);
//! # Ok(()) }
//! ```
//!
//! Keeping the handles (to cancel some, or to wait with a deadline), take
//! each result by index through `&mut` — [`TaskHandle::take_result`] — as
//! [`as_completed`] yields indices:
//!
//! ```
//! use std::time::Duration;
//! use ipckit::pool::{as_completed, wait, Executor, ReturnWhen, ThreadPool};
//!
//! fn square(x: u64) -> u64 { x * x }
//!
//! # fn main() -> ipckit::Result<()> {
//! let pool = ThreadPool::new(4)?;
//! let mut handles = (0..10).map(|x| pool.submit(square, x)).collect::<ipckit::Result<Vec<_>>>()?;
//! // concurrent.futures.wait(fs, timeout=5, return_when=ALL_COMPLETED)
//! let (done, not_done) = wait(&handles, Some(Duration::from_secs(5)), ReturnWhen::AllCompleted);
//! assert_eq!((done.len(), not_done.len()), (10, 0));
//! // for f in as_completed(fs, timeout=5): f.result()
//! for i in as_completed(&handles, Some(Duration::from_secs(5))) {
//!     let i = i?; // a timeout error if the time runs out
//!     assert_eq!(handles[i].take_result()?, (i * i) as u64);
//! }
//! # Ok(()) }
//! ```
//!
//! `wait` returns its two lists directly, as Python's does: running out of
//! time is one of its answers, not an error.
//!
//! # How big a task should be
//!
//! A task on a [`ProcessPool`] costs a round trip to a worker process —
//! about 8 µs here, against Python's ~400 µs (README, "Pools") — plus the
//! encoding of its argument and result; on a [`ThreadPool`] about 3 µs.
//! A pool pays off when each task's work is well above that: a 1 ms task on
//! a two-CPU machine gains at most 2×, and only once there are enough tasks
//! to keep both workers busy. For many tiny calls, send them in chunks
//! ([`MapOptions::chunksize`], one task per chunk), as Python's `Pool.map`
//! picks for you (its `chunksize` defaults to about len / (4 × workers);
//! ipckit's to 1). And measure real work: a loop the compiler can see
//! through is folded away (a sum of squares becomes a closed formula and
//! takes nanoseconds); [`std::hint::black_box`] keeps it honest:
//!
//! ```no_run
//! use std::hint::black_box;
//! use ipckit::pool::{Executor, MapOptions, ProcessPool};
//!
//! fn sum_squares(n: u64) -> u64 {
//!     (0..n).map(|i| black_box(i) * i).fold(0, u64::wrapping_add)
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init();
//!     let pool = ProcessPool::new(4)?;
//!     // Big tasks: one each.
//!     let big: Vec<u64> = pool.map(sum_squares, 3_000_000..3_000_030).collect::<ipckit::Result<_>>()?;
//!     // Many tiny ones: 1 000 per task.
//!     let opts = MapOptions { chunksize: 1_000, ..MapOptions::default() };
//!     let tiny: Vec<u64> = pool.map_with(sum_squares, 0..100_000, opts).collect::<ipckit::Result<_>>()?;
//!     assert_eq!((big.len(), tiny.len()), (30, 100_000));
//!     Ok(())
//! }
//! ```
//!
//! # Crashes
//!
//! A process worker that dies while running a task — SIGKILL, the OOM
//! killer, an abort — fails only that task, with [`ErrorKind::ProcessDied`]
//! naming the worker's exit status; the pool starts a replacement and goes
//! on. [`ProcessPool::submit_with_timeout`] kills and replaces a worker whose
//! task overruns; [`TaskHandle::cancel_running`] kills the worker running a
//! task. Nothing in a pool waits forever on a dead process.
//!
//! [`ErrorKind::ProcessDied`]: crate::ErrorKind::ProcessDied

mod board;
mod process_pool;
pub(crate) mod task;
pub(crate) mod thread_pool;
mod worker;

#[cfg(feature = "fuzzing")]
pub(crate) use worker::{FromWorker, ToWorker};

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub(crate) use board::{decode as decode_board, shared_span as board_span};
pub use process_pool::{ProcessPool, ProcessPoolBuilder};

/// A pool's activity now ([`ProcessPool::stats`], [`ThreadPool::stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks submitted and not started (including those sent ahead to a
    /// busy worker).
    pub pending: usize,
    /// Tasks running now.
    pub running: usize,
    /// Tasks that returned a value, since the pool started.
    pub completed: u64,
    /// Tasks that failed (panicked, died with their worker, timed out, or
    /// whose result could not be sent or decoded).
    pub failed: u64,
    /// Tasks cancelled, before or while running.
    pub cancelled: u64,
    /// Each worker: its process (none for a thread) and the task it runs.
    pub workers: Vec<WorkerStats>,
}

/// One worker of a pool, in [`PoolStats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerStats {
    /// The worker's process id (`None` for a `ThreadPool` thread).
    pub pid: Option<u32>,
    /// The id ([`TaskHandle::id`]) of the task it runs, if any.
    pub running: Option<u64>,
}
pub use task::{TaskEvent, TaskHandle, TaskState, Waitable};
pub use thread_pool::{ThreadPool, ThreadPoolBuilder};

use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use task::Listener;

/// A value that can be a task's argument or result: it crosses process
/// boundaries encoded with serde, and thread boundaries as it is.
pub trait TaskValue: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> TaskValue for T {}

/// What process and thread pools have in common: `concurrent.futures.Executor`.
///
/// Tasks are plain functions `fn(A) -> R` (closures that capture nothing
/// coerce to them): a process pool runs them in worker processes of this
/// same executable, a thread pool in threads.
pub trait Executor {
    /// Submits `f(arg)`; returns its handle at once.
    fn submit<A: TaskValue, R: TaskValue>(&self, f: fn(A) -> R, arg: A) -> Result<TaskHandle<R>>;

    /// Submits `f` over a chunk of arguments as one task.
    fn submit_chunk<A: TaskValue, R: TaskValue>(
        &self,
        f: fn(A) -> R,
        args: Vec<A>,
    ) -> Result<TaskHandle<Vec<R>>>;

    /// The number of workers.
    fn workers(&self) -> usize;

    /// Stops accepting tasks. With `cancel_pending`, tasks not yet started
    /// are cancelled; with `wait`, blocks until the running (and, without
    /// `cancel_pending`, the pending) tasks are done and the workers stopped.
    fn shutdown(&self, wait: bool, cancel_pending: bool);

    /// Runs `f(arg)` and waits for its result (Python's `apply`).
    fn apply<A: TaskValue, R: TaskValue>(&self, f: fn(A) -> R, arg: A) -> Result<R> {
        self.submit(f, arg)?.result()
    }

    /// Applies `f` to every argument; yields the results in input order,
    /// submitting lazily with a bounded number of tasks in flight
    /// ([`DEFAULT_BUFFER_PER_WORKER`] × workers; see [`map_with`](Self::map_with)).
    fn map<A, R, I>(&self, f: fn(A) -> R, args: I) -> Map<'_, Self, A, R, I::IntoIter>
    where
        Self: Sized,
        A: TaskValue,
        R: TaskValue,
        I: IntoIterator<Item = A>,
    {
        self.map_with(f, args, MapOptions::default())
    }

    /// [`map`](Self::map) with options: chunk size (arguments per task) and
    /// how many tasks may be in flight.
    fn map_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        args: I,
        options: MapOptions,
    ) -> Map<'_, Self, A, R, I::IntoIter>
    where
        Self: Sized,
        A: TaskValue,
        R: TaskValue,
        I: IntoIterator<Item = A>,
    {
        let in_flight = options
            .buffersize
            .unwrap_or(DEFAULT_BUFFER_PER_WORKER * self.workers())
            .max(1);
        Map {
            pool: self,
            f,
            args: args.into_iter(),
            chunksize: options.chunksize.max(1),
            in_flight,
            queue: VecDeque::new(),
            ready: VecDeque::new(),
            exhausted: false,
            delivered: 0,
            #[cfg(feature = "progress")]
            progress: None,
        }
    }

    /// Like [`map`](Self::map), but yields results as they complete, in any
    /// order.
    fn map_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        args: I,
    ) -> MapUnordered<'_, Self, A, R, I::IntoIter>
    where
        Self: Sized,
        A: TaskValue,
        R: TaskValue,
        I: IntoIterator<Item = A>,
    {
        MapUnordered {
            pool: self,
            f,
            args: args.into_iter(),
            in_flight: DEFAULT_BUFFER_PER_WORKER * self.workers().max(1),
            tasks: std::collections::HashMap::new(),
            submitted: 0,
            listener: Listener::new(),
            exhausted: false,
            #[cfg(feature = "progress")]
            progress: None,
        }
    }
}

/// Options for [`Executor::map_with`].
#[derive(Clone, Copy, Debug)]
pub struct MapOptions {
    /// Arguments sent to a worker per task (default 1). Larger chunks cut
    /// the per-task overhead for tiny functions.
    pub chunksize: usize,
    /// Tasks in flight at most (default [`DEFAULT_BUFFER_PER_WORKER`] ×
    /// workers), Python's `buffersize`. Each holds its argument and result
    /// until consumed; lower it for large ones.
    pub buffersize: Option<usize>,
}

impl Default for MapOptions {
    fn default() -> Self {
        MapOptions {
            chunksize: 1,
            buffersize: None,
        }
    }
}

enum Pending<R> {
    One(TaskHandle<R>),
    Chunk(TaskHandle<Vec<R>>, usize),
}

/// Tasks in flight per worker in [`Executor::map`] and
/// [`Executor::map_unordered`] by default: enough to keep the workers busy
/// while results travel back (measured: see the README, Performance →
/// Pools, and `docs/design-measurements.md`).
pub const DEFAULT_BUFFER_PER_WORKER: usize = 64;

/// The iterator [`Executor::map`] returns: results in input order.
pub struct Map<'p, P, A, R, I> {
    pool: &'p P,
    f: fn(A) -> R,
    args: I,
    chunksize: usize,
    in_flight: usize,
    queue: VecDeque<Pending<R>>,
    ready: VecDeque<Result<R>>,
    exhausted: bool,
    /// The input index of the next result handed out.
    delivered: usize,
    #[cfg(feature = "progress")]
    progress: Option<Progress>,
}

impl<P: Executor, A: TaskValue, R: TaskValue, I: Iterator<Item = A>> Map<'_, P, A, R, I> {
    fn refill(&mut self) {
        while !self.exhausted && self.queue.len() < self.in_flight {
            let chunk: Vec<A> = self.args.by_ref().take(self.chunksize).collect();
            if chunk.is_empty() {
                self.exhausted = true;
                break;
            }
            let n = chunk.len();
            let submitted = if self.chunksize == 1 {
                let a = chunk.into_iter().next().expect("one");
                self.pool.submit(self.f, a).map(Pending::One)
            } else {
                self.pool
                    .submit_chunk(self.f, chunk)
                    .map(|h| Pending::Chunk(h, n))
            };
            match submitted {
                Ok(p) => self.queue.push_back(p),
                Err(e) => {
                    // The pool is shut down: report it in order and stop.
                    for _ in 0..n {
                        self.ready.push_back(Err(e.clone_error()));
                    }
                    self.exhausted = true;
                }
            }
        }
    }
}

impl<P: Executor, A: TaskValue, R: TaskValue, I: Iterator<Item = A>> Iterator
    for Map<'_, P, A, R, I>
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                #[cfg(feature = "progress")]
                if let Some(p) = &mut self.progress {
                    p.tick();
                }
                let index = self.delivered;
                self.delivered += 1;
                // An error names the input it belongs to.
                return Some(r.map_err(|e| e.context(format!("map input {index}"))));
            }
            self.refill();
            let Some(next) = self.queue.pop_front() else {
                if !self.ready.is_empty() {
                    // A submit failed: its inputs' errors are ready.
                    continue;
                }
                #[cfg(feature = "progress")]
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
                return None;
            };
            match next {
                Pending::One(h) => self.ready.push_back(h.result()),
                Pending::Chunk(h, n) => match h.result() {
                    Ok(rs) => self.ready.extend(rs.into_iter().map(Ok)),
                    Err(e) => {
                        for _ in 0..n {
                            self.ready.push_back(Err(e.clone_error()));
                        }
                    }
                },
            }
            self.refill();
        }
    }
}

#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
impl<P, A, R, I: Iterator> Map<'_, P, A, R, I> {
    /// Shows a progress bar on stderr as results are consumed: count, rate
    /// and time left (feature `progress`; hidden when stderr is not a
    /// terminal). The total is the input's length as known before any task
    /// is submitted: its `size_hint` when exact (ranges, vectors, slices);
    /// otherwise a count and a rate.
    pub fn progress(mut self, label: &str) -> Self {
        let total = exact_len(&self.args).map(|n| n + self.ready.len());
        self.progress = Some(Progress::new(label, total));
        self
    }
}

#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
impl<P, A, R, I: Iterator> MapUnordered<'_, P, A, R, I> {
    /// Shows a progress bar on stderr as results come (see [`Map::progress`]).
    pub fn progress(mut self, label: &str) -> Self {
        let total = exact_len(&self.args).map(|n| n + self.tasks.len());
        self.progress = Some(Progress::new(label, total));
        self
    }
}

#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
impl<R> Completed<R> {
    /// Shows a progress bar on stderr as tasks complete (see [`Map::progress`]).
    pub fn progress(mut self, label: &str) -> Self {
        self.progress = Some(Progress::new(label, Some(self.remaining)));
        self
    }
}

#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
impl AsCompleted {
    /// Shows a progress bar on stderr as tasks complete (see [`Map::progress`]).
    pub fn progress(mut self, label: &str) -> Self {
        self.progress = Some(Progress::new(label, Some(self.remaining)));
        self
    }
}

#[cfg(feature = "progress")]
fn exact_len<I: Iterator>(i: &I) -> Option<usize> {
    match i.size_hint() {
        (low, Some(high)) if low == high => Some(low),
        _ => None,
    }
}

/// A progress bar on stderr, drawn by indicatif (feature `progress`):
/// label, bar, count, rate and time left; a spinner with count and rate
/// when the total is unknown. indicatif hides it when stderr is not a
/// terminal, and limits redraws to a few per second.
#[cfg(feature = "progress")]
struct Progress(indicatif::ProgressBar);

#[cfg(feature = "progress")]
impl Progress {
    fn new(label: &str, total: Option<usize>) -> Progress {
        use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{msg} [{bar:40}] {pos}/{len} {per_sec} ETA {eta} ({elapsed})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("#>-"),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{msg} {spinner} {pos} done, {per_sec} ({elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(label.to_owned());
        Progress(bar)
    }

    fn tick(&mut self) {
        self.0.inc(1);
    }

    fn finish(self) {
        self.0.finish();
    }
}

/// The iterator [`Executor::map_unordered`] returns: results as they complete.
pub struct MapUnordered<'p, P, A, R, I> {
    pool: &'p P,
    f: fn(A) -> R,
    args: I,
    in_flight: usize,
    /// The tasks in flight, by submission number (delivered ones removed).
    tasks: std::collections::HashMap<u64, TaskHandle<R>>,
    submitted: u64,
    listener: Arc<Listener>,
    exhausted: bool,
    #[cfg(feature = "progress")]
    progress: Option<Progress>,
}

impl<P: Executor, A: TaskValue, R: TaskValue, I: Iterator<Item = A>> Iterator
    for MapUnordered<'_, P, A, R, I>
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        while !self.exhausted && self.tasks.len() < self.in_flight {
            match self.args.next() {
                None => self.exhausted = true,
                Some(a) => match self.pool.submit(self.f, a) {
                    Ok(h) => {
                        h.add_listener(&self.listener, self.submitted);
                        self.tasks.insert(self.submitted, h);
                        self.submitted += 1;
                    }
                    Err(e) => {
                        self.exhausted = true;
                        return Some(Err(e));
                    }
                },
            }
        }
        if self.tasks.is_empty() {
            #[cfg(feature = "progress")]
            if let Some(p) = self.progress.take() {
                p.finish();
            }
            return None;
        }
        let index = {
            let mut fired = self
                .listener
                .fired
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            while fired.is_empty() {
                fired = self
                    .listener
                    .cv
                    .wait(fired)
                    .unwrap_or_else(|e| e.into_inner());
            }
            fired.pop_front().expect("not empty")
        };
        let h = self.tasks.remove(&index).expect("each task fires once");
        #[cfg(feature = "progress")]
        if let Some(p) = &mut self.progress {
            p.tick();
        }
        // An error names the input it belongs to.
        Some(
            h.result()
                .map_err(|e| e.context(format!("map input {index}"))),
        )
    }
}

/// Which tasks [`wait`] waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnWhen {
    /// Return as soon as any task is done.
    FirstCompleted,
    /// Return as soon as any task fails (or all are done).
    FirstException,
    /// Return when all tasks are done.
    AllCompleted,
}

impl<W: Waitable + ?Sized> Waitable for &W {
    fn add_listener(&self, l: &Arc<Listener>, index: u64) {
        (**self).add_listener(l, index)
    }
    fn snapshot(&self) -> (TaskState, Option<ErrorKind>) {
        (**self).snapshot()
    }
}

/// Waits until the condition `when` holds for `tasks`, or `timeout` passes.
/// Returns the indices of the tasks that are done and of those that are not
/// (Python's `concurrent.futures.wait`).
pub fn wait<W: Waitable>(
    tasks: &[W],
    timeout: Option<Duration>,
    when: ReturnWhen,
) -> (Vec<usize>, Vec<usize>) {
    // A timeout too long to make a deadline of means no timeout.
    let deadline = timeout.and_then(deadline_after);
    let listener = Listener::new();
    for (i, t) in tasks.iter().enumerate() {
        t.add_listener(&listener, i as u64);
    }
    loop {
        let (mut done, mut not_done) = (Vec::new(), Vec::new());
        let mut failed = false;
        for (i, t) in tasks.iter().enumerate() {
            let (state, err) = t.snapshot();
            if state.is_done() {
                failed |= err.is_some() && state == TaskState::Failed;
                done.push(i);
            } else {
                not_done.push(i);
            }
        }
        let satisfied = match when {
            ReturnWhen::FirstCompleted => !done.is_empty(),
            ReturnWhen::FirstException => failed || not_done.is_empty(),
            ReturnWhen::AllCompleted => not_done.is_empty(),
        };
        if satisfied || tasks.is_empty() {
            return (done, not_done);
        }
        let mut fired = listener.fired.lock().unwrap_or_else(|e| e.into_inner());
        if fired.is_empty() {
            match deadline {
                None => fired = listener.cv.wait(fired).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return (done, not_done);
                    }
                    fired = listener
                        .cv
                        .wait_timeout(fired, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        fired.clear();
    }
}

/// Yields each task's index and result in the order the tasks complete,
/// taking the handles: Python's `for f in as_completed(fs): f.result()`.
/// See the [module docs](self) for the loop, and [`as_completed`] to keep
/// the handles or set a deadline.
pub fn completed<R>(handles: impl IntoIterator<Item = TaskHandle<R>>) -> Completed<R> {
    let handles: Vec<Option<TaskHandle<R>>> = handles.into_iter().map(Some).collect();
    let listener = Listener::new();
    for (i, h) in handles.iter().enumerate() {
        if let Some(h) = h {
            h.add_listener(&listener, i as u64);
        }
    }
    Completed {
        remaining: handles.len(),
        handles,
        listener,
        #[cfg(feature = "progress")]
        progress: None,
    }
}

/// The iterator [`completed`] returns.
pub struct Completed<R> {
    handles: Vec<Option<TaskHandle<R>>>,
    /// Handles not yet yielded.
    remaining: usize,
    listener: Arc<Listener>,
    #[cfg(feature = "progress")]
    progress: Option<Progress>,
}

impl<R> Iterator for Completed<R> {
    type Item = (usize, Result<R>);

    fn next(&mut self) -> Option<(usize, Result<R>)> {
        loop {
            if self.remaining == 0 {
                #[cfg(feature = "progress")]
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
                return None;
            }
            let index = {
                let mut fired = self
                    .listener
                    .fired
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                loop {
                    if let Some(i) = fired.pop_front() {
                        break i as usize;
                    }
                    fired = self
                        .listener
                        .cv
                        .wait(fired)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            if let Some(h) = self.handles.get_mut(index).and_then(Option::take) {
                self.remaining -= 1;
                #[cfg(feature = "progress")]
                if let Some(p) = &mut self.progress {
                    p.tick();
                }
                return Some((index, h.result()));
            }
        }
    }
}

/// Yields the indices of `tasks` as they complete (Python's
/// `as_completed`). If `timeout` passes first, yields one timeout error and
/// stops.
pub fn as_completed<W: Waitable>(tasks: &[W], timeout: Option<Duration>) -> AsCompleted {
    let listener = Listener::new();
    for (i, t) in tasks.iter().enumerate() {
        t.add_listener(&listener, i as u64);
    }
    AsCompleted {
        listener,
        remaining: tasks.len(),
        deadline: timeout.and_then(deadline_after),
        timed_out: false,
        #[cfg(feature = "progress")]
        progress: None,
    }
}

/// The iterator [`as_completed`] returns.
pub struct AsCompleted {
    listener: Arc<Listener>,
    remaining: usize,
    deadline: Option<Instant>,
    timed_out: bool,
    #[cfg(feature = "progress")]
    progress: Option<Progress>,
}

impl Iterator for AsCompleted {
    type Item = Result<usize>;

    fn next(&mut self) -> Option<Result<usize>> {
        if self.remaining == 0 || self.timed_out {
            return None;
        }
        let mut fired = self
            .listener
            .fired
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        while fired.is_empty() {
            match self.deadline {
                None => {
                    fired = self
                        .listener
                        .cv
                        .wait(fired)
                        .unwrap_or_else(|e| e.into_inner())
                }
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        self.timed_out = true;
                        return Some(Err(Error::new(
                            ErrorKind::Timeout,
                            format!("{} tasks did not complete in time", self.remaining),
                        )));
                    }
                    fired = self
                        .listener
                        .cv
                        .wait_timeout(fired, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
        }
        self.remaining -= 1;
        #[cfg(feature = "progress")]
        if let Some(p) = &mut self.progress {
            p.tick();
            if self.remaining == 0 {
                if let Some(p) = self.progress.take() {
                    p.finish();
                }
            }
        }
        Some(Ok(fired.pop_front().expect("not empty") as usize))
    }
}
