//! The worker side of a process pool: what runs in each worker process.

use serde::{Deserialize, Serialize};

use crate::codec;
use crate::process::{RemoteCall, Report};
use crate::queue::Queue;

/// What a worker is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub tasks: Queue<()>,
    pub results: Queue<()>,
    pub slot: u32,
    pub generation: u64,
    pub initializer: Option<(RemoteCall, Vec<u8>)>,
    pub max_tasks: Option<u64>,
}

/// Pool → worker.
#[derive(Serialize, Deserialize)]
pub(crate) enum ToWorker {
    Run {
        id: u64,
        call: RemoteCall,
        arg: Vec<u8>,
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

/// The worker process's main function (run through `Process::spawn`).
pub(crate) fn worker_main(args: WorkerArgs) {
    let send = |msg: &FromWorker| {
        let bytes = codec::encode(msg).expect("worker messages encode");
        // If the pool is gone, so are we soon (daemon); nothing to report to.
        let _ = args.results.put_bytes(&bytes);
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
            Ok(ToWorker::Run { id, call, arg }) => {
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
