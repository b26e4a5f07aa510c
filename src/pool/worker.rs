//! The worker side of a process pool: what runs in each worker process.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::process::{RemoteCall, Report};
use crate::queue::Queue;
use crate::segment::Segment;

/// How many tasks the pool may send a worker ahead of the one it runs.
///
/// One was not enough for short tasks: the worker ran its task sent ahead,
/// then idled until the pool had heard of it and sent the next, a wake-up
/// (tens of µs on a VM) per task (a `map` of 10 000 empty tasks in chunks
/// of 1250 on 2 workers: 8 chunks, each worker waiting on the pool
/// between its chunks). With a few, the parent is off the critical path;
/// a worker left idle takes tasks sent ahead to another back (`steal`), so
/// sending ahead never leaves a worker idle while tasks wait. Measured:
/// see `docs/design-measurements.md`, "Tasks sent ahead: up to 4".
pub(crate) const AHEAD: usize = 4;

/// Words shared by the pool and one worker that decide who owns a task
/// sent ahead: one per slot, [`AHEAD`] slots. The pool stores the task's id
/// in a free slot (0) before sending it, with the slot's index; the worker
/// may run it only if it swaps the id for 0, and the pool may cancel it (or
/// give it to another worker) only if it does. One compare-and-swap each,
/// so a task sent ahead runs at most once and is never cancelled once it
/// started. Ids are unique, so a slot reused for another task never makes
/// a stale take succeed.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Claim {
    seg: Segment,
}

impl Claim {
    pub(crate) fn new() -> Result<Claim> {
        Ok(Claim {
            seg: Segment::new(8 * AHEAD)?,
        })
    }

    /// The word of `slot`, if there is one (the index travels in the task
    /// message).
    fn word(&self, slot: usize) -> Option<&AtomicU64> {
        if slot >= AHEAD {
            return None;
        }
        let p = self.seg.ptr_at(8 * slot, 8).ok()?;
        // SAFETY: the mapping is page-aligned and holds `AHEAD` words, so
        // the pointer is 8-aligned and in bounds; it lives as long as
        // `self.seg`, and is only accessed through this atomic (by the pool
        // and its one worker); every bit pattern is a u64.
        Some(unsafe { &*p.cast::<AtomicU64>() })
    }

    /// The pool: a slot with no offer outstanding (the last one was
    /// taken), if any.
    pub(crate) fn free_slot(&self) -> Option<usize> {
        // Ordering: SeqCst like every access to the words; the pool reads
        // them under its state lock, and a stale "taken" only delays an offer.
        (0..AHEAD).find(|&i| self.word(i).is_some_and(|w| w.load(Ordering::SeqCst) == 0))
    }

    /// The pool: task `id` is being sent ahead in `slot`.
    pub(crate) fn offer(&self, slot: usize, id: u64) {
        if let Some(w) = self.word(slot) {
            // Ordering: SeqCst, before the send; the queue orders the rest.
            w.store(id, Ordering::SeqCst);
        }
    }

    /// Either side: takes task `id` offered in `slot`; `false` if the other
    /// side has (or there is no such slot).
    pub(crate) fn take(&self, slot: usize, id: u64) -> bool {
        // SYNC POINT "claim": one winner per offered id.
        self.word(slot).is_some_and(|w| {
            w.compare_exchange(id, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
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
        /// Sent ahead, behind the running task, in this claim slot: run
        /// only after winning the claim (see [`Claim`]); skip silently
        /// otherwise.
        ahead: Option<u32>,
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
                ahead,
            }) => {
                if ahead.is_some_and(|slot| !args.claim.take(slot as usize, id)) {
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
