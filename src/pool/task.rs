//! Task handles (futures): the state a submitted task goes through, shared
//! between the submitter and the pool.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::sync::raw::deadline_passed;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Submitted, not yet given to a worker.
    Pending,
    /// A worker is running it.
    Running,
    /// It returned a value.
    Finished,
    /// It failed: panicked, its worker died, it timed out, or it was
    /// cancelled while running.
    Failed,
    /// It was cancelled: before it started, or while running by
    /// [`TaskHandle::cancel_running`] (which kills its worker).
    Cancelled,
}

impl TaskState {
    /// Whether the task is over (finished, failed or cancelled).
    pub fn is_done(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// What a done-callback is told.
#[derive(Clone, Debug)]
pub struct TaskEvent {
    /// The task's id within its pool.
    pub id: u64,
    /// How it ended.
    pub state: TaskState,
    /// Its error, if it failed.
    pub error: Option<ErrorKind>,
}

type Callback = Box<dyn FnOnce(&TaskEvent) + Send>;

/// Something waiting for any of several tasks (`wait`, `as_completed`).
#[doc(hidden)]
pub struct Listener {
    pub(crate) fired: Mutex<std::collections::VecDeque<u64>>,
    pub(crate) cv: Condvar,
}

impl Listener {
    pub(crate) fn new() -> Arc<Listener> {
        Arc::new(Listener {
            fired: Mutex::new(std::collections::VecDeque::new()),
            cv: Condvar::new(),
        })
    }
}

struct Inner<R> {
    state: TaskState,
    result: Option<Result<R>>,
    error_kind: Option<ErrorKind>,
    error_text: Option<String>,
    taken: bool,
    callbacks: Vec<Callback>,
    wakers: Vec<Waker>,
    listeners: Vec<(Weak<Listener>, u64)>,
    /// Threads asleep on `Task::cv` (std's `notify_all` is a system call
    /// even when nobody sleeps).
    sleepers: usize,
}

/// Outcomes counted for a pool's [`stats`](super::ProcessPool::stats).
#[derive(Default)]
pub(crate) struct TaskCounters {
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) cancelled: AtomicU64,
}

/// The shared part of a task.
pub(crate) struct Task<R> {
    pub(crate) id: u64,
    counters: Option<Arc<TaskCounters>>,
    inner: Mutex<Inner<R>>,
    cv: Condvar,
    /// Set (Release) once the state is done, under `inner`'s lock: a
    /// waiter polls it before sleeping on `cv`.
    done: AtomicBool,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl<R> Task<R> {
    /// A task counted nowhere (the unit tests').
    #[cfg(test)]
    pub(crate) fn new() -> Arc<Task<R>> {
        Self::make(None)
    }

    /// A task whose outcome is counted in `counters` (its pool's).
    pub(crate) fn counted(counters: &Arc<TaskCounters>) -> Arc<Task<R>> {
        Self::make(Some(counters.clone()))
    }

    fn make(counters: Option<Arc<TaskCounters>>) -> Arc<Task<R>> {
        Arc::new(Task {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            counters,
            inner: Mutex::new(Inner {
                state: TaskState::Pending,
                result: None,
                error_kind: None,
                error_text: None,
                taken: false,
                callbacks: Vec::new(),
                wakers: Vec::new(),
                listeners: Vec::new(),
                sleepers: 0,
            }),
            cv: Condvar::new(),
            done: AtomicBool::new(false),
        })
    }

    pub(crate) fn state(&self) -> TaskState {
        lock(&self.inner).state
    }

    /// Pending → Running; false if the task is no longer pending (cancelled).
    pub(crate) fn start(&self) -> bool {
        let mut i = lock(&self.inner);
        if i.state == TaskState::Pending {
            i.state = TaskState::Running;
            true
        } else {
            false
        }
    }

    /// Pending → Cancelled; true if it was pending.
    pub(crate) fn cancel(&self) -> bool {
        let mut i = lock(&self.inner);
        if i.state != TaskState::Pending {
            return false;
        }
        i.state = TaskState::Cancelled;
        i.error_kind = Some(ErrorKind::Cancelled);
        i.error_text = Some(format!("task {} was cancelled", self.id));
        self.finish(i);
        true
    }

    /// Records the outcome (once; later calls are ignored).
    pub(crate) fn complete(&self, result: Result<R>) {
        let i = lock(&self.inner);
        self.complete_locked(i, result);
    }

    /// Records the outcome unless a done-callback is registered (user code,
    /// which must not run on the calling thread): then hands the result
    /// back. A callback added later runs at once on its adder's thread.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn complete_unless_callbacks(
        &self,
        result: Result<R>,
    ) -> std::result::Result<(), Result<R>> {
        let i = lock(&self.inner);
        if !i.callbacks.is_empty() && !i.state.is_done() {
            return Err(result);
        }
        self.complete_locked(i, result);
        Ok(())
    }

    fn complete_locked(&self, mut i: MutexGuard<'_, Inner<R>>, result: Result<R>) {
        if i.state.is_done() {
            return;
        }
        match &result {
            Ok(_) => i.state = TaskState::Finished,
            Err(e) => {
                // A running task stopped by `cancel_running` counts as cancelled.
                i.state = if e.kind() == ErrorKind::Cancelled {
                    TaskState::Cancelled
                } else {
                    TaskState::Failed
                };
                i.error_kind = Some(e.kind());
                i.error_text = Some(e.to_string());
            }
        }
        i.result = Some(result);
        self.finish(i);
    }

    /// Wakes everyone waiting on the task and runs its callbacks, outside the lock.
    fn finish(&self, mut i: MutexGuard<'_, Inner<R>>) {
        if let Some(c) = &self.counters {
            let n = match i.state {
                TaskState::Finished => &c.completed,
                TaskState::Cancelled => &c.cancelled,
                _ => &c.failed,
            };
            // Ordering: counters only (Relaxed).
            n.fetch_add(1, Ordering::Relaxed);
        }
        let callbacks = std::mem::take(&mut i.callbacks);
        let wakers = std::mem::take(&mut i.wakers);
        let listeners = std::mem::take(&mut i.listeners);
        let event = TaskEvent {
            id: self.id,
            state: i.state,
            error: i.error_kind,
        };
        // Ordering: Release, read with Acquire by `wait_done`'s poll; the
        // lock taken after the poll orders the rest.
        self.done.store(true, Ordering::Release);
        let sleepers = i.sleepers;
        drop(i);
        if sleepers > 0 {
            self.cv.notify_all();
        }
        for w in wakers {
            w.wake();
        }
        for (l, index) in listeners {
            if let Some(l) = l.upgrade() {
                lock(&l.fired).push_back(index);
                l.cv.notify_all();
            }
        }
        for cb in callbacks {
            cb(&event);
        }
    }

    fn wait_done(
        &self,
        deadline: Option<Instant>,
        drive: Option<&dyn Drive>,
    ) -> Result<MutexGuard<'_, Inner<R>>> {
        let done = || self.done.load(Ordering::Acquire);
        // Collect results ourselves if the pool lets us (`Drive`); else, or
        // if another thread collects, poll with the crate's wait policy: a
        // result usually comes from a worker on another CPU within
        // microseconds, far sooner than a sleep on `cv` and its wake-up.
        if !done() && !drive.is_some_and(|d| d.drive(&done, deadline)) {
            let mut spinner = crate::sync::raw::Spinner::new();
            while spinner.spin() {
                if done() || deadline_passed(deadline) {
                    break;
                }
            }
        }
        let mut i = lock(&self.inner);
        while !i.state.is_done() {
            i.sleepers += 1;
            match deadline {
                None => i = self.cv.wait(i).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        i.sleepers -= 1;
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("timed out waiting for task {}", self.id),
                        ));
                    }
                    i = self
                        .cv
                        .wait_timeout(i, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
            }
            i.sleepers -= 1;
        }
        Ok(i)
    }

    fn take(&self, mut i: MutexGuard<'_, Inner<R>>) -> Result<R> {
        if i.state == TaskState::Cancelled {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!("task {} was cancelled", self.id),
            ));
        }
        if i.taken {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!("the result of task {} was already taken", self.id),
            ));
        }
        i.taken = true;
        i.result
            .take()
            .expect("a finished or failed task has a result")
    }

    pub(crate) fn add_listener(&self, l: &Arc<Listener>, index: u64) {
        let mut i = lock(&self.inner);
        if i.state.is_done() {
            drop(i);
            lock(&l.fired).push_back(index);
            l.cv.notify_all();
        } else {
            // Listeners of waits that ended (a `wait` with a timeout, an
            // `as_completed` dropped early) are dropped here, so repeated
            // polling of a long task keeps one entry per live waiter, not
            // one per call.
            i.listeners.retain(|(w, _)| w.strong_count() > 0);
            i.listeners.push((Arc::downgrade(l), index));
        }
    }

    fn error_now(&self) -> Option<Error> {
        let i = lock(&self.inner);
        match (i.error_kind, &i.error_text) {
            (Some(kind), Some(text)) => Some(Error::new(kind, text.clone())),
            _ => None,
        }
    }
}

/// The pool's way to cancel a task: `(task id, even if running) -> cancelled`.
pub(crate) type CancelHook = Arc<dyn Fn(u64, bool) -> bool + Send + Sync>;

/// A pool whose threads waiting for a result may do its collector's work
/// meanwhile, so that a result a worker sends reaches the waiter with no
/// thread hand-off in between (one wake-up, or none when the waiter polls,
/// instead of the collector's and then the waiter's).
pub(crate) trait Drive: Send + Sync {
    /// Collects results on this thread until `done()` holds or `deadline`
    /// passes; `false` at once if another thread is collecting.
    fn drive(&self, done: &dyn Fn() -> bool, deadline: Option<Instant>) -> bool;
}

/// A submitted task: Python's `concurrent.futures.Future`.
///
/// It is also a [`Future`]: `handle.await` yields the task's result in any
/// async runtime (ipckit depends on none). The result can be taken once, by
/// `result`, `result_timeout` or `await`.
pub struct TaskHandle<R> {
    pub(crate) task: Arc<Task<R>>,
    pub(crate) cancel_hook: Option<CancelHook>,
    pub(crate) drive: Option<Arc<dyn Drive>>,
}

impl<R> fmt::Debug for TaskHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("id", &self.task.id)
            .field("state", &self.task.state())
            .finish()
    }
}

impl<R> TaskHandle<R> {
    /// The task's id within its process.
    pub fn id(&self) -> u64 {
        self.task.id
    }

    /// Where the task is now.
    pub fn state(&self) -> TaskState {
        self.task.state()
    }

    /// Blocks until the task is done and returns its value, or its error:
    /// [`ErrorKind::Panicked`] with the panic's message, [`ErrorKind::ProcessDied`]
    /// with the worker's exit status, [`ErrorKind::Timeout`] for a task
    /// submitted with a timeout that overran, [`ErrorKind::Cancelled`].
    pub fn result(self) -> Result<R> {
        let i = self.task.wait_done(None, self.drive.as_deref())?;
        self.task.take(i)
    }

    /// Like [`result`](Self::result), through `&mut self`, for handles kept
    /// in a `Vec` and taken by index (`handles[i].take_result()?` in an
    /// [`as_completed`](super::as_completed) loop). The result can be taken
    /// once; a second call is an error.
    pub fn take_result(&mut self) -> Result<R> {
        let i = self.task.wait_done(None, self.drive.as_deref())?;
        self.task.take(i)
    }

    /// Like [`result`](Self::result), waiting at most `timeout`; on timeout
    /// the task goes on and the handle stays usable.
    pub fn result_timeout(&mut self, timeout: Duration) -> Result<R> {
        let i = self
            .task
            .wait_done(deadline_after(timeout), self.drive.as_deref())?;
        self.task.take(i)
    }

    /// Blocks until the task is done; returns its error if it failed or was
    /// cancelled (Python's `exception()`).
    pub fn error(&self) -> Option<Error> {
        drop(self.task.wait_done(None, self.drive.as_deref()));
        self.task.error_now()
    }

    /// Like [`error`](Self::error), waiting at most `timeout` (a timeout
    /// error if the task is still going).
    pub fn error_timeout(&self, timeout: Duration) -> Result<Option<Error>> {
        drop(
            self.task
                .wait_done(deadline_after(timeout), self.drive.as_deref())?,
        );
        Ok(self.task.error_now())
    }

    /// Cancels the task if it has not started; true if it was cancelled.
    pub fn cancel(&self) -> bool {
        match &self.cancel_hook {
            Some(hook) => hook(self.task.id, false),
            None => self.task.cancel(),
        }
    }

    /// Beyond Python: stops the task even if it is running, by killing the
    /// worker process running it (the pool replaces the worker). The task
    /// fails with [`ErrorKind::Cancelled`]. True if the task was stopped.
    /// Thread pools cannot stop a running thread: for them this is `cancel`.
    pub fn cancel_running(&self) -> bool {
        match &self.cancel_hook {
            Some(hook) => hook(self.task.id, true),
            None => self.task.cancel(),
        }
    }

    /// Whether the task was cancelled: before it started ([`cancel`](Self::cancel)),
    /// or while running ([`cancel_running`](Self::cancel_running)).
    pub fn cancelled(&self) -> bool {
        self.state() == TaskState::Cancelled
    }

    /// Whether a worker is running the task.
    pub fn running(&self) -> bool {
        self.state() == TaskState::Running
    }

    /// Whether the task is over (finished, failed or cancelled).
    pub fn done(&self) -> bool {
        self.state().is_done()
    }

    /// Runs `f` once when the task is done — at once, on this thread, if it
    /// already is; otherwise on the thread that completes it: the pool's
    /// collector, a pool thread, or (in a `ProcessPool`) any thread that is
    /// waiting in [`result`](Self::result) and collects results meanwhile.
    /// Keep it short; a callback that blocks delays other results.
    pub fn add_done_callback(&self, f: impl FnOnce(&TaskEvent) + Send + 'static) {
        let mut i = lock(&self.task.inner);
        if i.state.is_done() {
            let event = TaskEvent {
                id: self.task.id,
                state: i.state,
                error: i.error_kind,
            };
            drop(i);
            f(&event);
        } else {
            i.callbacks.push(Box::new(f));
        }
    }
}

impl<R> Future for TaskHandle<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let mut i = lock(&self.task.inner);
        if i.state.is_done() {
            return Poll::Ready(self.task.take(i));
        }
        if !i.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            i.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Anything `wait` and `as_completed` can watch.
pub trait Waitable {
    #[doc(hidden)]
    fn add_listener(&self, l: &Arc<Listener>, index: u64);
    #[doc(hidden)]
    fn snapshot(&self) -> (TaskState, Option<ErrorKind>);
}

impl<R> Waitable for TaskHandle<R> {
    fn add_listener(&self, l: &Arc<Listener>, index: u64) {
        self.task.add_listener(l, index);
    }
    fn snapshot(&self) -> (TaskState, Option<ErrorKind>) {
        let i = lock(&self.task.inner);
        (i.state, i.error_kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn lifecycle_and_callbacks() {
        let t = Task::<u32>::new();
        let h = TaskHandle {
            task: t.clone(),
            cancel_hook: None,
            drive: None,
        };
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        h.add_done_callback(move |e| {
            assert_eq!(e.state, TaskState::Finished);
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(h.state(), TaskState::Pending);
        assert!(t.start());
        assert!(h.running());
        assert!(!h.cancel(), "a running task is not cancelled");
        t.complete(Ok(5));
        t.complete(Ok(6)); // ignored
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let c = calls.clone();
        h.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2, "runs at once when done");
        assert!(h.error().is_none());
        assert_eq!(h.result().unwrap(), 5);
    }

    #[test]
    fn cancel_and_timeouts() {
        let t = Task::<u32>::new();
        let mut h = TaskHandle {
            task: t.clone(),
            cancel_hook: None,
            drive: None,
        };
        let start = Instant::now();
        assert!(
            h.result_timeout(Duration::from_millis(20))
                .unwrap_err()
                .is_timeout()
        );
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(h.cancel());
        assert!(h.cancelled());
        assert!(!t.start());
        assert_eq!(h.error().unwrap().kind(), ErrorKind::Cancelled);
        assert_eq!(h.result().unwrap_err().kind(), ErrorKind::Cancelled);
    }
}
