//! Terminal 1 of the ping-pong pair: listens on a unix socket with an auth
//! key and echoes every message back.
//!
//! ```text
//! terminal 1:  cargo run --release --example pipe_pong -- /tmp/ipckit-ping.sock secret
//! terminal 2:  cargo run --release --example pipe_ping -- /tmp/ipckit-ping.sock secret 100000
//! ```

use ipckit::connection::{Address, Listener};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    ipckit::init();
    let mut args = std::env::args().skip(1);
    let address = Address::parse(
        &args
            .next()
            .unwrap_or_else(|| "/tmp/ipckit-ping.sock".into()),
    )?;
    let key = args.next().unwrap_or_else(|| "secret".into());
    let listener = Listener::bind(address.clone(), Some(key.as_bytes()))?;
    println!("pong: listening on {address} (auth key required)");
    loop {
        let conn = match listener.accept() {
            Ok(c) => c,
            Err(e) => {
                // A client with the wrong key, or garbage: drop it, keep serving.
                eprintln!("pong: {e}");
                continue;
            }
        };
        let mut buf = Vec::new();
        let mut n = 0u64;
        while conn.recv_bytes_into(&mut buf).is_ok() {
            if buf.is_empty() {
                // An empty message ends the session and the server.
                println!("pong: echoed {n} messages; done");
                return Ok(());
            }
            conn.send_bytes(&buf)?;
            n += 1;
        }
        println!("pong: client left after {n} messages; waiting for the next");
    }
}
