//! Terminal 1 of the manager pair: serves a manager over TCP with an auth
//! key, holding a named job queue and a named results dict. Python's
//! `BaseManager(address, authkey).get_server().serve_forever()`.
//!
//! ```text
//! terminal 1:  cargo run --release --example manager_server -- 127.0.0.1:50000 secret
//! terminal 2:  cargo run --release --example manager_client -- 127.0.0.1:50000 secret
//! ```
//!
//! The client fills the queue, works through it, and shuts the server down.

use ipckit::connection::Address;
use ipckit::manager::Manager;

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let mut args = std::env::args().skip(1);
    let address = Address::parse(&args.next().unwrap_or_else(|| "127.0.0.1:50000".into()))?;
    let key = args.next().unwrap_or_else(|| "secret".into());
    println!("manager: serving on {address} (auth key required); a client's shutdown() stops it");
    Manager::builder()
        .address(address)
        .authkey(key.as_bytes())
        .serve()?;
    println!("manager: shut down by a client");
    Ok(())
}
