//! A `JoinableQueue` on a JetStream work-queue stream.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connect::{Cluster, Shared};
use super::{check_name, nats_error};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};

/// How long a taken item may go without `task_done` (or
/// [`Job::in_progress`]) before it is given to another consumer.
const ACK_WAIT: Duration = Duration::from_secs(30);

/// Python's `multiprocessing.JoinableQueue` for many machines: items of
/// type `T` in the JetStream stream `IPCKIT_Q_<name>` (file storage), taken
/// by any number of consumers anywhere, each item by one.
///
/// [`get`](Self::get) returns a [`Job`]: the item stays in the stream until
/// [`Job::task_done`] acknowledges it, so an item whose consumer dies is
/// given to another one (after 30 s without `task_done` or
/// [`Job::in_progress`]): delivery is at least once. A `Job` dropped without
/// `task_done` goes back at once. [`join`](Self::join) waits until every
/// item put has been taken and acknowledged.
///
/// ```no_run
/// # fn main() -> ipckit::Result<()> {
/// use ipckit::cluster::{Cluster, Connect};
/// let cluster = Cluster::connect(&Connect::new("nats://127.0.0.1:4222"))?;
/// let q = cluster.queue::<String>("jobs")?;
/// q.put(&"resize photo 1".to_owned())?;
/// let job = q.get()?;
/// println!("{}", job.value());
/// job.task_done()?;
/// q.join()?;
/// # Ok(())
/// # }
/// ```
pub struct ClusterQueue<T> {
    shared: Arc<Shared>,
    name: String,
    stream: String,
    subject: String,
    consumer: jetstream::consumer::PullConsumer,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for ClusterQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterQueue")
            .field("name", &self.name)
            .finish()
    }
}

/// An item taken from a [`ClusterQueue`]; acknowledge it with
/// [`task_done`](Self::task_done).
pub struct Job<T> {
    value: T,
    attempt: u32,
    ack: Unacked,
}

/// A job's message until it is acknowledged; dropped unacknowledged, it
/// goes back to the stream (a nak). Apart from [`Job`] so that
/// [`Job::into_value`] can move the value out.
struct Unacked {
    message: Option<jetstream::Message>,
    shared: Arc<Shared>,
}

impl Unacked {
    /// Acknowledges the message, waiting for the server to confirm.
    fn done(mut self) -> Result<()> {
        let m = self.message.take().expect("a job is acknowledged once");
        self.shared
            .rt
            .block_on(m.double_ack())
            .map_err(|e| nats_error("cannot acknowledge a queue item", e))
    }
}

impl<T: fmt::Debug> fmt::Debug for Job<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("value", &self.value)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl<T> Job<T> {
    /// The item.
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Which delivery of the item this is: 1 the first time, more if a
    /// consumer took it before and did not call `task_done`.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Tells the stream the item is still being worked on: its 30 s
    /// redelivery clock starts again.
    pub fn in_progress(&self) -> Result<()> {
        let Some(m) = &self.ack.message else {
            return Ok(());
        };
        self.ack
            .shared
            .rt
            .block_on(m.ack_with(AckKind::Progress))
            .map_err(|e| nats_error("cannot report progress on a queue item", e))
    }

    /// Acknowledges the item (Python's `task_done`): it leaves the stream,
    /// and [`ClusterQueue::join`] no longer waits for it. Waits for the
    /// server to confirm, so an item acknowledged is never redelivered.
    pub fn task_done(self) -> Result<()> {
        self.ack.done()
    }

    /// Takes the item out of the job, acknowledging it.
    pub fn into_value(self) -> Result<T> {
        let Job { value, ack, .. } = self;
        ack.done()?;
        Ok(value)
    }
}

impl Drop for Unacked {
    fn drop(&mut self) {
        if let Some(m) = self.message.take() {
            // Not done: back to the stream at once for another consumer.
            let _ = self.shared.rt.block_on(m.ack_with(AckKind::Nak(None)));
        }
    }
}

impl<T: Serialize + DeserializeOwned> ClusterQueue<T> {
    pub(crate) fn open(cluster: &Cluster, name: &str) -> Result<ClusterQueue<T>> {
        check_name("queue", name)?;
        let stream = format!("IPCKIT_Q_{name}");
        let subject = format!("ipckit.q.{name}");
        let js = cluster.shared.js.clone();
        let replicas = cluster.shared.replicas;
        let (s, subj) = (stream.clone(), subject.clone());
        let consumer = cluster
            .shared
            .rt
            .block_on(async move {
                let st = js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: s.clone(),
                        subjects: vec![subj],
                        retention: jetstream::stream::RetentionPolicy::WorkQueue,
                        storage: jetstream::stream::StorageType::File,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                st.get_or_create_consumer(
                    "getters",
                    pull::Config {
                        durable_name: Some("getters".into()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: ACK_WAIT,
                        max_ack_pending: -1,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| e.to_string())
            })
            .map_err(|e| nats_error(format!("cannot open the queue {name:?}"), e))?;
        Ok(ClusterQueue {
            shared: cluster.shared.clone(),
            name: name.to_owned(),
            stream,
            subject,
            consumer,
            _item: PhantomData,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Puts `item`; returns once the server has stored it.
    pub fn put(&self, item: &T) -> Result<()> {
        let bytes = crate::codec::encode(item)?;
        self.shared.check_payload("an item", bytes.len())?;
        let js = self.shared.js.clone();
        let subject = self.subject.clone();
        self.shared
            .rt
            .block_on(async move {
                js.publish(subject, bytes.into())
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| nats_error(format!("cannot put to the queue {:?}", self.name), e))?;
        Ok(())
    }

    /// Takes the next item, waiting as long as it takes.
    pub fn get(&self) -> Result<Job<T>> {
        self.get_until(None)
    }

    /// Takes the next item, waiting at most `timeout` (then a
    /// [`ErrorKind::Timeout`] error).
    pub fn get_timeout(&self, timeout: Duration) -> Result<Job<T>> {
        self.get_until(deadline_after(timeout))
    }

    /// Takes an item if one is ready now ([`ErrorKind::WouldBlock`] if not;
    /// one round trip to the server).
    pub fn try_get(&self) -> Result<Job<T>> {
        match self.pull(None)? {
            Some(m) => self.job(m),
            None => Err(Error::new(
                ErrorKind::WouldBlock,
                format!("the queue {:?} is empty", self.name),
            )),
        }
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<Job<T>> {
        loop {
            // One pull request at a time, at most 5 s long, so a deadline
            // is honoured and a reconnect is noticed.
            let wait = match deadline {
                None => Duration::from_secs(5),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::new(
                            ErrorKind::Timeout,
                            format!("timed out waiting for an item of the queue {:?}", self.name),
                        ));
                    }
                    left.clamp(Duration::from_millis(10), Duration::from_secs(5))
                }
            };
            if let Some(m) = self.pull(Some(wait))? {
                return self.job(m);
            }
        }
    }

    /// One pull request for one item: waiting up to `wait`, or (`None`)
    /// answered at once with what is there.
    fn pull(&self, wait: Option<Duration>) -> Result<Option<jetstream::Message>> {
        let c = &self.consumer;
        self.shared
            .rt
            .block_on(async {
                let mut b = match wait {
                    Some(w) => c.batch().max_messages(1).expires(w).messages().await,
                    None => c.fetch().max_messages(1).messages().await,
                }
                .map_err(|e| e.to_string())?;
                match b.next().await {
                    Some(Ok(m)) => Ok(Some(m)),
                    Some(Err(e)) => Err(e.to_string()),
                    None => Ok(None),
                }
            })
            .map_err(|e| nats_error(format!("cannot get from the queue {:?}", self.name), e))
    }

    fn job(&self, m: jetstream::Message) -> Result<Job<T>> {
        let attempt = m
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1);
        match crate::codec::decode::<T>(&m.payload) {
            Ok(value) => Ok(Job {
                value,
                attempt,
                ack: Unacked {
                    message: Some(m),
                    shared: self.shared.clone(),
                },
            }),
            Err(e) => {
                // An item no consumer of this type can read: acknowledged
                // (so it is not redelivered forever and `join` can end) and
                // reported.
                let _ = self.shared.rt.block_on(m.double_ack());
                Err(e.context(format!(
                    "the queue {:?} held an item that is not a {} (it was dropped)",
                    self.name,
                    std::any::type_name::<T>()
                )))
            }
        }
    }

    /// Items put and not yet acknowledged (taken or not).
    pub fn len(&self) -> Result<usize> {
        let js = self.shared.js.clone();
        let name = self.stream.clone();
        let n = self
            .shared
            .rt
            .block_on(async move {
                let mut s = js.get_stream(&name).await.map_err(|e| e.to_string())?;
                s.info()
                    .await
                    .map(|i| i.state.messages)
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| nats_error(format!("cannot read the queue {:?}", self.name), e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    /// Whether every item put has been acknowledged.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Blocks until every item put has been taken and acknowledged
    /// (Python's `JoinableQueue.join`).
    pub fn join(&self) -> Result<()> {
        self.join_until(None)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(deadline_after(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<()> {
        let mut pause = Duration::from_millis(1);
        loop {
            if self.is_empty()? {
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() + pause > d) {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!("timed out joining the queue {:?}", self.name),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}
