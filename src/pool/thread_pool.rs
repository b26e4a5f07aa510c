//! A pool of threads with the same interface as [`ProcessPool`](super::ProcessPool).

use std::collections::VecDeque;
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
/// Cancels a queued job's task; true if it was still pending.
type Canceller = Arc<dyn Fn() -> bool + Send + Sync>;

struct State {
    jobs: VecDeque<(u64, Job, Canceller)>,
    shutdown: bool,
    threads: Vec<JoinHandle<()>>,
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
                threads: Vec::new(),
                sleeping: 0,
            }),
            cv: Condvar::new(),
            pushed: AtomicU64::new(0),
            name: self.name,
            initializer: self.initializer,
            max_tasks: self.max_tasks,
        });
        for i in 0..workers {
            start_thread(&shared, i)?;
        }
        Ok(ThreadPool { shared, workers })
    }
}

fn start_thread(shared: &Arc<Shared>, i: usize) -> Result<()> {
    let s = shared.clone();
    let t = std::thread::Builder::new()
        .name(format!("{}-{i}", shared.name))
        .spawn(move || worker(s, i))
        .map_err(|e| Error::io("cannot start a pool thread", e))?;
    lock(&shared.state).threads.push(t);
    Ok(())
}

fn worker(shared: Arc<Shared>, i: usize) {
    if let Some(init) = &shared.initializer {
        init();
    }
    let mut done = 0usize;
    loop {
        let job = {
            let mut st = lock(&shared.state);
            loop {
                if let Some((_, job, _)) = st.jobs.pop_front() {
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
                if pushed || !st.jobs.is_empty() || st.shutdown {
                    continue;
                }
                st.sleeping += 1;
                st = shared.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleeping -= 1;
            }
        };
        let Some(job) = job else { return };
        job();
        done += 1;
        if shared.max_tasks.is_some_and(|m| done >= m) && !lock(&shared.state).shutdown {
            // Recycle: a fresh thread takes this one's place.
            let _ = start_thread(&shared, i);
            return;
        }
    }
}

fn panic_error(payload: Box<dyn std::any::Any + Send>) -> Error {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    };
    Error::new(ErrorKind::Panicked, format!("the task panicked: {message}"))
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

    fn enqueue<R: Send + 'static>(
        &self,
        run: impl FnOnce() -> Result<R> + Send + 'static,
        timeout: Option<Duration>,
    ) -> Result<TaskHandle<R>> {
        let task = Task::<R>::new();
        let t = task.clone();
        let job: Job = Box::new(move || {
            if t.start() {
                let r = std::panic::catch_unwind(AssertUnwindSafe(run))
                    .unwrap_or_else(|p| Err(panic_error(p)));
                t.complete(r);
            }
        });
        let mut st = lock(&self.shared.state);
        if st.shutdown {
            return Err(Error::new(
                ErrorKind::Closed,
                "cannot submit: the pool is shut down",
            ));
        }
        let c = task.clone();
        st.jobs
            .push_back((task.id, job, Arc::new(move || c.cancel())));
        // Ordering: Relaxed; only a hint to stop polling, the job itself
        // is published by the state lock the worker takes next.
        self.shared.pushed.fetch_add(1, Ordering::Relaxed);
        let sleeping = st.sleeping;
        drop(st);
        if sleeping > 0 {
            self.shared.cv.notify_one();
        }
        // A timeout too long to make a deadline of is never enforced.
        if let Some((timeout, deadline)) =
            timeout.and_then(|t| deadline_after(t).map(|deadline| (t, deadline)))
        {
            let t = task.clone();
            std::thread::spawn(move || {
                while !t.state().is_done() {
                    let now = Instant::now();
                    if now >= deadline {
                        t.complete(Err(Error::new(
                            ErrorKind::Timeout,
                            format!("task {} overran its timeout of {timeout:?}", t.id),
                        )));
                        return;
                    }
                    std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
                }
            });
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
                for (_, _, cancel) in st.jobs.drain(..) {
                    cancel();
                }
            }
            if wait {
                std::mem::take(&mut st.threads)
            } else {
                Vec::new()
            }
        };
        self.shared.cv.notify_all();
        for t in threads {
            let _ = t.join();
        }
        if wait {
            // Threads started by recycling after the take above.
            loop {
                let more = std::mem::take(&mut lock(&self.shared.state).threads);
                if more.is_empty() {
                    break;
                }
                for t in more {
                    let _ = t.join();
                }
            }
        }
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}
