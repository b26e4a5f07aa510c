//! The worker side of a process pool: what runs in each worker process.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::process::{RemoteCall, Report};
use crate::queue::Queue;
use crate::segment::Segment;

/// A word shared by the pool and one worker that decides who owns a task
/// sent ahead (`prefetched`): the pool stores the task's id before sending
/// it; the worker may run it only if it swaps the id for 0, and the pool
/// may cancel it (or give it to another worker) only if it does. One
/// compare-and-swap each, so a prefetched task runs at most once and is
/// never cancelled once it started.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Claim {
    seg: Segment,
}

impl Claim {
    pub(crate) fn new() -> Result<Claim> {
        Ok(Claim {
            seg: Segment::new(8)?,
        })
    }

    fn word(&self) -> &AtomicU64 {
        let p = self
            .seg
            .ptr_at(0, 8)
            .expect("a claim segment holds 8 bytes");
        // SAFETY: the mapping is page-aligned, at least 8 bytes long, lives
        // as long as `self.seg`, and is only accessed through this atomic
        // (by the pool and its one worker); every bit pattern is a u64.
        unsafe { &*p.cast::<AtomicU64>() }
    }

    /// The pool: task `id` is being sent ahead.
    pub(crate) fn offer(&self, id: u64) {
        // Ordering: SeqCst, before the send; the queue orders the rest.
        self.word().store(id, Ordering::SeqCst);
    }

    /// Whether no offer is outstanding (the last one was taken). Only then
    /// may the pool offer another: one word decides one task at a time.
    pub(crate) fn is_free(&self) -> bool {
        // Ordering: SeqCst like every access to the word; the pool reads it
        // under its state lock, and a stale "taken" only delays an offer.
        self.word().load(Ordering::SeqCst) == 0
    }

    /// Either side: takes task `id`; `false` if the other side has.
    pub(crate) fn take(&self, id: u64) -> bool {
        // SYNC POINT "claim": one winner per offered id.
        self.word()
            .compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub tasks: Queue<()>,
    pub claim: Claim,
    pub results: Queue<()>,
    pub slot: u32,
    pub generation: u64,
    pub initializer: Option<(RemoteCall, Vec<u8>)>,
    pub max_tasks: Option<u64>,
    /// The pool's limit on an encoded argument or result.
    pub max_message: u64,
}

/// Pool → worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToWorker {
    Run {
        id: u64,
        call: RemoteCall,
        #[serde(with = "serde_bytes")]
        arg: Vec<u8>,
        /// Sent ahead, behind the running task: run only after winning the
        /// claim (see [`Claim`]); skip silently otherwise.
        prefetched: bool,
    },
    Stop,
}

/// Worker → pool.
#[derive(Serialize, Deserialize)]
pub(crate) enum FromWorker {
    Done {
        slot: u32,
        generation: u64,
        id: u64,
        report: Report,
        retiring: bool,
    },
    InitFailed {
        slot: u32,
        generation: u64,
        report: Report,
    },
}

impl FromWorker {
    /// The same message with its report replaced by the failure `why`.
    fn failed_instead(&self, why: Error) -> FromWorker {
        match self {
            FromWorker::Done {
                slot,
                generation,
                id,
                retiring,
                ..
            } => FromWorker::Done {
                slot: *slot,
                generation: *generation,
                id: *id,
                report: Report::Failed(why),
                retiring: *retiring,
            },
            FromWorker::InitFailed {
                slot, generation, ..
            } => FromWorker::InitFailed {
                slot: *slot,
                generation: *generation,
                report: Report::Failed(why),
            },
        }
    }
}

/// The worker process's main function (run through `Process::spawn`).
pub(crate) fn worker_main(mut args: WorkerArgs) {
    let limit = usize::try_from(args.max_message).unwrap_or(usize::MAX);
    args.tasks.set_max_message_size(limit);
    args.results.set_max_message_size(limit);
    let send = |msg: &FromWorker| {
        let bytes = codec::encode(msg).expect("worker messages encode");
        // If the pool is gone, so are we soon (daemon); nothing to report to.
        match args.results.put_bytes(&bytes) {
            Err(e) if e.kind() == ErrorKind::LimitExceeded => {
                // Too large to send: the task fails with that instead (a
                // lost report would leave it running for ever).
                let why = Error::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "its result encodes to {} bytes, over the pool's message limit of \
                         {limit} (ProcessPoolBuilder::max_message_size)",
                        bytes.len()
                    ),
                );
                if let Ok(bytes) = codec::encode(&msg.failed_instead(why)) {
                    let _ = args.results.put_bytes(&bytes);
                }
            }
            _ => {}
        }
    };
    if let Some((call, arg)) = &args.initializer {
        let report = call.run(arg);
        if !matches!(report, Report::Returned(_)) {
            send(&FromWorker::InitFailed {
                slot: args.slot,
                generation: args.generation,
                report,
            });
            return;
        }
    }
    let mut buf = Vec::new();
    let mut done = 0u64;
    loop {
        if args.tasks.get_bytes_into(&mut buf).is_err() {
            return; // the queue was closed: the pool is stopping
        }
        match codec::decode::<ToWorker>(&buf) {
            Ok(ToWorker::Run {
                id,
                call,
                arg,
                prefetched,
            }) => {
                if prefetched && !args.claim.take(id) {
                    continue; // cancelled, or given to another worker
                }
                let report = call.run(&arg);
                done += 1;
                let retiring = args.max_tasks.is_some_and(|m| done >= m);
                send(&FromWorker::Done {
                    slot: args.slot,
                    generation: args.generation,
                    id,
                    report,
                    retiring,
                });
                if retiring {
                    return;
                }
            }
            Ok(ToWorker::Stop) | Err(_) => return,
        }
    }
}
