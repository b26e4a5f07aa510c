//! The client side: connections to a manager, shared by every proxy of the
//! same manager in a process, and the proxies' serialised form.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::protocol::{Hello, PROTOCOL_VERSION, Reply, Request};
use crate::codec;
use crate::connection::{Address, AuthKey, Client};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::Connection;
use crate::platform;

/// Idle connections kept per manager and process: enough for a connection
/// per thread of a busy program (each is a thread on the server). With 16,
/// 100 threads making calls reconnected most of the time and per-thread
/// times spread 7.8x; a thread beyond the pool still gets served, at the
/// cost of a connection and handshake per call.
const MAX_IDLE: usize = 128;

/// How long a waiting side polls its socket before it sleeps in `recv`: a
/// request's round trip is much shorter when both sides are awake than a
/// sleep and wake-up. Both the client (for the reply) and the server thread
/// (for the next request) poll, so back-to-back calls never sleep.
/// Measured: see `docs/design-measurements.md`, "Manager sockets poll
/// before sleeping".
pub(crate) const POLL_BEFORE_SLEEP: Duration = Duration::from_micros(50);

/// Polls `conn` for up to [`POLL_BEFORE_SLEEP`] (not in a process confined
/// to one CPU, where polling only delays the peer); true if readable.
pub(crate) fn poll_briefly(conn: &Connection) -> bool {
    // Nor on a machine with more runnable threads than CPUs (a server with
    // a hundred busy clients is one): polling would take the CPU from the
    // threads that make progress.
    if !crate::sync::raw::spin_allowed() || crate::sync::raw::machine_busy() {
        return false;
    }
    let start = std::time::Instant::now();
    loop {
        if conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
            return true;
        }
        if start.elapsed() >= POLL_BEFORE_SLEEP {
            return false;
        }
        std::hint::spin_loop();
    }
}

/// This process's identity towards managers (random, so a recycled pid is
/// never mistaken for a dead client).
fn client_id() -> u128 {
    static ID: OnceLock<u128> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut b = [0u8; 16];
        platform::random_bytes(&mut b).expect("the kernel's random source is available");
        u128::from_le_bytes(b)
    })
}

/// The calling thread's number, for reentrant-lock ownership.
pub(crate) fn thread_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static ID: u64 = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    ID.with(|id| *id)
}

/// One manager as seen from this process.
pub(crate) struct Core {
    pub(crate) address: Address,
    authkey: Option<AuthKey>,
    max_message: usize,
    idle: Mutex<Vec<Connection>>,
    /// A connection never used for calls, open while this process has the
    /// core: the server releases what this process holds (locks, permits)
    /// when its last connection closes, and this one closes only when the
    /// process dies or drops its last proxy — never because a call failed
    /// and took its own connection with it.
    lifeline: Mutex<Option<Connection>>,
    has_lifeline: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("address", &self.address)
            .finish()
    }
}

/// The cores of this process, so that proxies received from elsewhere share
/// connections with those made here.
static CORES: Mutex<Vec<Weak<Core>>> = Mutex::new(Vec::new());

impl Core {
    pub(crate) fn get(address: Address, authkey: Option<AuthKey>, max_message: usize) -> Arc<Core> {
        let mut cores = CORES.lock().unwrap_or_else(|e| e.into_inner());
        cores.retain(|w| w.strong_count() > 0);
        for w in cores.iter() {
            if let Some(c) = w.upgrade() {
                if c.address == address && c.authkey == authkey {
                    return c;
                }
            }
        }
        let core = Arc::new(Core {
            address,
            authkey,
            max_message,
            idle: Mutex::new(Vec::new()),
            lifeline: Mutex::new(None),
            has_lifeline: std::sync::atomic::AtomicBool::new(false),
        });
        cores.push(Arc::downgrade(&core));
        core
    }

    fn gone(&self, e: Error) -> Error {
        // Anything but a clean reply means the connection is unusable; if
        // the server is gone, say so plainly.
        if e.kind() == ErrorKind::LimitExceeded {
            return e.context(format!("manager at {}", self.address));
        }
        Error::new(
            ErrorKind::Closed,
            format!("the manager at {} is gone: {e}", self.address),
        )
    }

    fn connect(&self) -> Result<Connection> {
        let mut conn = Client::connect_timeout(
            self.address.clone(),
            self.authkey.as_ref().map(AuthKey::as_bytes),
            Duration::from_secs(10),
        )
        .map_err(|e| match e.kind() {
            ErrorKind::AuthenticationFailed => e,
            _ => Error::new(
                ErrorKind::Closed,
                format!("cannot reach the manager at {}: {e}", self.address),
            ),
        })?;
        conn.set_max_message_size(self.max_message);
        let hello = Hello {
            protocol: PROTOCOL_VERSION,
            client: client_id(),
        };
        conn.send_bytes(&codec::encode(&hello)?)
            .map_err(|e| self.gone(e))?;
        let mut buf = Vec::new();
        conn.recv_bytes_into(&mut buf).map_err(|e| self.gone(e))?;
        codec::decode::<Reply>(&buf)?.unit()?;
        Ok(conn)
    }

    /// Opens the lifeline (see `Core::lifeline`) if it is not open yet. If
    /// it cannot be opened now, the call goes on and a later one retries.
    fn ensure_lifeline(&self) {
        use std::sync::atomic::Ordering;
        // Ordering: Acquire pairs with the Release below; the connection
        // itself is behind the mutex.
        if self.has_lifeline.load(Ordering::Acquire) {
            return;
        }
        let mut l = self.lifeline.lock().unwrap_or_else(|e| e.into_inner());
        if l.is_none() {
            if let Ok(c) = self.connect() {
                *l = Some(c);
                self.has_lifeline.store(true, Ordering::Release);
            }
        }
    }

    /// Sends one request and waits for its reply, on an idle connection or
    /// a new one. A connection that failed is dropped, never reused.
    pub(crate) fn call(&self, req: &Request) -> Result<Reply> {
        thread_local! {
            static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        // Refused before a connection is taken: dropping one here would
        // look to the server like this client leaving.
        let bytes = codec::encode(req)?;
        if bytes.len() > self.max_message {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a request of {} bytes exceeds the manager's limit of {} bytes",
                    bytes.len(),
                    self.max_message
                ),
            ));
        }
        self.ensure_lifeline();
        let conn = match self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            Some(c) => c,
            None => self.connect()?,
        };
        let reply = BUF.with(|buf| -> Result<Reply> {
            let mut buf = buf.borrow_mut();
            conn.send_bytes(&bytes).map_err(|e| self.gone(e))?;
            poll_briefly(&conn);
            conn.recv_bytes_into(&mut buf).map_err(|e| self.gone(e))?;
            codec::decode::<Reply>(&buf)
                .map_err(|e| e.context(format!("garbage from the manager at {}", self.address)))
        })?;
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(reply)
    }

    pub(crate) fn token(&self, id: u64) -> Token {
        let (unix, address) = match &self.address {
            Address::Unix(p) => {
                use std::os::unix::ffi::OsStrExt;
                (true, p.as_os_str().as_bytes().to_vec())
            }
            Address::Tcp(a) => (false, a.to_string().into_bytes()),
        };
        Token {
            unix,
            address,
            authkey: self.authkey.clone(),
            max_message: self.max_message as u64,
            id,
        }
    }
}

/// A proxy as it travels to another process: where its manager is, the
/// key, and the object's number.
#[derive(Serialize, Deserialize)]
pub(crate) struct Token {
    unix: bool,
    address: Vec<u8>,
    authkey: Option<AuthKey>,
    max_message: u64,
    pub(crate) id: u64,
}

impl Token {
    pub(crate) fn core(self) -> Result<(Arc<Core>, u64)> {
        let address = if self.unix {
            use std::os::unix::ffi::OsStringExt;
            Address::Unix(PathBuf::from(std::ffi::OsString::from_vec(self.address)))
        } else {
            let s = String::from_utf8(self.address).map_err(|_| {
                Error::new(ErrorKind::Codec, "a manager proxy's address is not text")
            })?;
            Address::Tcp(s.parse().map_err(|_| {
                Error::new(
                    ErrorKind::Codec,
                    format!("a manager proxy's address {s:?} is not an address"),
                )
            })?)
        };
        let max = usize::try_from(self.max_message).unwrap_or(usize::MAX);
        Ok((Core::get(address, self.authkey, max), self.id))
    }
}
