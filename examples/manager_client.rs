//! Terminal 2 of the manager pair: connects to `manager_server` over TCP
//! with the auth key, puts jobs on the named queue, takes them back off as
//! a worker would, records results in the named dict, shows that a wrong
//! key is refused, and shuts the server down.
//!
//! ```text
//! terminal 1:  cargo run --release --example manager_server -- 127.0.0.1:50000 secret
//! terminal 2:  cargo run --release --example manager_client -- 127.0.0.1:50000 secret
//! ```

use std::time::{Duration, Instant};

use ipckit::connection::Address;
use ipckit::manager::Manager;

fn connect(address: &Address, key: &str) -> ipckit::Result<Manager> {
    // The server may still be starting: retry for a few seconds.
    let start = Instant::now();
    loop {
        match Manager::connect(address.clone(), Some(key.as_bytes())) {
            Err(e) if e.is_closed() && start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => return r,
        }
    }
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let mut args = std::env::args().skip(1);
    let address = Address::parse(&args.next().unwrap_or_else(|| "127.0.0.1:50000".into()))?;
    let key = args.next().unwrap_or_else(|| "secret".into());

    let manager = connect(&address, &key)?;
    let jobs = manager.named("jobs").queue::<u64>(0)?;
    let results = manager.named("results").dict::<u64, u64>()?;
    for n in 1..=1000 {
        jobs.put(&n)?;
    }
    let start = Instant::now();
    while let Ok(n) = jobs.try_get() {
        results.insert(&n, &(n * n))?;
    }
    let took = start.elapsed();
    println!(
        "client: {} results via {address} in {:.1} ms ({:.1} µs per get + insert)",
        results.len()?,
        took.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e6 / 1000.0
    );
    println!("client: 12² = {:?}", results.get(&12)?);

    match Manager::connect(address.clone(), Some(b"wrong key")) {
        Err(e) => println!("client: a wrong key is refused: {e}"),
        Ok(_) => panic!("a wrong key was accepted"),
    }
    manager.shutdown()?;
    println!("client: server shut down");
    Ok(())
}
