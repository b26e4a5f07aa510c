//! Beyond one machine: the [`Executor`](crate::pool::Executor), a
//! `JoinableQueue` and a dict on [NATS JetStream](https://docs.nats.io/nats-concepts/jetstream)
//! (feature `nats`).
//!
//! When work outgrows one host, the local [`ProcessPool`](crate::pool::ProcessPool)
//! code keeps working: a [`ClusterPool`] is an `Executor` whose tasks travel
//! through a JetStream work-queue stream to [`Worker`]s on any number of
//! machines, and whose results come back to the submitter. ipckit builds no
//! cluster of its own: JetStream provides persistence, acknowledgement,
//! redelivery, clustering and authentication; this module provides the
//! Python-shaped, blocking, typed API on the official client
//! ([`async-nats`](https://docs.rs/async-nats)), run on a runtime kept
//! inside the crate (one background thread per [`Cluster`] connection).
//!
//! ```no_run
//! use ipckit::cluster::{Cluster, ClusterPool, Connect, Registry, Worker};
//! use ipckit::pool::Executor;
//!
//! #[inline(never)] // one address per function: see "Functions travel by name"
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! # fn main() -> ipckit::Result<()> {
//! // Both sides name the functions that may travel.
//! let registry = Registry::new().register("square", square);
//! let cluster = Cluster::connect(&Connect::new("nats://127.0.0.1:4222"))?;
//!
//! // On any machine: a worker (usually its own program; see examples/cluster_worker.rs).
//! let worker = Worker::builder(&cluster, "demo").concurrency(2).start(&registry)?;
//!
//! // The submitter: the same calls as on a local pool.
//! let pool = ClusterPool::builder(&cluster, "demo").connect(&registry)?;
//! assert_eq!(pool.submit(square, 7)?.result()?, 49);
//! let squares: Vec<u64> = pool.map(square, 0..1000u64).collect::<ipckit::Result<_>>()?;
//! assert_eq!(squares[999], 998_001);
//! worker.stop()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Functions travel by name
//!
//! A local process pool sends a function as an offset into the shared
//! executable; between different programs on different machines that means
//! nothing. Both sides therefore hold a [`Registry`] of named functions
//! (`Registry::new().register("square", square)`, or
//! [`registry!`](crate::registry)`[square, add]`). `pool.submit(square, 7)`
//! looks the function up by its address in the submitter's registry and
//! sends its name with the argument's and result's type names; a worker runs
//! the function registered under that name if its types match, and answers
//! with a clear per-task error otherwise: [`ErrorKind::NotFound`] for an
//! unknown name, [`ErrorKind::WrongType`] for other types,
//! [`ErrorKind::Codec`] for bytes that do not decode. A function that was not
//! registered fails `submit` at once.
//!
//! Rust gives no function a guaranteed unique address: an optimised build
//! may copy a small function into each codegen unit that uses it, so the
//! pointer `submit` receives may not be the one registered. Declare the
//! functions you submit `#[inline(never)]` (one address each), or submit by
//! name with [`ClusterPool::submit_named`]; an unknown address is always an
//! error naming both remedies, never a guess.
//!
//! # Semantics
//!
//! - **At least once.** A task is acknowledged after its result is stored.
//!   A worker that dies or stalls (no progress heartbeat within
//!   [`ack_wait`](ClusterPoolBuilder::ack_wait)) loses the task to another
//!   worker: it runs again, and the function can read its attempt number
//!   with [`current_attempt`]. The submitter keeps
//!   the first result of every task, so each result is *delivered* once;
//!   side effects of a task may happen more than once: make them idempotent.
//! - **Max deliveries.** A task delivered
//!   [`max_deliver`](ClusterPoolBuilder::max_deliver) times without a result
//!   (it kills or stalls every worker) fails with [`ErrorKind::ProcessDied`]
//!   instead of looping.
//! - **Ordering.** Workers take tasks in submission order; with more than
//!   one worker they finish in any order. `map` yields in input order, as
//!   locally.
//! - **Durability.** Tasks, results, queue items and dict entries are kept in
//!   JetStream file storage: a server restart loses none of them. A
//!   submitter that exits loses its pending handles (the tasks still run;
//!   their results are dropped, or, if it crashed, kept for
//!   [`result_ttl`](ClusterPoolBuilder::result_ttl)). A result received is
//!   deleted from the server ([`ClusterPool::backlog`]).
//! - **Cancel.** [`TaskHandle::cancel`](crate::pool::TaskHandle::cancel)
//!   deletes a task no worker has announced it started. A worker that takes
//!   it in the instant before may still run it; its result is then dropped.
//!
//! # Security
//!
//! Credentials are the NATS server's own ([`Connect::user_password`],
//! [`Connect::token`], [`Connect::nkey`], [`Connect::credentials_file`],
//! `tls://` URLs with [`Connect::root_certificate`]); ipckit adds no scheme of
//! its own. Every byte from the wire is untrusted: task and result envelopes
//! are decoded with limits, names and subjects are validated, and a bad
//! message is a per-task error, never a worker crash.

mod connect;
mod dict;
mod pool;
mod queue;
mod registry;
mod runtime;
pub(crate) mod wire;
mod worker;

pub use connect::{Cluster, Connect};
pub use dict::ClusterDict;
pub use pool::{ClusterPool, ClusterPoolBuilder};
pub use queue::{ClusterQueue, Job};
pub use registry::Registry;
pub use worker::{Worker, WorkerBuilder, WorkerStats, current_attempt};

use crate::error::{Error, ErrorKind, Result};

/// Checks a pool, queue or dict name: 1 to 64 of `A-Z a-z 0-9 _ -` (it becomes
/// part of stream names and subjects, where `.`, `*`, `>` and spaces mean
/// something).
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!("{what} name {name:?} must be 1 to 64 of A-Z a-z 0-9 _ -"),
        ));
    }
    Ok(())
}

/// An error from the NATS client, with what was being done.
pub(crate) fn nats_error(context: impl std::fmt::Display, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    let kind = if lower.contains("authorization") || lower.contains("authentication") {
        ErrorKind::AuthenticationFailed
    } else if lower.contains("timed out") || lower.contains("timeout") {
        ErrorKind::Timeout
    } else if lower.contains("maximum payload") || lower.contains("max_payload") {
        ErrorKind::LimitExceeded
    } else {
        ErrorKind::Io
    };
    Error::new(kind, format!("{context}: {text}"))
}
