//! Listeners and clients for unix-socket paths and TCP addresses, with
//! mutual authentication: Python's `multiprocessing.connection`.
//!
//! ```
//! use ipckit::connection::{Client, Listener};
//! # fn main() -> ipckit::Result<()> {
//! # let path = std::env::temp_dir().join(format!("ipckit-doc-{}.sock", std::process::id()));
//! let listener = Listener::bind(path.as_path(), Some(b"secret"))?;
//! let address = listener.address().clone();
//! let server = std::thread::spawn(move || -> ipckit::Result<String> {
//!     let conn = listener.accept()?;
//!     conn.recv::<String>()
//! });
//! let conn = Client::connect(address, Some(b"secret"))?;
//! conn.send("hello")?;
//! assert_eq!(server.join().unwrap()?, "hello");
//! # Ok(()) }
//! ```
//!
//! # The handshake
//!
//! The server opens with a hello frame saying whether it requires a key and,
//! if so, a 32-byte random challenge. The client answers with
//! HMAC-SHA256(key, "ipckit client" ‖ challenge) and a challenge of its own;
//! the server checks the answer in constant time and, if it is right,
//! answers the client's challenge with HMAC-SHA256(key, "ipckit server" ‖
//! challenge), which the client checks. So each side proves the key to the
//! other, answers are bound to one connection by fresh challenges, and the
//! role labels stop a peer from reflecting one side's answer back to it. A
//! peer that fails is dropped; both sides report
//! [`ErrorKind::AuthenticationFailed`]. Handshake frames are limited to
//! 256 bytes — refused from their length prefix, before anything is read or
//! allocated for them — and the handshake to a deadline (10 s by default).
//! [`Listener::accept`] returns only authenticated clients (as Python's
//! `Listener.accept` does), but it runs each handshake on a thread of its
//! own and returns whichever client finishes first, so silent or slow peers
//! never delay an honest one; at most 64 handshakes run at once
//! ([`Listener::set_max_pending_handshakes`]) and a peer arriving beyond
//! that is closed at once. The manager's server works the same way.
//!
//! Keys are held in memory that is zeroized when the last holder drops it,
//! and no `Debug` output prints one.
//!
//! Without a key (`None` on both sides) there is no handshake beyond the
//! hello; a client with a key refuses a server without one, and a server
//! with a key refuses a client without one.

use std::collections::VecDeque;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Connection, Stream};
use crate::platform;

/// How long a handshake may take unless set otherwise.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const HELLO: &[u8] = b"ipckit-hello-1";
const WELCOME: &[u8] = b"ipckit-welcome";
const FAILURE: &[u8] = b"ipckit-auth-failed";
const CHALLENGE_LEN: usize = 32;
const HANDSHAKE_FRAME_LIMIT: usize = 256;

/// Handshakes [`Listener::accept`] runs at once unless set otherwise.
pub const DEFAULT_MAX_PENDING_HANDSHAKES: usize = 64;

/// An authentication key: zeroized when the last clone is dropped, shown as
/// `<redacted>` by `Debug`. Serialised as its bytes (a manager proxy carries
/// its key to the processes it is sent to); the buffers a message passes
/// through on the way are the caller's and are not zeroized.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AuthKey(Arc<Zeroizing<Vec<u8>>>);

impl AuthKey {
    pub(crate) fn new(key: &[u8]) -> AuthKey {
        AuthKey(Arc::new(Zeroizing::new(key.to_vec())))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.0.as_slice()
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl Serialize for AuthKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.as_bytes().serialize(s)
    }
}

impl<'de> Deserialize<'de> for AuthKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let bytes = Zeroizing::new(Vec::<u8>::deserialize(d)?);
        Ok(AuthKey(Arc::new(bytes)))
    }
}

/// Where a listener listens: a unix-socket path or a TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// A unix-domain socket at this path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(a: SocketAddr) -> Address {
        Address::Tcp(a)
    }
}

impl From<&Path> for Address {
    fn from(p: &Path) -> Address {
        Address::Unix(p.to_owned())
    }
}

impl From<PathBuf> for Address {
    fn from(p: PathBuf) -> Address {
        Address::Unix(p)
    }
}

impl Address {
    /// Parses `"127.0.0.1:6000"`, `"localhost:6000"` (TCP) or a path
    /// (`"/run/app.sock"`, `"./app.sock"`: unix).
    pub fn parse(s: &str) -> Result<Address> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Address::Tcp(a));
        }
        if s.starts_with('/') || s.starts_with('.') || !s.contains(':') {
            return Ok(Address::Unix(PathBuf::from(s)));
        }
        let a = s
            .to_socket_addrs()
            .map_err(|e| Error::io(format!("cannot resolve {s:?}"), e))?
            .next()
            .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("{s:?} resolves to nothing")))?;
        Ok(Address::Tcp(a))
    }
}

impl std::str::FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Address> {
        Address::parse(s)
    }
}

enum Inner {
    Unix(UnixListener),
    Tcp(TcpListener),
}

/// Accepts authenticated connections. Python's `Listener`.
pub struct Listener {
    inner: Inner,
    address: Address,
    authkey: Option<AuthKey>,
    handshake_timeout: Duration,
    max_message: usize,
    max_pending: usize,
    handshakes: Arc<Handshakes>,
    /// The socket file to remove on drop (we created it).
    owned_path: Option<PathBuf>,
}

/// The handshakes `accept` started, each on a thread of its own, and the
/// outcomes not yet returned.
struct Handshakes {
    state: Mutex<HandshakeState>,
    /// A handshake thread writes a byte to `wake_tx` when it finishes;
    /// `accept` polls `wake_rx` beside the listening socket.
    wake_rx: UnixStream,
    wake_tx: UnixStream,
}

#[derive(Default)]
struct HandshakeState {
    running: usize,
    done: VecDeque<Result<Connection>>,
}

impl Handshakes {
    fn new() -> std::io::Result<Handshakes> {
        let (wake_rx, wake_tx) = UnixStream::pair()?;
        wake_rx.set_nonblocking(true)?;
        wake_tx.set_nonblocking(true)?;
        Ok(Handshakes {
            state: Mutex::new(HandshakeState::default()),
            wake_rx,
            wake_tx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HandshakeState> {
        // The state is a counter and a list, consistent after every statement.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes one `accept` (a byte already waiting is as good).
    fn wake(&self) {
        let _ = (&self.wake_tx).write(&[1]);
    }

    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake_rx).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// The next finished handshake. If more are waiting, another `accept`
    /// (on another thread) is woken for them: one byte may have stood for
    /// several outcomes.
    fn pop(&self) -> Option<Result<Connection>> {
        let mut st = self.lock();
        let next = st.done.pop_front()?;
        if !st.done.is_empty() {
            self.wake();
        }
        Some(next)
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("handshakes_running", &self.handshakes.lock().running)
            .finish()
    }
}

impl Listener {
    /// Listens on `address`. A unix-socket file is created with mode 0600
    /// (never visible with any other mode: it is bound in a fresh private
    /// directory and linked into place) and removed when the listener is
    /// dropped; an existing file is an `AlreadyExists` error. For TCP,
    /// port 0 picks a free port (see [`address`](Self::address)).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.into();
        let ctx = || format!("cannot listen on {address}");
        let (inner, address, owned_path) = match &address {
            Address::Unix(path) => {
                let l = bind_unix_0600(path).map_err(|e| Error::io(ctx(), e))?;
                (Inner::Unix(l), address.clone(), Some(path.clone()))
            }
            Address::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(|e| Error::io(ctx(), e))?;
                let bound = l.local_addr().map_err(|e| Error::io(ctx(), e))?;
                (Inner::Tcp(l), Address::Tcp(bound), None)
            }
        };
        // Non-blocking, so that an `accept` woken for a client another
        // thread took first goes back to waiting instead of blocking there.
        // (Accepted sockets do not inherit it.)
        let nonblocking = match &inner {
            Inner::Unix(l) => l.set_nonblocking(true),
            Inner::Tcp(l) => l.set_nonblocking(true),
        };
        let handshakes = nonblocking.and_then(|()| Handshakes::new());
        let handshakes = match handshakes {
            Ok(h) => Arc::new(h),
            Err(e) => {
                if let Some(p) = &owned_path {
                    let _ = std::fs::remove_file(p);
                }
                return Err(Error::io(ctx(), e));
            }
        };
        Ok(Listener {
            inner,
            address,
            authkey: authkey.map(AuthKey::new),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_message: crate::codec::DEFAULT_MAX_MESSAGE,
            max_pending: DEFAULT_MAX_PENDING_HANDSHAKES,
            handshakes,
            owned_path,
        })
    }

    /// The address clients connect to (with the real port for TCP port 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// How long a client may take to complete the handshake.
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// The message size limit given to accepted connections.
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message = bytes;
    }

    /// How many handshakes [`accept`](Self::accept) runs at once (default
    /// [`DEFAULT_MAX_PENDING_HANDSHAKES`], at least 1). A peer arriving
    /// while that many are running is closed at once, so unauthenticated
    /// peers cannot take threads or memory without bound.
    pub fn set_max_pending_handshakes(&mut self, n: usize) {
        self.max_pending = n.max(1);
    }

    fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match &self.inner {
            Inner::Unix(l) => l.as_raw_fd(),
            Inner::Tcp(l) => l.as_raw_fd(),
        }
    }

    /// Accepts one waiting peer without any handshake; `None` if another
    /// thread took it first.
    fn accept_raw(&self) -> Result<Option<Connection>> {
        let stream = match &self.inner {
            Inner::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Inner::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        match stream {
            Ok(stream) => {
                let mut conn = Connection::new(stream, true, true);
                conn.set_max_message_size(self.max_message);
                Ok(Some(conn))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::Interrupted
                        | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(Error::io(format!("cannot accept on {}", self.address), e)),
        }
    }

    /// Waits up to `timeout` for a client and accepts it *without* the
    /// handshake (`None` if none came): servers that authenticate on a
    /// thread of their own, so one slow client cannot hold the others up.
    pub(crate) fn accept_unauthenticated(&self, timeout: Duration) -> Result<Option<Connection>> {
        let ready = platform::poll_readable(self.raw_fd(), Some(timeout))
            .map_err(|e| Error::io(format!("cannot accept on {}", self.address), e))?;
        if !ready {
            return Ok(None);
        }
        self.accept_raw()
    }

    /// What [`authenticate`] needs to check a client accepted by
    /// [`accept_unauthenticated`](Self::accept_unauthenticated).
    pub(crate) fn authenticator(&self) -> (Option<AuthKey>, Duration, usize) {
        (
            self.authkey.clone(),
            self.handshake_timeout,
            self.max_pending,
        )
    }

    /// Waits for a client and returns it authenticated. Each peer's
    /// handshake runs on a thread of its own, and the first to finish is
    /// returned, so a silent or slow peer never delays an honest one. A peer
    /// that fails the handshake (wrong key, garbage, silence past the
    /// handshake timeout) is dropped and reported as an error, as Python's
    /// `Listener.accept` raises `AuthenticationError`; call `accept` again
    /// for the next client.
    pub fn accept(&self) -> Result<Connection> {
        loop {
            if let Some(conn) = self.accept_until(None)? {
                return Ok(conn);
            }
        }
    }

    /// Like [`accept`](Self::accept), giving up after `timeout` (`Ok(None)`).
    /// Handshakes still running then go on, and a later `accept` returns
    /// their clients.
    pub fn accept_timeout(&self, timeout: Duration) -> Result<Option<Connection>> {
        self.accept_until(deadline_after(timeout))
    }

    fn accept_until(&self, deadline: Option<Instant>) -> Result<Option<Connection>> {
        let rejected = |e: Error| e.context(format!("rejected a client on {}", self.address));
        loop {
            if let Some(done) = self.handshakes.pop() {
                return done.map(Some).map_err(rejected);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => Some(left),
                    _ => return Ok(None),
                },
            };
            let mut fds = [
                libc::pollfd {
                    fd: self.raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&self.handshakes.wake_rx),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            platform::poll_many(&mut fds, timeout)
                .map_err(|e| Error::io(format!("cannot accept on {}", self.address), e))?;
            if fds[1].revents != 0 {
                self.handshakes.drain();
            }
            if fds[0].revents != 0 {
                if let Some(conn) = self.accept_raw()? {
                    self.start_handshake(conn);
                }
            }
        }
    }

    /// Runs `conn`'s handshake on a thread of its own; its outcome joins
    /// the finished ones. Beyond the cap, `conn` is closed at once.
    fn start_handshake(&self, conn: Connection) {
        {
            let mut st = self.handshakes.lock();
            if st.running >= self.max_pending {
                return;
            }
            st.running += 1;
        }
        let handshakes = self.handshakes.clone();
        let key = self.authkey.clone();
        let timeout = self.handshake_timeout;
        let spawned = std::thread::Builder::new()
            .name("ipckit-handshake".into())
            .spawn(move || {
                let outcome = server_handshake(&conn, key.as_ref().map(AuthKey::as_bytes), timeout)
                    .map(|()| conn);
                let mut st = handshakes.lock();
                st.running -= 1;
                st.done.push_back(outcome);
                drop(st);
                handshakes.wake();
            });
        if let Err(e) = spawned {
            let mut st = self.handshakes.lock();
            st.running -= 1;
            st.done
                .push_back(Err(Error::io("cannot start a handshake thread", e)));
        }
    }
}

/// Binds a unix socket that never exists with a mode other than 0600: it
/// is bound inside a fresh 0700 directory beside `path`, chmod-ed, then
/// hard-linked to `path` (which fails, rather than replacing anything, if
/// `path` exists) and the temporary name removed. Where the temporary path
/// would be too long for a socket address, it binds `path` directly and
/// chmods it at once (the socket is then briefly open to the umask).
fn bind_unix_0600(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut r = [0u8; 8];
    platform::random_bytes(&mut r)?;
    let dir = parent.join(format!(
        ".ipckit-bind-{}-{:016x}",
        std::process::id(),
        u64::from_le_bytes(r)
    ));
    let tmp = dir.join("s");
    // sun_path holds 108 bytes, the terminating NUL included.
    if std::os::unix::ffi::OsStrExt::as_bytes(tmp.as_os_str()).len() >= 108 {
        let l = UnixListener::bind(path)?;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        return Ok(l);
    }
    if path.symlink_metadata().is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the socket path exists",
        ));
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let bound = (|| {
        let l = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::hard_link(&tmp, path)?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&dir);
    bound
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(p) = &self.owned_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Connects to a [`Listener`]. Python's `Client`.
#[derive(Debug)]
pub struct Client(());

impl Client {
    /// Connects to `address` and authenticates with `authkey`.
    pub fn connect(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Connection> {
        Client::connect_timeout(address, authkey, DEFAULT_HANDSHAKE_TIMEOUT)
    }

    /// Like [`connect`](Self::connect), bounding the connection and the
    /// handshake by `timeout`.
    pub fn connect_timeout(
        address: impl Into<Address>,
        authkey: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection> {
        let address = address.into();
        let ctx = || format!("cannot connect to {address}");
        let stream = match &address {
            Address::Unix(p) => UnixStream::connect(p).map(Stream::Unix),
            Address::Tcp(a) => TcpStream::connect_timeout(a, timeout).map(|s| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
        .map_err(|e| Error::io(ctx(), e))?;
        let conn = Connection::new(stream, true, true);
        client_handshake(&conn, authkey, timeout).map_err(|e| e.context(ctx()))?;
        Ok(conn)
    }
}

// -- the handshake -------------------------------------------------------------

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], label: &[u8], challenge: &[u8]) -> HmacSha256 {
    let mut m =
        <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(challenge);
    m
}

fn auth_failed(why: &str) -> Error {
    Error::new(
        ErrorKind::AuthenticationFailed,
        format!("authentication failed: {why}"),
    )
}

/// Receives one handshake frame (bounded in size — refused from its length
/// prefix, before anything is read or allocated for it — and in time unless
/// the deadline is `None`).
fn recv_small(conn: &Connection, deadline: Option<Instant>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match conn.recv_bytes_within(&mut out, deadline, HANDSHAKE_FRAME_LIMIT) {
        Ok(()) => Ok(out),
        Err(e) if e.is_timeout() => Err(Error::new(ErrorKind::Timeout, "the handshake timed out")),
        Err(e) if e.kind() == ErrorKind::LimitExceeded => {
            Err(auth_failed("oversized handshake frame"))
        }
        Err(e) => Err(e),
    }
}

fn with_handshake_limits<R>(
    conn: &Connection,
    timeout: Duration,
    f: impl FnOnce(Option<Instant>) -> Result<R>,
) -> Result<R> {
    let stream = conn.stream()?;
    let _ = stream.set_timeouts(Some(timeout.max(Duration::from_millis(1))));
    // A timeout too long to make a deadline of means no deadline.
    let r = f(deadline_after(timeout));
    let _ = stream.set_timeouts(None);
    r
}

/// The server's side of the handshake, for connections accepted by
/// [`Listener::accept_unauthenticated`].
pub(crate) fn authenticate(
    conn: &Connection,
    key: Option<&AuthKey>,
    timeout: Duration,
) -> Result<()> {
    server_handshake(conn, key.map(AuthKey::as_bytes), timeout)
}

fn server_handshake(conn: &Connection, key: Option<&[u8]>, timeout: Duration) -> Result<()> {
    with_handshake_limits(conn, timeout, |deadline| {
        let mut hello = HELLO.to_vec();
        let mut challenge = [0u8; CHALLENGE_LEN];
        match key {
            None => hello.push(0),
            Some(_) => {
                platform::random_bytes(&mut challenge)
                    .map_err(|e| Error::io("cannot draw a challenge", e))?;
                hello.push(1);
                hello.extend_from_slice(&challenge);
            }
        }
        conn.send_bytes(&hello)?;
        let Some(key) = key else {
            return Ok(());
        };
        // The client's answer: 32 bytes of HMAC and its own challenge.
        let answer = recv_small(conn, deadline).map_err(|e| {
            if e.is_closed() {
                auth_failed("the client hung up before authenticating")
            } else {
                e
            }
        })?;
        if answer.len() != 32 + CHALLENGE_LEN {
            let _ = conn.send_bytes(FAILURE);
            return Err(auth_failed("the client sent a malformed answer"));
        }
        let (digest, client_challenge) = answer.split_at(32);
        if mac(key, b"ipckit client", &challenge)
            .verify_slice(digest)
            .is_err()
        {
            let _ = conn.send_bytes(FAILURE);
            crate::pipe::shutdown_write(conn);
            return Err(auth_failed("the client does not know the key"));
        }
        let mut reply = WELCOME.to_vec();
        reply.extend_from_slice(
            &mac(key, b"ipckit server", client_challenge)
                .finalize()
                .into_bytes(),
        );
        conn.send_bytes(&reply)?;
        Ok(())
    })
}

pub(crate) fn client_handshake(
    conn: &Connection,
    key: Option<&[u8]>,
    timeout: Duration,
) -> Result<()> {
    with_handshake_limits(conn, timeout, |deadline| {
        let hello = recv_small(conn, deadline).map_err(|e| {
            if e.is_closed() {
                auth_failed("the server closed the connection")
            } else {
                e
            }
        })?;
        let Some(rest) = hello.strip_prefix(HELLO) else {
            return Err(auth_failed("the server does not speak the ipckit protocol"));
        };
        match (rest.first(), key) {
            (Some(0), None) if rest.len() == 1 => return Ok(()),
            (Some(0), Some(_)) => {
                return Err(auth_failed(
                    "the server does not authenticate, but this client requires it",
                ));
            }
            (Some(1), None) => return Err(auth_failed("the server requires an auth key")),
            (Some(1), Some(_)) if rest.len() == 1 + CHALLENGE_LEN => {}
            _ => return Err(auth_failed("malformed hello from the server")),
        }
        let key = key.expect("matched above");
        let challenge = &rest[1..];
        let mut mine = [0u8; CHALLENGE_LEN];
        platform::random_bytes(&mut mine).map_err(|e| Error::io("cannot draw a challenge", e))?;
        let mut answer = mac(key, b"ipckit client", challenge)
            .finalize()
            .into_bytes()
            .to_vec();
        answer.extend_from_slice(&mine);
        conn.send_bytes(&answer)?;
        let reply = recv_small(conn, deadline).map_err(|e| {
            if e.is_closed() {
                auth_failed("the server refused the key")
            } else {
                e
            }
        })?;
        if reply == FAILURE {
            return Err(auth_failed("the server refused the key"));
        }
        let Some(digest) = reply.strip_prefix(WELCOME) else {
            return Err(auth_failed("malformed reply from the server"));
        };
        mac(key, b"ipckit server", &mine)
            .verify_slice(digest)
            .map_err(|_| auth_failed("the server does not know the key"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            Address::parse("127.0.0.1:80").unwrap(),
            Address::Tcp("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            Address::parse("/tmp/x.sock").unwrap(),
            Address::Unix("/tmp/x.sock".into())
        );
        assert_eq!(
            Address::parse("./x.sock").unwrap(),
            Address::Unix("./x.sock".into())
        );
        assert_eq!(
            Address::parse("x.sock").unwrap(),
            Address::Unix("x.sock".into())
        );
        assert!(matches!(
            Address::parse("localhost:80").unwrap(),
            Address::Tcp(_)
        ));
    }

    #[test]
    fn macs_differ_by_role() {
        let c = [7u8; 32];
        let a = mac(b"k", b"ipckit client", &c).finalize().into_bytes();
        let b = mac(b"k", b"ipckit server", &c).finalize().into_bytes();
        assert_ne!(a, b);
        assert!(mac(b"k", b"ipckit client", &c).verify_slice(&a).is_ok());
        assert!(
            mac(b"other", b"ipckit client", &c)
                .verify_slice(&a)
                .is_err()
        );
    }
}
