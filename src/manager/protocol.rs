//! The manager's wire protocol: requests and replies, postcard-encoded, one
//! frame each over an authenticated [`Connection`](crate::pipe::Connection).
//!
//! Pure data and conversions, no I/O: the decoder is property-tested (a
//! server must survive any bytes a client sends) and runs under Miri.
//!
//! Values inside requests are opaque encoded bytes: the server stores and
//! compares bytes and never needs the user's types; proxies do the typing.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Bumped on any incompatible change; checked in the first exchange.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// Encoded user data (a key, a value, an item).
pub(crate) type Bytes = Vec<u8>;

/// The first message on every connection, after authentication.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct Hello {
    pub protocol: u32,
    /// Random per client process: the server releases what a client holds
    /// (locks, permits) when its last connection closes.
    pub client: u128,
}

/// The kinds of objects a manager serves.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Dict,
    List,
    Value,
    Queue,
    Lock,
    RLock,
    Semaphore,
    Event,
    Condition,
    Barrier,
    Namespace,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Dict => "dict",
            Kind::List => "list",
            Kind::Value => "value",
            Kind::Queue => "queue",
            Kind::Lock => "lock",
            Kind::RLock => "rlock",
            Kind::Semaphore => "semaphore",
            Kind::Event => "event",
            Kind::Condition => "condition",
            Kind::Barrier => "barrier",
            Kind::Namespace => "namespace",
        }
    }
}

/// How long a blocking operation may wait on the server.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum WaitLimit {
    /// Fail at once with `WouldBlock` if it would block.
    No,
    /// Wait this many microseconds, then fail with `Timeout`.
    For(u64),
    /// Wait as long as it takes.
    Forever,
}

/// A request from a proxy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Request {
    /// Creates an object, or with a name, opens the one of that name
    /// (creating it if missing). `tag` spells the proxy's types; opening an
    /// object with another tag is a `WrongType` error. `param` is the
    /// semaphore's value, the barrier's parties or the queue's maximum size;
    /// `init` a value's initial contents.
    Create {
        kind: Kind,
        name: Option<String>,
        tag: String,
        param: u64,
        init: Option<Bytes>,
    },
    /// Removes a named object's name (the object lives on for holders).
    Unname { name: String },
    /// An operation on object `id`, by thread `thread` of the client.
    Call { id: u64, thread: u64, op: Op },
    /// Answers `Unit`: to check the server is there.
    Ping,
    /// Stops the server after answering.
    Shutdown,
}

/// Operations on objects.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Op {
    // dict
    DictGet(Bytes),
    DictInsert(Bytes, Bytes),
    DictRemove(Bytes),
    DictContains(Bytes),
    DictGetOrInsert(Bytes, Bytes),
    DictUpdate(Vec<(Bytes, Bytes)>),
    DictKeys,
    DictValues,
    DictItems,
    // list
    ListPush(Bytes),
    ListExtend(Vec<Bytes>),
    ListGet(i64),
    ListSet(i64, Bytes),
    ListInsert(i64, Bytes),
    ListPop(Option<i64>),
    ListRemove(Bytes),
    ListRange(i64, i64),
    ListToVec,
    // shared by dict, list, queue, namespace
    Len,
    Clear,
    // value
    ValueGet,
    ValueSet(Bytes),
    // queue
    QueuePut(Bytes, WaitLimit),
    QueueGet(WaitLimit),
    QueueFull,
    // lock, rlock, semaphore, condition
    Acquire(WaitLimit),
    Release,
    SemaphoreValue,
    // event
    EventSet,
    EventClear,
    EventIsSet,
    EventWait(WaitLimit),
    // condition
    ConditionWait(WaitLimit),
    ConditionNotify(u64),
    ConditionNotifyAll,
    // barrier
    BarrierWait(WaitLimit),
    BarrierAbort,
    BarrierReset,
    BarrierParties,
    BarrierWaiting,
    BarrierBroken,
    // namespace
    NsGet(String),
    NsSet(String, Bytes),
    NsRemove(String),
    NsNames,
}

/// The server's answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Reply {
    Unit,
    Bool(bool),
    U64(u64),
    Bytes(Bytes),
    MaybeBytes(Option<Bytes>),
    List(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    Names(Vec<String>),
    /// A created or opened object.
    Object(u64),
    /// The operation failed: an [`ErrorKind`] by name, and the message.
    Error(String, String),
}

impl Reply {
    pub(crate) fn error(e: &Error) -> Reply {
        Reply::Error(e.kind().as_str().to_owned(), e.to_string())
    }

    /// The reply as a result: a server-side error becomes an [`Error`] of
    /// the same kind (unknown kinds from a newer server become `Io`).
    pub(crate) fn into_result(self) -> Result<Reply> {
        match self {
            Reply::Error(kind, message) => {
                Err(Error::new(ErrorKind::from_str_or_io(&kind), message))
            }
            r => Ok(r),
        }
    }

    fn unexpected(self, wanted: &str) -> Error {
        Error::new(
            ErrorKind::Corrupt,
            format!("the manager answered {self:?} where {wanted} was expected"),
        )
    }

    pub(crate) fn unit(self) -> Result<()> {
        match self.into_result()? {
            Reply::Unit => Ok(()),
            r => Err(r.unexpected("nothing")),
        }
    }

    pub(crate) fn bool(self) -> Result<bool> {
        match self.into_result()? {
            Reply::Bool(b) => Ok(b),
            r => Err(r.unexpected("a bool")),
        }
    }

    pub(crate) fn u64(self) -> Result<u64> {
        match self.into_result()? {
            Reply::U64(n) => Ok(n),
            r => Err(r.unexpected("a number")),
        }
    }

    pub(crate) fn bytes(self) -> Result<Bytes> {
        match self.into_result()? {
            Reply::Bytes(b) => Ok(b),
            r => Err(r.unexpected("a value")),
        }
    }

    pub(crate) fn maybe_bytes(self) -> Result<Option<Bytes>> {
        match self.into_result()? {
            Reply::MaybeBytes(b) => Ok(b),
            r => Err(r.unexpected("an optional value")),
        }
    }

    pub(crate) fn list(self) -> Result<Vec<Bytes>> {
        match self.into_result()? {
            Reply::List(l) => Ok(l),
            r => Err(r.unexpected("a list")),
        }
    }

    pub(crate) fn pairs(self) -> Result<Vec<(Bytes, Bytes)>> {
        match self.into_result()? {
            Reply::Pairs(p) => Ok(p),
            r => Err(r.unexpected("pairs")),
        }
    }

    pub(crate) fn names(self) -> Result<Vec<String>> {
        match self.into_result()? {
            Reply::Names(n) => Ok(n),
            r => Err(r.unexpected("names")),
        }
    }

    pub(crate) fn object(self) -> Result<u64> {
        match self.into_result()? {
            Reply::Object(id) => Ok(id),
            r => Err(r.unexpected("an object")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Create {
                kind: Kind::Dict,
                name: Some("d".into()),
                tag: "dict<u32, String>".into(),
                param: 0,
                init: None,
            },
            Request::Call {
                id: 7,
                thread: 3,
                op: Op::DictInsert(vec![1, 2], vec![3]),
            },
            Request::Call {
                id: 1,
                thread: 0,
                op: Op::QueueGet(WaitLimit::For(1500)),
            },
            Request::Shutdown,
        ];
        for r in reqs {
            let bytes = codec::encode(&r).unwrap();
            assert_eq!(codec::decode::<Request>(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn errors_keep_their_kind() {
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::WrongType,
            ErrorKind::Timeout,
            ErrorKind::BrokenBarrier,
            ErrorKind::Closed,
            ErrorKind::Io,
        ] {
            let e = Reply::error(&Error::new(kind, "boom"))
                .into_result()
                .unwrap_err();
            assert_eq!(e.kind(), kind);
            assert_eq!(e.to_string(), "boom");
        }
        let e = Reply::Error("from the future".into(), "x".into())
            .into_result()
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io);
    }

    #[test]
    fn a_reply_of_the_wrong_shape_is_an_error() {
        assert_eq!(Reply::Unit.bool().unwrap_err().kind(), ErrorKind::Corrupt);
        assert_eq!(Reply::U64(1).list().unwrap_err().kind(), ErrorKind::Corrupt);
    }

    #[cfg(not(miri))]
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = codec::decode::<Request>(&bytes);
                let _ = codec::decode::<Reply>(&bytes);
                let _ = codec::decode::<Hello>(&bytes);
            }
        }
    }
}
