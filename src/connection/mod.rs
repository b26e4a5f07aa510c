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
//! [`Listener::accept`] runs the handshake of each client it accepts before
//! returning it (as Python's `Listener.accept` does), so a silent peer
//! delays the next client by up to that deadline; the manager's server
//! authenticates each client on a thread of its own, at most 64 at once.
//!
//! Without a key (`None` on both sides) there is no handshake beyond the
//! hello; a client with a key refuses a server without one, and a server
//! with a key refuses a client without one.

use std::fmt;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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
    authkey: Option<Vec<u8>>,
    handshake_timeout: Duration,
    max_message: usize,
    /// The socket file to remove on drop (we created it).
    owned_path: Option<PathBuf>,
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .finish()
    }
}

impl Listener {
    /// Listens on `address`. A unix-socket file is created with mode 0600
    /// and removed when the listener is dropped; an existing file is an
    /// error. For TCP, port 0 picks a free port (see [`address`](Self::address)).
    pub fn bind(address: impl Into<Address>, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.into();
        let ctx = || format!("cannot listen on {address}");
        let (inner, address, owned_path) = match &address {
            Address::Unix(path) => {
                let l = UnixListener::bind(path).map_err(|e| Error::io(ctx(), e))?;
                use std::os::unix::fs::PermissionsExt;
                if let Err(e) =
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                {
                    let _ = std::fs::remove_file(path);
                    return Err(Error::io(ctx(), e));
                }
                (Inner::Unix(l), address.clone(), Some(path.clone()))
            }
            Address::Tcp(a) => {
                let l = TcpListener::bind(a).map_err(|e| Error::io(ctx(), e))?;
                let bound = l.local_addr().map_err(|e| Error::io(ctx(), e))?;
                (Inner::Tcp(l), Address::Tcp(bound), None)
            }
        };
        Ok(Listener {
            inner,
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_message: crate::codec::DEFAULT_MAX_MESSAGE,
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

    /// Waits up to `timeout` for a client and accepts it *without* the
    /// handshake (`None` if none came): servers that authenticate on a
    /// thread of their own, so one slow client cannot hold the others up.
    pub(crate) fn accept_unauthenticated(&self, timeout: Duration) -> Result<Option<Connection>> {
        use std::os::fd::AsRawFd;
        let fd = match &self.inner {
            Inner::Unix(l) => l.as_raw_fd(),
            Inner::Tcp(l) => l.as_raw_fd(),
        };
        let ready = platform::poll_readable(fd, Some(timeout))
            .map_err(|e| Error::io(format!("cannot accept on {}", self.address), e))?;
        if !ready {
            return Ok(None);
        }
        let stream = match &self.inner {
            Inner::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Inner::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
        .map_err(|e| Error::io(format!("cannot accept on {}", self.address), e))?;
        let mut conn = Connection::new(stream, true, true);
        conn.set_max_message_size(self.max_message);
        Ok(Some(conn))
    }

    /// What [`authenticate`] needs to check a client accepted by
    /// [`accept_unauthenticated`](Self::accept_unauthenticated).
    pub(crate) fn authenticator(&self) -> (Option<Vec<u8>>, Duration) {
        (self.authkey.clone(), self.handshake_timeout)
    }

    /// Waits for a client and authenticates it. A client that fails the
    /// handshake (wrong key, garbage, silence past the deadline) is dropped
    /// and reported as an error; call `accept` again for the next client.
    pub fn accept(&self) -> Result<Connection> {
        let stream = match &self.inner {
            Inner::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Inner::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        }
        .map_err(|e| Error::io(format!("cannot accept on {}", self.address), e))?;
        let mut conn = Connection::new(stream, true, true);
        conn.set_max_message_size(self.max_message);
        server_handshake(&conn, self.authkey.as_deref(), self.handshake_timeout)
            .map_err(|e| e.context(format!("rejected a client on {}", self.address)))?;
        Ok(conn)
    }
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
pub(crate) fn authenticate(conn: &Connection, key: Option<&[u8]>, timeout: Duration) -> Result<()> {
    server_handshake(conn, key, timeout)
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

fn client_handshake(conn: &Connection, key: Option<&[u8]>, timeout: Duration) -> Result<()> {
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
