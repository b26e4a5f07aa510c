//! A cluster worker: serves the pool's tasks until Ctrl-C or SIGTERM.
//!
//! Start a server (`nats-server -js`), then in one terminal, or on as many
//! machines as you like:
//!
//! ```sh
//! cargo run --release --features nats --example cluster_worker -- nats://127.0.0.1:4222
//! ```
//!
//! and in another the submitter (`examples/cluster_submit.rs`). Kill a
//! worker with `kill -9` mid-task: its task runs again on another one.

#[path = "support/cluster_tasks.rs"]
mod cluster_tasks;

use ipckit::cluster::{Cluster, Connect, Worker};

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let pool = std::env::args().nth(2).unwrap_or_else(|| "demo".into());
    let cluster = Cluster::connect(&Connect::new(&url).name("ipckit-example-worker"))?;
    let registry = cluster_tasks::registry();
    eprintln!(
        "worker {} serving pool {pool:?} on {url} with {:?}; Ctrl-C to stop",
        std::process::id(),
        registry.names()
    );
    let stats = Worker::builder(&cluster, &pool).serve(&registry)?;
    eprintln!("worker {} stopped: {stats:?}", std::process::id());
    Ok(())
}
