//! Managers: shared containers served by a manager process, locally or over
//! TCP — Python's `multiprocessing.Manager` and `BaseManager`.
//!
//! ```
//! use ipckit::manager::Manager;
//!
//! # fn main() -> ipckit::Result<()> {
//! # ipckit::init();
//! let manager = Manager::start()?;              // a server process
//! let scores = manager.dict::<String, u32>()?;  // a typed proxy
//! scores.insert(&"ada".to_owned(), &36)?;
//! assert_eq!(scores.get(&"ada".to_owned())?, Some(36));
//! manager.shutdown()?;
//! # Ok(()) }
//! ```
//!
//! Proxies ([`DictProxy`], [`ListProxy`], [`ValueProxy`], [`QueueProxy`], [`LockProxy`],
//! [`RLockProxy`], [`SemaphoreProxy`], [`EventProxy`], [`ConditionProxy`], [`BarrierProxy`],
//! [`NamespaceProxy`]) are cheap, cloneable and serialisable: pass them to child
//! processes ([`crate::process::Process::spawn`]) or pool tasks, and they
//! connect to the same manager there.
//!
//! # How it works
//!
//! [`Manager::start`] spawns a server process (through
//! [`crate::process`], as a daemon, so it dies with its owner) listening on
//! a unix socket in a private `0700` directory, with a random key for the
//! HMAC handshake of [`crate::connection`]. The server keeps every object as
//! encoded bytes and needs no knowledge of your types; proxies encode and
//! decode. Each client connection has a thread on the server, as in Python.
//!
//! For other programs and machines, serve on an address of your choice with
//! a key ([`ManagerBuilder::serve`] in the serving program, or
//! [`ManagerBuilder::start`] for a server process) and
//! [`Manager::connect`] from the others; objects are found by name with
//! [`Manager::named`].
//!
//! # Robustness
//!
//! - If the server dies, every call fails at once with a
//!   [`Closed`](crate::ErrorKind::Closed) error ("the manager at … is
//!   gone"); nothing hangs.
//! - A client that dies or sends garbage does not disturb the server or the
//!   other clients: a request that does not decode gets an error reply, a
//!   broken frame closes that one connection, and requests are limited in
//!   size ([`ManagerBuilder::max_message_size`], 1 GiB by default:
//!   [`DEFAULT_MAX_MESSAGE`]).
//! - Locks, rlocks, conditions and semaphore permits held by a client
//!   process are released when its last connection closes (it exited or
//!   died); a barrier whose waiter dies is broken rather than left hanging.
//!
//! # Differences from Python
//!
//! - Objects live until the manager shuts down (Python frees an object when
//!   its last proxy is gone). Create long-lived objects once, by name if
//!   other programs need them.
//! - Dict keys and list items are compared by their encoding.
//! - A proxy carries the manager's key when sent to another process (as
//!   Python's processes inherit it): send proxies only to parties you trust.

mod client;
mod protocol;
mod proxy;
mod server;

/// A client's hello, as the fuzz target's client sends it first.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_hello() -> Vec<u8> {
    codec::encode(&protocol::Hello {
        protocol: protocol::PROTOCOL_VERSION,
        client: 7,
    })
    .expect("a hello encodes")
}

/// Serves one already-authenticated connection on a fresh server, as a
/// manager's client thread does, until it ends.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_serve(conn: Connection) {
    server::Server::new().serve_one(conn);
}

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use proxy::{
    BarrierProxy, ConditionGuard, ConditionProxy, DictProxy, EventProxy, ListProxy, LockGuard,
    LockProxy, NamespaceProxy, QueueProxy, RLockGuard, RLockProxy, SemaphoreGuard, SemaphoreProxy,
    ValueProxy,
};

/// The server-less containers, for when speed matters more than the
/// manager's flexibility: see [`crate::collections`].
pub use crate::collections::{Item, ShareableList, SharedMap};

use crate::codec;
use crate::connection::{Address, AuthKey, Listener};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Connection, Pipe};
use crate::platform;
use crate::process::Process;
use client::Core;
use protocol::{Kind, Request};
use proxy::Proxy;

pub use crate::codec::DEFAULT_MAX_MESSAGE;

/// A manager: owns a server process ([`start`](Manager::start)) or is
/// connected to one served elsewhere ([`connect`](Manager::connect)).
///
/// Dropping the owning `Manager` shuts its server down (proxies then fail
/// with `Closed` errors); dropping a connected one only disconnects.
pub struct Manager {
    core: Arc<Core>,
    owned: Option<Owned>,
}

struct Owned {
    server: Process<()>,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("address", &self.core.address)
            .field("owner", &self.owned.is_some())
            .finish()
    }
}

/// Options for a manager's server: address, key, size limit.
#[derive(Debug, Clone)]
pub struct ManagerBuilder {
    address: Option<Address>,
    authkey: Option<AuthKey>,
    max_message: usize,
    max_pending: usize,
}

/// What the server process receives.
#[derive(Serialize, Deserialize)]
struct ServerArgs {
    unix: Option<PathBuf>,
    tcp: Option<String>,
    authkey: Option<AuthKey>,
    max_message: u64,
    max_pending: u64,
    ready: Connection,
}

/// The server process's main function.
fn server_main(args: ServerArgs) {
    let address = match (&args.unix, &args.tcp) {
        (Some(p), _) => Ok(Address::Unix(p.clone())),
        (None, Some(t)) => Address::parse(t),
        (None, None) => Err(Error::new(ErrorKind::InvalidArgument, "no address")),
    };
    let listener = address.and_then(|a| {
        let mut l = Listener::bind(a, args.authkey.as_ref().map(AuthKey::as_bytes))?;
        l.set_max_message_size(args.max_message as usize);
        l.set_max_pending_handshakes(usize::try_from(args.max_pending).unwrap_or(usize::MAX));
        Ok(l)
    });
    let listener = match listener {
        Ok(l) => {
            let bound = match l.address() {
                Address::Unix(p) => p.display().to_string(),
                Address::Tcp(a) => a.to_string(),
            };
            let _ = args.ready.send(&Ok::<String, Error>(bound));
            l
        }
        Err(e) => {
            // The error travels with its kind (NotFound for a socket in a
            // missing directory, PermissionDenied, …).
            let _ = args.ready.send(&Err::<String, Error>(e));
            return;
        }
    };
    drop(args.ready);
    let _ = server::Server::new().serve(&listener);
}

impl Default for ManagerBuilder {
    fn default() -> Self {
        ManagerBuilder {
            address: None,
            authkey: None,
            max_message: DEFAULT_MAX_MESSAGE,
            max_pending: crate::connection::DEFAULT_MAX_PENDING_HANDSHAKES,
        }
    }
}

impl ManagerBuilder {
    /// Where to listen: a unix-socket path or a TCP address (port 0 picks
    /// one). Default: a socket in a fresh private directory.
    pub fn address(mut self, address: impl Into<Address>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The key clients must prove (HMAC-SHA256 challenge). Default for
    /// [`start`](Self::start): 32 random bytes, inherited by proxies.
    /// Required for TCP.
    pub fn authkey(mut self, key: impl AsRef<[u8]>) -> Self {
        self.authkey = Some(AuthKey::new(key.as_ref()));
        self
    }

    /// The largest request or reply, in bytes (default
    /// [`DEFAULT_MAX_MESSAGE`], 1 GiB).
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// How many peers may be in the handshake at once (default
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES`](crate::connection::DEFAULT_MAX_PENDING_HANDSHAKES),
    /// 64); a peer arriving beyond that is closed at once, so peers that
    /// never authenticate cannot take the server's threads or memory.
    pub fn max_pending_handshakes(mut self, n: usize) -> Self {
        self.max_pending = n.max(1);
        self
    }

    fn key_for_tcp(&self) -> Result<()> {
        if matches!(self.address, Some(Address::Tcp(_))) && self.authkey.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a manager on TCP needs an authkey",
            ));
        }
        Ok(())
    }

    /// Starts a server process and returns its owner.
    pub fn start(self) -> Result<Manager> {
        self.key_for_tcp()?;
        let authkey = match self.authkey {
            Some(k) => k,
            None => {
                let mut k = zeroize::Zeroizing::new([0u8; 32]);
                platform::random_bytes(&mut k[..])
                    .map_err(|e| Error::io("cannot make a manager key", e))?;
                AuthKey::new(&k[..])
            }
        };
        let (dir, unix, tcp) = match self.address {
            Some(Address::Unix(p)) => (None, Some(p), None),
            Some(Address::Tcp(a)) => (None, None, Some(a.to_string())),
            None => {
                let dir = private_dir()?;
                let sock = dir.join("manager.sock");
                (Some(dir), Some(sock), None)
            }
        };
        let cleanup = |dir: &Option<PathBuf>| {
            if let Some(d) = dir {
                let _ = std::fs::remove_dir_all(d);
            }
        };
        let (ready_rx, ready_tx) = match Pipe::simplex() {
            Ok(p) => p,
            Err(e) => {
                cleanup(&dir);
                return Err(e);
            }
        };
        let unix_path = unix.clone();
        let args = ServerArgs {
            unix,
            tcp,
            authkey: Some(authkey.clone()),
            max_message: self.max_message as u64,
            max_pending: self.max_pending as u64,
            ready: ready_tx,
        };
        let server = match Process::builder()
            .name("ipckit-manager")
            .daemon(true)
            .spawn(server_main, args)
        {
            Ok(p) => p,
            Err(e) => {
                cleanup(&dir);
                return Err(e.context("cannot start the manager"));
            }
        };
        let mut owned = Owned { server, dir };
        let bound = match ready_rx
            .recv_timeout::<std::result::Result<String, Error>>(Duration::from_secs(60))
        {
            Ok(Ok(bound)) => bound,
            Ok(Err(why)) => {
                owned.stop(Duration::from_secs(5));
                return Err(why.context("the manager could not start"));
            }
            Err(e) => {
                owned.stop(Duration::from_secs(5));
                return Err(e.context("the manager process did not start"));
            }
        };
        let address = match (&owned.dir, &unix_path) {
            (Some(d), _) => Address::Unix(d.join("manager.sock")),
            (None, Some(p)) => Address::Unix(p.clone()),
            (None, None) => match Address::parse(&bound)? {
                // A server on 0.0.0.0 is reached through loopback.
                Address::Tcp(mut a) if a.ip().is_unspecified() => {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                    Address::Tcp(a)
                }
                a => a,
            },
        };
        Ok(Manager {
            core: Core::get(address, Some(authkey), self.max_message),
            owned: Some(owned),
        })
    }

    /// Serves in this process until a client calls
    /// [`Manager::shutdown`] (Python's `serve_forever`). Needs an address.
    pub fn serve(self) -> Result<()> {
        self.key_for_tcp()?;
        let address = self
            .address
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "serve() needs an address"))?;
        let mut listener = Listener::bind(address, self.authkey.as_ref().map(AuthKey::as_bytes))?;
        listener.set_max_message_size(self.max_message);
        listener.set_max_pending_handshakes(self.max_pending);
        server::Server::new().serve(&listener)
    }
}

/// Creates a fresh `0700` directory for a manager's socket.
fn private_dir() -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let mut r = [0u8; 8];
    platform::random_bytes(&mut r).map_err(|e| Error::io("cannot name a manager directory", e))?;
    let dir = std::env::temp_dir().join(format!(
        "ipckit-manager-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(r)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    Ok(dir)
}

impl Owned {
    /// Waits for the server to exit (killing it after `grace`), removes
    /// its directory.
    fn stop(&mut self, grace: Duration) {
        if self.server.join_timeout(grace).is_err() {
            let _ = self.server.kill();
            let _ = self.server.join_timeout(Duration::from_secs(5));
        }
        if let Some(d) = self.dir.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Defines the object constructors, for anonymous and named objects alike.
macro_rules! constructors {
    () => {
        /// A dict (Python's `dict()`).
        pub fn dict<K: Serialize + DeserializeOwned, V: Serialize + DeserializeOwned>(
            &self,
        ) -> Result<DictProxy<K, V>> {
            self.create(0, None)
        }

        /// A list (Python's `list()`).
        pub fn list<T: Serialize + DeserializeOwned>(&self) -> Result<ListProxy<T>> {
            self.create(0, None)
        }

        /// A value with an initial value (Python's `Value(typecode, v)`).
        /// Opening an existing named value keeps its current value.
        pub fn value<T: Serialize + DeserializeOwned>(&self, initial: &T) -> Result<ValueProxy<T>> {
            self.create(0, Some(codec::encode(initial)?))
        }

        /// A queue holding at most `maxsize` items (0: unbounded), Python's
        /// `Queue(maxsize)`.
        pub fn queue<T: Serialize + DeserializeOwned>(
            &self,
            maxsize: usize,
        ) -> Result<QueueProxy<T>> {
            self.create(maxsize as u64, None)
        }

        /// A lock (Python's `Lock()`).
        pub fn lock(&self) -> Result<LockProxy> {
            self.create(0, None)
        }

        /// A reentrant lock (Python's `RLock()`).
        pub fn rlock(&self) -> Result<RLockProxy> {
            self.create(0, None)
        }

        /// A semaphore with `value` permits (Python's `Semaphore(value)`).
        pub fn semaphore(&self, value: u64) -> Result<SemaphoreProxy> {
            self.create(value, None)
        }

        /// An event (Python's `Event()`).
        pub fn event(&self) -> Result<EventProxy> {
            self.create(0, None)
        }

        /// A condition with its own reentrant lock (Python's `Condition()`).
        pub fn condition(&self) -> Result<ConditionProxy> {
            self.create(0, None)
        }

        /// A barrier for `parties` parties (Python's `Barrier(parties)`).
        pub fn barrier(&self, parties: usize) -> Result<BarrierProxy> {
            self.create(parties as u64, None)
        }

        /// A namespace (Python's `Namespace()`).
        pub fn namespace(&self) -> Result<NamespaceProxy> {
            self.create(0, None)
        }
    };
}

impl Manager {
    /// Starts a manager server process with default options (Python's
    /// `multiprocessing.Manager()`).
    pub fn start() -> Result<Manager> {
        ManagerBuilder::default().start()
    }

    /// Options: address, key, size limit.
    pub fn builder() -> ManagerBuilder {
        ManagerBuilder::default()
    }

    /// Connects to a manager served elsewhere ([`ManagerBuilder::serve`] or
    /// [`ManagerBuilder::start`]); checks that it answers.
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Manager> {
        let m = Manager {
            core: Core::get(
                address.into(),
                authkey.map(AuthKey::new),
                DEFAULT_MAX_MESSAGE,
            ),
            owned: None,
        };
        m.core.call(&Request::Ping)?.unit()?;
        Ok(m)
    }

    /// The address the manager listens on.
    pub fn address(&self) -> &Address {
        &self.core.address
    }

    /// The server's process id, for a manager this process started.
    pub fn server_pid(&self) -> Option<u32> {
        self.owned.as_ref().map(|o| o.server.pid())
    }

    /// Objects found by `name`: the first to ask creates the object, later
    /// ones (in any process or program) get the same one. Asking with other
    /// types is a `WrongType` error.
    pub fn named<'a>(&'a self, name: &'a str) -> Named<'a> {
        Named {
            manager: self,
            name,
        }
    }

    /// Forgets a name (the object lives on for proxies that have it); true
    /// if the name existed.
    pub fn unname(&self, name: &str) -> Result<bool> {
        self.core
            .call(&Request::Unname {
                name: name.to_owned(),
            })?
            .bool()
    }

    fn create<P: Proxy>(&self, param: u64, init: Option<Vec<u8>>) -> Result<P> {
        create(&self.core, None, param, init)
    }

    constructors!();

    /// Stops the server: for an owned manager, waits for its process to
    /// exit. Proxies fail with `Closed` errors afterwards.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let r = self.core.call(&Request::Shutdown).and_then(|r| r.unit());
        if let Some(mut owned) = self.owned.take() {
            owned.stop(Duration::from_secs(5));
        }
        r
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if self.owned.is_some() {
            let _ = self.stop();
        }
    }
}

/// Named objects of a manager: see [`Manager::named`].
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    manager: &'a Manager,
    name: &'a str,
}

impl Named<'_> {
    fn create<P: Proxy>(&self, param: u64, init: Option<Vec<u8>>) -> Result<P> {
        create(&self.manager.core, Some(self.name), param, init)
    }

    constructors!();
}

fn create<P: Proxy>(
    core: &Arc<Core>,
    name: Option<&str>,
    param: u64,
    init: Option<Vec<u8>>,
) -> Result<P> {
    let kind: Kind = P::KIND;
    let id = core
        .call(&Request::Create {
            kind,
            name: name.map(str::to_owned),
            tag: P::tag(),
            param,
            init,
        })?
        .object()
        .map_err(|e| match name {
            Some(n) => e.context(format!("cannot open manager {} {n:?}", kind.name())),
            None => e.context(format!("cannot create a manager {}", kind.name())),
        })?;
    Ok(P::from_parts(core.clone(), id))
}
