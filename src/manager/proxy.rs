//! Typed proxies for the objects a manager serves.
//!
//! Every proxy is a cheap handle: `Clone`, `Send + Sync`, and
//! `Serialize + Deserialize`, so it can be given to a child process or a
//! pool task, where it connects to the same manager on first use. Values
//! travel as postcard-encoded bytes; the proxy's type parameters say how to
//! read them.

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::client::{Core, Token, thread_id};
use super::protocol::{Kind, Op, Request, WaitLimit};
use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};

/// What every proxy type tells the plumbing.
pub(crate) trait Proxy: Sized {
    const KIND: Kind;
    /// The types the object holds, as the server records them.
    fn tag() -> String;
    fn from_parts(core: Arc<Core>, id: u64) -> Self;
}

/// The untyped part of every proxy.
#[derive(Clone)]
struct Handle {
    core: Arc<Core>,
    id: u64,
}

impl Handle {
    fn call(&self, op: Op) -> Result<super::protocol::Reply> {
        self.core.call(&Request::Call {
            id: self.id,
            thread: thread_id(),
            op,
        })
    }
}

fn wait_for(deadline: Instant) -> WaitLimit {
    WaitLimit::For(
        deadline
            .saturating_duration_since(Instant::now())
            .as_micros()
            .min(u64::MAX as u128) as u64,
    )
}

/// The wait of an `op_timeout`: waits forever if `timeout` is too long to
/// make a deadline of.
fn wait_after(timeout: Duration) -> WaitLimit {
    deadline_after(timeout).map_or(WaitLimit::Forever, wait_for)
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    codec::decode(bytes).map_err(|e| {
        e.context(format!(
            "cannot decode a {what} from the manager as {}",
            type_name::<T>()
        ))
    })
}

fn decode_all<T: DeserializeOwned>(items: Vec<Vec<u8>>, what: &str) -> Result<Vec<T>> {
    items.iter().map(|b| decode(b, what)).collect()
}

/// Defines a proxy struct with its plumbing: Clone, Debug, serde, Proxy.
macro_rules! proxy {
    (
        $(#[$doc:meta])*
        $name:ident <$($t:ident),*> , $kind:expr, $tag:expr
    ) => {
        $(#[$doc])*
        pub struct $name<$($t),*> {
            h: Handle,
            _types: PhantomData<fn() -> ($($t,)*)>,
        }

        impl<$($t),*> Clone for $name<$($t),*> {
            fn clone(&self) -> Self {
                $name { h: self.h.clone(), _types: PhantomData }
            }
        }

        impl<$($t),*> fmt::Debug for $name<$($t),*> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("manager", &self.h.core.address)
                    .field("id", &self.h.id)
                    .finish()
            }
        }

        impl<$($t),*> Serialize for $name<$($t),*> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.h.core.token(self.h.id).serialize(s)
            }
        }

        impl<'de, $($t),*> Deserialize<'de> for $name<$($t),*> {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let (core, id) = Token::deserialize(d)?
                    .core()
                    .map_err(crate::codec::de_error)?;
                Ok($name { h: Handle { core, id }, _types: PhantomData })
            }
        }

        impl<$($t),*> Proxy for $name<$($t),*> {
            const KIND: Kind = $kind;
            fn tag() -> String {
                $tag
            }
            fn from_parts(core: Arc<Core>, id: u64) -> Self {
                $name { h: Handle { core, id }, _types: PhantomData }
            }
        }
    };
}

// -- dict ------------------------------------------------------------------------

proxy! {
    /// A dict in the manager: Python's `manager.dict()`. Keys are compared
    /// by their encoding, so use key types whose equal values encode alike
    /// (integers, strings, tuples and structs of those; not floats).
    /// Iteration follows insertion order, as in Python.
    DictProxy<K, V>, Kind::Dict, format!("dict<{}, {}>", type_name::<K>(), type_name::<V>())
}

impl<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned> DictProxy<K, V> {
    /// The value of `key`, if present.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        match self
            .h
            .call(Op::DictGet(codec::encode(key)?))?
            .maybe_bytes()?
        {
            Some(b) => decode(&b, "dict value").map(Some),
            None => Ok(None),
        }
    }

    /// Sets `key` to `value`; returns the previous value.
    pub fn insert(&self, key: &K, value: &V) -> Result<Option<V>> {
        let r = self
            .h
            .call(Op::DictInsert(codec::encode(key)?, codec::encode(value)?))?;
        match r.maybe_bytes()? {
            Some(b) => decode(&b, "dict value").map(Some),
            None => Ok(None),
        }
    }

    /// Removes `key`; returns its value if it was present.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        match self
            .h
            .call(Op::DictRemove(codec::encode(key)?))?
            .maybe_bytes()?
        {
            Some(b) => decode(&b, "dict value").map(Some),
            None => Ok(None),
        }
    }

    /// Removes `key` and returns its value; a `NotFound` error if absent
    /// (Python's `pop` raising `KeyError`).
    pub fn pop(&self, key: &K) -> Result<V> {
        self.remove(key)?
            .ok_or_else(|| Error::new(ErrorKind::NotFound, "the key is not in the dict"))
    }

    /// Whether `key` is present.
    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.h.call(Op::DictContains(codec::encode(key)?))?.bool()
    }

    /// The value of `key`, inserting `default` first if absent, atomically
    /// (Python's `setdefault`).
    pub fn get_or_insert(&self, key: &K, default: &V) -> Result<V> {
        let b = self
            .h
            .call(Op::DictGetOrInsert(
                codec::encode(key)?,
                codec::encode(default)?,
            ))?
            .bytes()?;
        decode(&b, "dict value")
    }

    /// Inserts every pair, in one request.
    pub fn update<'a>(&self, pairs: impl IntoIterator<Item = (&'a K, &'a V)>) -> Result<()>
    where
        K: 'a,
        V: 'a,
    {
        let pairs = pairs
            .into_iter()
            .map(|(k, v)| Ok((codec::encode(k)?, codec::encode(v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.h.call(Op::DictUpdate(pairs))?.unit()
    }

    /// The number of entries.
    pub fn len(&self) -> Result<usize> {
        Ok(self.h.call(Op::Len)?.u64()? as usize)
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The keys, in insertion order.
    pub fn keys(&self) -> Result<Vec<K>> {
        decode_all(self.h.call(Op::DictKeys)?.list()?, "dict key")
    }

    /// The values, in insertion order.
    pub fn values(&self) -> Result<Vec<V>> {
        decode_all(self.h.call(Op::DictValues)?.list()?, "dict value")
    }

    /// The entries, in insertion order.
    pub fn items(&self) -> Result<Vec<(K, V)>> {
        self.h
            .call(Op::DictItems)?
            .pairs()?
            .into_iter()
            .map(|(k, v)| Ok((decode(&k, "dict key")?, decode(&v, "dict value")?)))
            .collect()
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.h.call(Op::Clear)?.unit()
    }
}

// -- list ------------------------------------------------------------------------

proxy! {
    /// A list in the manager: Python's `manager.list()`. Indices may be
    /// negative (counting from the end), as in Python.
    ListProxy<T>, Kind::List, format!("list<{}>", type_name::<T>())
}

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends an item (Python's `append`).
    pub fn push(&self, item: &T) -> Result<()> {
        self.h.call(Op::ListPush(codec::encode(item)?))?.unit()
    }

    /// Appends every item, in one request.
    pub fn extend<'a>(&self, items: impl IntoIterator<Item = &'a T>) -> Result<()>
    where
        T: 'a,
    {
        let items = items
            .into_iter()
            .map(codec::encode)
            .collect::<Result<Vec<_>>>()?;
        self.h.call(Op::ListExtend(items))?.unit()
    }

    /// The item at `index`; `OutOfRange` if there is none.
    pub fn get(&self, index: isize) -> Result<T> {
        decode(
            &self.h.call(Op::ListGet(index as i64))?.bytes()?,
            "list item",
        )
    }

    /// Replaces the item at `index`.
    pub fn set(&self, index: isize, item: &T) -> Result<()> {
        self.h
            .call(Op::ListSet(index as i64, codec::encode(item)?))?
            .unit()
    }

    /// Inserts before `index` (clamped to the list, as in Python).
    pub fn insert(&self, index: isize, item: &T) -> Result<()> {
        self.h
            .call(Op::ListInsert(index as i64, codec::encode(item)?))?
            .unit()
    }

    /// Removes and returns the last item; `OutOfRange` if empty.
    pub fn pop(&self) -> Result<T> {
        decode(&self.h.call(Op::ListPop(None))?.bytes()?, "list item")
    }

    /// Removes and returns the item at `index`.
    pub fn pop_at(&self, index: isize) -> Result<T> {
        decode(
            &self.h.call(Op::ListPop(Some(index as i64)))?.bytes()?,
            "list item",
        )
    }

    /// Removes the first item equal to `item`; false if there was none.
    pub fn remove(&self, item: &T) -> Result<bool> {
        self.h.call(Op::ListRemove(codec::encode(item)?))?.bool()
    }

    /// The number of items.
    pub fn len(&self) -> Result<usize> {
        Ok(self.h.call(Op::Len)?.u64()? as usize)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// A copy of the items in `start..end` (Python's slice `l[start:end]`:
    /// negative bounds count from the end, bounds are clamped).
    pub fn range(&self, start: isize, end: isize) -> Result<Vec<T>> {
        decode_all(
            self.h
                .call(Op::ListRange(start as i64, end as i64))?
                .list()?,
            "list item",
        )
    }

    /// A copy of the whole list.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        decode_all(self.h.call(Op::ListToVec)?.list()?, "list item")
    }

    /// Removes every item.
    pub fn clear(&self) -> Result<()> {
        self.h.call(Op::Clear)?.unit()
    }
}

// -- value -----------------------------------------------------------------------

proxy! {
    /// A single value in the manager: Python's `manager.Value(typecode, v)`,
    /// for any serde type.
    ValueProxy<T>, Kind::Value, format!("value<{}>", type_name::<T>())
}

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The current value.
    pub fn get(&self) -> Result<T> {
        decode(&self.h.call(Op::ValueGet)?.bytes()?, "value")
    }

    /// Replaces the value.
    pub fn set(&self, value: &T) -> Result<()> {
        self.h.call(Op::ValueSet(codec::encode(value)?))?.unit()
    }
}

// -- queue -----------------------------------------------------------------------

proxy! {
    /// A queue in the manager: Python's `manager.Queue(maxsize)`. For speed
    /// between local processes prefer [`crate::queue::Queue`]; this one
    /// also works over TCP.
    QueueProxy<T>, Kind::Queue, format!("queue<{}>", type_name::<T>())
}

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    fn put_wait(&self, item: &T, wait: WaitLimit) -> Result<()> {
        self.h
            .call(Op::QueuePut(codec::encode(item)?, wait))?
            .unit()
    }

    fn get_wait(&self, wait: WaitLimit) -> Result<T> {
        decode(&self.h.call(Op::QueueGet(wait))?.bytes()?, "queue item")
    }

    /// Puts an item, waiting while the queue is full.
    pub fn put(&self, item: &T) -> Result<()> {
        self.put_wait(item, WaitLimit::Forever)
    }

    /// Puts an item if there is room (`WouldBlock` otherwise).
    pub fn try_put(&self, item: &T) -> Result<()> {
        self.put_wait(item, WaitLimit::No)
    }

    /// Puts an item, waiting at most `timeout` for room.
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.put_wait(item, wait_after(timeout))
    }

    /// Puts an item, waiting until `deadline` at most for room.
    pub fn put_deadline(&self, item: &T, deadline: Instant) -> Result<()> {
        self.put_wait(item, wait_for(deadline))
    }

    /// Takes the oldest item, waiting for one.
    pub fn get(&self) -> Result<T> {
        self.get_wait(WaitLimit::Forever)
    }

    /// Takes the oldest item if there is one (`WouldBlock` otherwise).
    pub fn try_get(&self) -> Result<T> {
        self.get_wait(WaitLimit::No)
    }

    /// Takes the oldest item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_wait(wait_after(timeout))
    }

    /// Takes the oldest item, waiting until `deadline` at most.
    pub fn get_deadline(&self, deadline: Instant) -> Result<T> {
        self.get_wait(wait_for(deadline))
    }

    /// The number of items (Python's `qsize`).
    pub fn len(&self) -> Result<usize> {
        Ok(self.h.call(Op::Len)?.u64()? as usize)
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Whether the queue holds its maximum number of items.
    pub fn is_full(&self) -> Result<bool> {
        self.h.call(Op::QueueFull)?.bool()
    }
}

// -- locks -----------------------------------------------------------------------

fn acquire_wait(h: &Handle, wait: WaitLimit) -> Result<()> {
    h.call(Op::Acquire(wait))?.unit()
}

fn release(h: &Handle) -> Result<()> {
    h.call(Op::Release)?.unit()
}

macro_rules! lock_api {
    ($name:ident, $guard:ident) => {
        impl $name {
            /// Acquires, waiting as long as it takes.
            pub fn acquire(&self) -> Result<$guard<'_>> {
                acquire_wait(&self.h, WaitLimit::Forever)?;
                Ok($guard { lock: self })
            }

            /// Acquires if free now (`WouldBlock` otherwise).
            pub fn try_acquire(&self) -> Result<$guard<'_>> {
                acquire_wait(&self.h, WaitLimit::No)?;
                Ok($guard { lock: self })
            }

            /// Acquires, waiting at most `timeout`.
            pub fn acquire_timeout(&self, timeout: Duration) -> Result<$guard<'_>> {
                acquire_wait(&self.h, wait_after(timeout))?;
                Ok($guard { lock: self })
            }

            /// Acquires, waiting until `deadline` at most.
            pub fn acquire_deadline(&self, deadline: Instant) -> Result<$guard<'_>> {
                acquire_wait(&self.h, wait_for(deadline))?;
                Ok($guard { lock: self })
            }

            /// Releases once, without a guard: for a lock acquired by a
            /// guard that was [`forget`]($guard::forget)-ed.
            pub fn release(&self) -> Result<()> {
                release(&self.h)
            }
        }

        /// Holds the lock; releases it when dropped.
        #[must_use = "the lock is released when the guard is dropped"]
        pub struct $guard<'a> {
            lock: &'a $name,
        }

        impl $guard<'_> {
            /// Releases now, reporting an error (a drop cannot).
            pub fn unlock(self) -> Result<()> {
                let lock = self.lock;
                std::mem::forget(self);
                lock.release()
            }

            /// Keeps the lock held after the guard is gone (Python's
            /// "acquire here, release there"); call `release()` later.
            pub fn forget(self) {
                std::mem::forget(self);
            }
        }

        impl Drop for $guard<'_> {
            fn drop(&mut self) {
                let _ = self.lock.release();
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).finish_non_exhaustive()
            }
        }
    };
}

proxy! {
    /// A lock in the manager: Python's `manager.Lock()`. Any thread or
    /// process may release it. If the process holding it dies, the manager
    /// releases it.
    LockProxy<>, Kind::Lock, "lock".to_owned()
}
lock_api!(LockProxy, LockGuard);

proxy! {
    /// A reentrant lock: Python's `manager.RLock()`. The thread holding it
    /// may acquire it again; it is free after as many releases. Owned by a
    /// thread of a process; released by the manager if that process dies.
    RLockProxy<>, Kind::RLock, "rlock".to_owned()
}
lock_api!(RLockProxy, RLockGuard);

// -- semaphore -------------------------------------------------------------------

proxy! {
    /// A counting semaphore: Python's `manager.Semaphore(n)`. Permits held
    /// by a process that dies are given back.
    SemaphoreProxy<>, Kind::Semaphore, "semaphore".to_owned()
}
lock_api!(SemaphoreProxy, SemaphoreGuard);

impl SemaphoreProxy {
    /// The number of permits available now.
    pub fn value(&self) -> Result<u64> {
        self.h.call(Op::SemaphoreValue)?.u64()
    }
}

// -- event -----------------------------------------------------------------------

proxy! {
    /// An event: Python's `manager.Event()`.
    EventProxy<>, Kind::Event, "event".to_owned()
}

impl EventProxy {
    /// Sets the flag and wakes every waiter.
    pub fn set(&self) -> Result<()> {
        self.h.call(Op::EventSet)?.unit()
    }

    /// Clears the flag.
    pub fn clear(&self) -> Result<()> {
        self.h.call(Op::EventClear)?.unit()
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> Result<bool> {
        self.h.call(Op::EventIsSet)?.bool()
    }

    fn wait_with(&self, wait: WaitLimit) -> Result<()> {
        if self.h.call(Op::EventWait(wait))?.bool()? {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Timeout, "event wait timed out"))
        }
    }

    /// Waits until the flag is set.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(WaitLimit::Forever)
    }

    /// Waits at most `timeout` (a `Timeout` error if the flag stays clear).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<()> {
        self.wait_with(wait_after(timeout))
    }

    /// Waits until `deadline` at most.
    pub fn wait_deadline(&self, deadline: Instant) -> Result<()> {
        self.wait_with(wait_for(deadline))
    }
}

// -- condition -------------------------------------------------------------------

proxy! {
    /// A condition variable with its own reentrant lock: Python's
    /// `manager.Condition()`. Acquire it, then `wait` / `notify` through
    /// the guard.
    ConditionProxy<>, Kind::Condition, "condition".to_owned()
}
lock_api!(ConditionProxy, ConditionGuard);

impl ConditionGuard<'_> {
    fn wait_with(&self, wait: WaitLimit) -> Result<bool> {
        self.lock.h.call(Op::ConditionWait(wait))?.bool()
    }

    /// Releases the lock, waits for a notification, re-acquires the lock.
    pub fn wait(&self) -> Result<()> {
        self.wait_with(WaitLimit::Forever).map(drop)
    }

    /// Like [`wait`](Self::wait), for at most `timeout`; true if notified,
    /// false if the time ran out (the lock is held again either way).
    pub fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.wait_with(wait_after(timeout))
    }

    /// Waits until `condition()` holds (checked with the lock held), or
    /// until `timeout` passes if one is given; returns the last check.
    pub fn wait_for(
        &self,
        mut condition: impl FnMut() -> Result<bool>,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        // A timeout too long to make a deadline of means no timeout.
        let deadline = timeout.and_then(deadline_after);
        loop {
            if condition()? {
                return Ok(true);
            }
            match deadline {
                None => self.wait()?,
                Some(d) => {
                    if Instant::now() >= d || !self.wait_with(wait_for(d))? {
                        return condition();
                    }
                }
            }
        }
    }

    /// Wakes up to `n` waiters; returns how many were waiting.
    pub fn notify(&self, n: usize) -> Result<usize> {
        Ok(self.lock.h.call(Op::ConditionNotify(n as u64))?.u64()? as usize)
    }

    /// Wakes every waiter; returns how many there were.
    pub fn notify_all(&self) -> Result<usize> {
        Ok(self.lock.h.call(Op::ConditionNotifyAll)?.u64()? as usize)
    }
}

// -- barrier ---------------------------------------------------------------------

proxy! {
    /// A barrier for a fixed number of parties: Python's `manager.Barrier(n)`.
    /// A timeout, an `abort`, or a waiting process that dies breaks it for
    /// everyone (`BrokenBarrier` errors) until `reset`.
    BarrierProxy<>, Kind::Barrier, "barrier".to_owned()
}

impl BarrierProxy {
    fn wait_with(&self, wait: WaitLimit) -> Result<usize> {
        Ok(self.h.call(Op::BarrierWait(wait))?.u64()? as usize)
    }

    /// Waits for all parties; returns this party's arrival index
    /// (`0..parties`).
    pub fn wait(&self) -> Result<usize> {
        self.wait_with(WaitLimit::Forever)
    }

    /// Like [`wait`](Self::wait), breaking the barrier after `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_with(wait_after(timeout))
    }

    /// Breaks the barrier: current and future waiters fail until `reset`.
    pub fn abort(&self) -> Result<()> {
        self.h.call(Op::BarrierAbort)?.unit()
    }

    /// Returns the barrier to its initial state; current waiters fail.
    pub fn reset(&self) -> Result<()> {
        self.h.call(Op::BarrierReset)?.unit()
    }

    /// The number of parties.
    pub fn parties(&self) -> Result<usize> {
        Ok(self.h.call(Op::BarrierParties)?.u64()? as usize)
    }

    /// How many are waiting now.
    pub fn n_waiting(&self) -> Result<usize> {
        Ok(self.h.call(Op::BarrierWaiting)?.u64()? as usize)
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> Result<bool> {
        self.h.call(Op::BarrierBroken)?.bool()
    }
}

// -- namespace -------------------------------------------------------------------

proxy! {
    /// String-keyed attributes of any serde types: Python's
    /// `manager.Namespace()` (`ns.x = 1` is `ns.set("x", &1)`).
    NamespaceProxy<>, Kind::Namespace, "namespace".to_owned()
}

impl NamespaceProxy {
    /// The attribute `name` read as a `T`, if set.
    pub fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.h.call(Op::NsGet(name.to_owned()))?.maybe_bytes()? {
            Some(b) => decode(&b, "namespace attribute").map(Some),
            None => Ok(None),
        }
    }

    /// Sets the attribute `name`.
    pub fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.h
            .call(Op::NsSet(name.to_owned(), codec::encode(value)?))?
            .unit()
    }

    /// Deletes the attribute; false if it was not set.
    pub fn remove(&self, name: &str) -> Result<bool> {
        self.h.call(Op::NsRemove(name.to_owned()))?.bool()
    }

    /// The attribute names, sorted.
    pub fn names(&self) -> Result<Vec<String>> {
        self.h.call(Op::NsNames)?.names()
    }
}
