//! What travels between submitters and workers, and its checks. Everything
//! here decodes bytes from the network: nothing is trusted, every string is
//! bounded and validated, and a bad message is an error, never a panic
//! (fuzzed by `fuzz/fuzz_targets/cluster_wire.rs`, which builds this file
//! without the `nats` feature through `ipckit::fuzzing`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// The envelope version; another is refused with a clear error.
pub(crate) const VERSION: u8 = 1;

/// The longest function or type name accepted.
pub(crate) const MAX_NAME: usize = 512;

/// A task on its way to a worker.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct TaskMsg {
    pub(crate) version: u8,
    /// The task's id within its submitter.
    pub(crate) task: u64,
    /// The submitter's id: its results' subject is `ipckit.<pool>.results.<client>`.
    pub(crate) client: String,
    /// The registered name of the function.
    pub(crate) function: String,
    /// `type_name` of the argument and the result (of one element for a chunk).
    pub(crate) arg_type: String,
    pub(crate) ret_type: String,
    /// A chunk: `payload` is a `Vec<A>`, the result a `Vec<R>`.
    pub(crate) chunk: bool,
    /// The argument, encoded with postcard.
    #[serde(with = "serde_bytes")]
    pub(crate) payload: Vec<u8>,
}

/// A task's outcome on its way back.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ResultMsg {
    pub(crate) version: u8,
    pub(crate) task: u64,
    /// Which delivery of the task produced it (1 for the first).
    pub(crate) attempt: u32,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) enum Outcome {
    /// The result, encoded with postcard.
    Value(#[serde(with = "serde_bytes")] Vec<u8>),
    /// The error: its kind's text and its message.
    Error { kind: String, message: String },
}

/// "A worker started this task" (best effort, not persisted).
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct StartedMsg {
    pub(crate) task: u64,
    pub(crate) attempt: u32,
}

/// A submitter id: 1 to 64 of `A-Z a-z 0-9 _ -` (it becomes a subject token).
pub(crate) fn valid_client(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_version(v: u8, what: &str) -> Result<()> {
    if v != VERSION {
        return Err(Error::new(
            ErrorKind::Incompatible,
            format!("a {what} of envelope version {v}; this ipckit speaks {VERSION}"),
        ));
    }
    Ok(())
}

/// Decodes and checks a task envelope.
pub(crate) fn decode_task(bytes: &[u8]) -> Result<TaskMsg> {
    let t: TaskMsg = crate::codec::decode(bytes)
        .map_err(|e| Error::new(ErrorKind::Codec, format!("an undecodable task: {e}")))?;
    check_version(t.version, "task")?;
    if !valid_client(&t.client) {
        return Err(Error::new(
            ErrorKind::Corrupt,
            "a task whose submitter id is not 1 to 64 of A-Z a-z 0-9 _ -",
        ));
    }
    for (what, s) in [
        ("function name", &t.function),
        ("argument type", &t.arg_type),
        ("result type", &t.ret_type),
    ] {
        if s.is_empty() || s.len() > MAX_NAME {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("a task whose {what} is empty or over {MAX_NAME} bytes"),
            ));
        }
    }
    Ok(t)
}

/// Decodes and checks a result envelope.
pub(crate) fn decode_result(bytes: &[u8]) -> Result<ResultMsg> {
    let r: ResultMsg = crate::codec::decode(bytes)
        .map_err(|e| Error::new(ErrorKind::Codec, format!("an undecodable result: {e}")))?;
    check_version(r.version, "result")?;
    Ok(r)
}

/// The error a result carries (its kind as this version knows it).
pub(crate) fn outcome_error(kind: &str, message: &str) -> Error {
    Error::new(ErrorKind::from_str_or_io(kind), message.to_owned())
}

/// A short printable form of a name read from the wire, for error texts.
pub(crate) fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().count() > 80 {
        out.push('…');
    }
    out
}

/// `"stream_seq":N` from a JetStream advisory (JSON, read without a JSON
/// parser: the number after the first such key, digits only).
pub(crate) fn advisory_seq(json: &[u8]) -> Option<u64> {
    let key = b"\"stream_seq\":";
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = json[at..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .take(20)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskMsg {
        TaskMsg {
            version: VERSION,
            task: 7,
            client: "c1".into(),
            function: "square".into(),
            arg_type: "u64".into(),
            ret_type: "u64".into(),
            chunk: false,
            payload: vec![7],
        }
    }

    #[test]
    fn round_trip_and_checks() {
        let bytes = crate::codec::encode(&task()).unwrap();
        assert_eq!(decode_task(&bytes).unwrap(), task());
        for cut in 0..bytes.len() {
            assert!(decode_task(&bytes[..cut]).is_err());
        }
        let mut t = task();
        t.client = "a.b".into();
        let e = decode_task(&crate::codec::encode(&t).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        let mut t = task();
        t.version = 9;
        let e = decode_task(&crate::codec::encode(&t).unwrap()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Incompatible);
        let mut t = task();
        t.function = "f".repeat(MAX_NAME + 1);
        assert!(decode_task(&crate::codec::encode(&t).unwrap()).is_err());
        let r = ResultMsg {
            version: VERSION,
            task: 1,
            attempt: 2,
            outcome: Outcome::Error {
                kind: "child panicked".into(),
                message: "boom".into(),
            },
        };
        let bytes = crate::codec::encode(&r).unwrap();
        assert_eq!(decode_result(&bytes).unwrap(), r);
        assert_eq!(
            outcome_error("child panicked", "x").kind(),
            ErrorKind::Panicked
        );
        assert_eq!(outcome_error("no such kind", "x").kind(), ErrorKind::Io);
        assert_eq!(shown("a\nb"), "a\\nb");
        let j = br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"S","stream_seq":42,"deliveries":3}"#;
        assert_eq!(advisory_seq(j), Some(42));
        assert_eq!(advisory_seq(b"{}"), None);
        assert_eq!(advisory_seq(br#""stream_seq":"#), None);
        assert_eq!(
            advisory_seq(br#""stream_seq":99999999999999999999999"#),
            None
        );
    }
}
