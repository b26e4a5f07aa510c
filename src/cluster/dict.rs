//! A dict on a JetStream key-value bucket: the manager's dict for many machines.

use std::fmt;
use std::marker::PhantomData;

use async_nats::jetstream::kv;
use futures_util::TryStreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::connect::Cluster;
use super::{check_name, nats_error};
use crate::error::{Error, ErrorKind, Result};

/// A dict whose entries live in the JetStream key-value bucket
/// `ipckit_<name>`, shared by every program connected to the cluster.
///
/// Keys are strings of `A-Z a-z 0-9 - _ = / .` (the bucket's subject
/// rules; no leading or trailing `.`); values are any serde type, encoded
/// with postcard. Every entry has a revision; [`compare_and_set`](Self::compare_and_set)
/// and [`update`](Self::update) give atomic read-modify-write across
/// machines, where the manager's dict would need a lock.
///
/// ```no_run
/// # fn main() -> ipckit::Result<()> {
/// use ipckit::cluster::{Cluster, Connect};
/// let cluster = Cluster::connect(&Connect::new("nats://127.0.0.1:4222"))?;
/// let counts = cluster.dict::<u64>("counts")?;
/// counts.insert("apples", &3)?;
/// let n = counts.update("apples", |old| old.unwrap_or(0) + 1)?; // atomic
/// assert_eq!(n, 4);
/// # Ok(())
/// # }
/// ```
pub struct ClusterDict<V> {
    cluster: Cluster,
    store: kv::Store,
    name: String,
    _value: PhantomData<fn() -> V>,
}

impl<V> fmt::Debug for ClusterDict<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterDict")
            .field("name", &self.name)
            .finish()
    }
}

/// Checks a key against the bucket's rules before it reaches the server.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 1024
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=/.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "the dict key {:?} must be 1 to 1024 of A-Z a-z 0-9 - _ = / . (no leading, trailing or double .)",
                super::wire::shown(key)
            ),
        ))
    }
}

impl<V: Serialize + DeserializeOwned> ClusterDict<V> {
    pub(crate) fn open(cluster: &Cluster, name: &str) -> Result<ClusterDict<V>> {
        check_name("dict", name)?;
        let bucket = format!("ipckit_{name}");
        let js = cluster.shared.js.clone();
        let replicas = cluster.shared.replicas;
        let store = cluster
            .shared
            .rt
            .block_on(async move {
                if let Ok(s) = js.get_key_value(&bucket).await {
                    return Ok(s);
                }
                let made = js
                    .create_key_value(kv::Config {
                        bucket: bucket.clone(),
                        history: 1,
                        storage: async_nats::jetstream::stream::StorageType::File,
                        num_replicas: replicas,
                        ..Default::default()
                    })
                    .await;
                match made {
                    Ok(s) => Ok(s),
                    // Another program may have made it in between.
                    Err(e) => js.get_key_value(&bucket).await.map_err(|_| e.to_string()),
                }
            })
            .map_err(|e| nats_error(format!("cannot open the dict {name:?}"), e))?;
        Ok(ClusterDict {
            cluster: cluster.clone(),
            store,
            name: name.to_owned(),
            _value: PhantomData,
        })
    }

    fn block<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        self.cluster.shared.rt.block_on(fut)
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Result<V> {
        crate::codec::decode(bytes).map_err(|e| {
            e.context(format!(
                "the dict {:?} holds at {key:?} a value that is not a {}",
                self.name,
                std::any::type_name::<V>()
            ))
        })
    }

    /// The value at `key` and its revision, if there is one.
    pub fn entry(&self, key: &str) -> Result<Option<(V, u64)>> {
        check_key(key)?;
        match self.raw_entry(key)? {
            Some((Some(bytes), revision)) => Ok(Some((self.decode(key, &bytes)?, revision))),
            _ => Ok(None),
        }
    }

    /// `(value bytes if present, revision)`; a deleted key keeps its revision.
    fn raw_entry(&self, key: &str) -> Result<Option<(Option<Vec<u8>>, u64)>> {
        let e = self.block(self.store.entry(key)).map_err(|e| {
            nats_error(
                format!("cannot read {key:?} from the dict {:?}", self.name),
                e,
            )
        })?;
        Ok(e.map(|e| {
            let present = matches!(e.operation, kv::Operation::Put);
            (present.then(|| e.value.to_vec()), e.revision)
        }))
    }

    /// The value at `key`.
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        Ok(self.entry(key)?.map(|(v, _)| v))
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: &str) -> Result<bool> {
        Ok(self.entry(key)?.is_some())
    }

    /// Sets `key` to `value`; returns the new revision.
    pub fn insert(&self, key: &str, value: &V) -> Result<u64> {
        check_key(key)?;
        let bytes = crate::codec::encode(value)?;
        self.block(self.store.put(key, bytes.into())).map_err(|e| {
            nats_error(
                format!("cannot write {key:?} to the dict {:?}", self.name),
                e,
            )
        })
    }

    /// Sets `key` only if it has no value; the new revision, or `None` if
    /// it had one (Python's `setdefault` without the read).
    pub fn insert_new(&self, key: &str, value: &V) -> Result<Option<u64>> {
        check_key(key)?;
        let bytes = crate::codec::encode(value)?;
        match self.block(self.store.create(key, bytes.into())) {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(nats_error(
                format!("cannot write {key:?} to the dict {:?}", self.name),
                e,
            )),
        }
    }

    /// Sets `key` to `value` only if its revision is still `revision` (from
    /// [`entry`](Self::entry)); the new revision, or `None` if another
    /// writer changed it first.
    pub fn compare_and_set(&self, key: &str, revision: u64, value: &V) -> Result<Option<u64>> {
        check_key(key)?;
        let bytes = crate::codec::encode(value)?;
        match self.block(self.store.update(key, bytes.into(), revision)) {
            Ok(rev) => Ok(Some(rev)),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(e) => Err(nats_error(
                format!("cannot write {key:?} to the dict {:?}", self.name),
                e,
            )),
        }
    }

    /// Atomically replaces the value at `key` by `f(old)`, retrying if
    /// another writer got in between; returns the value written. `f` may
    /// run more than once.
    pub fn update(&self, key: &str, mut f: impl FnMut(Option<V>) -> V) -> Result<V> {
        check_key(key)?;
        loop {
            let (old, revision) = match self.raw_entry(key)? {
                Some((Some(bytes), rev)) => (Some(self.decode(key, &bytes)?), Some(rev)),
                Some((None, rev)) => (None, Some(rev)),
                None => (None, None),
            };
            let new = f(old);
            let bytes = crate::codec::encode(&new)?;
            let written = match revision {
                Some(rev) => match self.block(self.store.update(key, bytes.into(), rev)) {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => false,
                    Err(e) => {
                        return Err(nats_error(
                            format!("cannot write {key:?} to the dict {:?}", self.name),
                            e,
                        ));
                    }
                },
                None => match self.block(self.store.create(key, bytes.into())) {
                    Ok(_) => true,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
                    Err(e) => {
                        return Err(nats_error(
                            format!("cannot write {key:?} to the dict {:?}", self.name),
                            e,
                        ));
                    }
                },
            };
            if written {
                return Ok(new);
            }
        }
    }

    /// Removes `key`; whether it had a value.
    pub fn remove(&self, key: &str) -> Result<bool> {
        check_key(key)?;
        let had = matches!(self.raw_entry(key)?, Some((Some(_), _)));
        self.block(self.store.delete(key)).map_err(|e| {
            nats_error(
                format!("cannot remove {key:?} from the dict {:?}", self.name),
                e,
            )
        })?;
        Ok(had)
    }

    /// Every key that has a value, sorted.
    pub fn keys(&self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = self
            .block(async {
                match self.store.keys().await {
                    Ok(k) => k
                        .try_collect::<Vec<String>>()
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .map_err(|e| nats_error(format!("cannot list the dict {:?}", self.name), e))?;
        keys.sort_unstable();
        Ok(keys)
    }

    /// The number of keys with a value.
    pub fn len(&self) -> Result<usize> {
        Ok(self.keys()?.len())
    }

    /// Whether no key has a value.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
