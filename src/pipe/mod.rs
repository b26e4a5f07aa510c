//! Two-ended message channels: Python's `multiprocessing.Pipe` and
//! `Connection`.
//!
//! ```
//! use ipckit::pipe::Pipe;
//! # fn main() -> ipckit::Result<()> {
//! let (a, b) = Pipe::duplex()?;
//! a.send(&("ping", 1u32))?;
//! assert_eq!(b.recv::<(String, u32)>()?, ("ping".to_owned(), 1));
//! b.send_bytes(b"pong")?;
//! assert_eq!(a.recv_bytes()?, b"pong");
//! # Ok(()) }
//! ```
//!
//! A [`Connection`] is a stream socket (a unix socketpair for [`Pipe`], a
//! unix or TCP socket for [`crate::connection`]) carrying length-prefixed
//! frames: a 4-byte little-endian length, then the bytes. Sends write the
//! prefix and the payload with one `writev`; receives read ahead into a
//! 64 KiB buffer (one system call for many small messages) and read large
//! messages straight into the caller's buffer. Every receive checks the
//! length against a limit before allocating anything ([`Connection::set_max_message_size`]).
//!
//! Both ends can be passed to a child process inside its spawn argument:
//! the socket travels beside the encoded argument (SCM_RIGHTS).
//!
//! For the fastest local transport use [`crate::queue::Queue`]: it moves
//! messages through shared memory without system calls (see the README's
//! performance tables). A `Connection` is the right tool when you need
//! `wait()` on several channels, EOF when the peer dies, or a network peer.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec;
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};
use crate::platform;

pub use crate::codec::DEFAULT_MAX_MESSAGE;

const READ_AHEAD: usize = 64 << 10;
const HEADER: usize = 4;
/// Messages up to this size (with their header) are sent with one write.
const SMALL_SEND: usize = 256;

/// Creates connected pairs of [`Connection`]s.
#[derive(Debug)]
pub struct Pipe(());

impl Pipe {
    /// A connected pair; each end can send and receive.
    pub fn duplex() -> Result<(Connection, Connection)> {
        let (a, b) = UnixStream::pair().map_err(|e| Error::io("cannot create a pipe", e))?;
        Ok((
            Connection::new(Stream::Unix(a), true, true),
            Connection::new(Stream::Unix(b), true, true),
        ))
    }

    /// A one-way pair `(receiving end, sending end)`, as Python's
    /// `Pipe(duplex=False)` returns `(r, w)`.
    pub fn simplex() -> Result<(Connection, Connection)> {
        let (r, w) = UnixStream::pair().map_err(|e| Error::io("cannot create a pipe", e))?;
        Ok((
            Connection::new(Stream::Unix(r), true, false),
            Connection::new(Stream::Unix(w), false, true),
        ))
    }
}

/// The socket under a connection.
pub(crate) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => (&*s).read(buf),
            Stream::Tcp(s) => (&*s).read(buf),
        }
    }

    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // One part: a plain write, cheaper in the kernel than writev.
        match (self, bufs) {
            (Stream::Unix(s), [one]) => (&*s).write(one),
            (Stream::Tcp(s), [one]) => (&*s).write(one),
            (Stream::Unix(s), _) => (&*s).write_vectored(bufs),
            (Stream::Tcp(s), _) => (&*s).write_vectored(bufs),
        }
    }

    pub(crate) fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
            Stream::Tcp(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
        }
    }

    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
        };
    }
}

/// What a receiver has read ahead, and a large message in progress.
struct RecvState {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// A message too large for `buf`, read straight into this vector.
    big: Option<(usize, Vec<u8>)>,
    /// The last message was too big for `buf`: read the next header alone,
    /// so that its payload goes straight to its own vector, not through `buf`.
    after_big: bool,
    eof: bool,
}

/// One end of a [`Pipe`], or a connection from a
/// [`Listener`](crate::connection::Listener) or
/// [`Client`](crate::connection::Client).
///
/// Sending and receiving take `&self`: each direction has its own lock, so
/// one thread may send while another receives. When the peer has closed its
/// end (or died), messages already sent are still received; after them
/// every receive fails with [`ErrorKind::Closed`] (Python's `EOFError`).
pub struct Connection {
    stream: Option<Stream>,
    readable: bool,
    writable: bool,
    max_message: usize,
    send: Mutex<()>,
    recv: Mutex<RecvState>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.stream.as_ref().map(|s| s.fd().as_raw_fd()))
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("closed", &self.stream.is_none())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed_error() -> Error {
    Error::new(ErrorKind::Closed, "the connection is closed")
}

impl Connection {
    pub(crate) fn new(stream: Stream, readable: bool, writable: bool) -> Connection {
        Connection {
            stream: Some(stream),
            readable,
            writable,
            max_message: DEFAULT_MAX_MESSAGE,
            send: Mutex::new(()),
            recv: Mutex::new(RecvState {
                buf: vec![0u8; READ_AHEAD].into_boxed_slice(),
                start: 0,
                end: 0,
                big: None,
                after_big: false,
                eof: false,
            }),
        }
    }

    pub(crate) fn stream(&self) -> Result<&Stream> {
        self.stream.as_ref().ok_or_else(closed_error)
    }

    /// Whether this end can receive.
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send.
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.stream.is_none()
    }

    /// The largest message this end accepts.
    pub fn max_message_size(&self) -> usize {
        self.max_message
    }

    /// Sets the largest message this end accepts (default
    /// [`DEFAULT_MAX_MESSAGE`], 1 GiB; at most 4 GiB − 1). A larger length prefix fails the receive with
    /// [`ErrorKind::LimitExceeded`] before anything is allocated, and the
    /// connection is unusable afterwards (the stream position is lost).
    pub fn set_max_message_size(&mut self, bytes: usize) {
        self.max_message = bytes.min(codec::MAX_FRAME);
    }

    /// Closes this end. The peer drains what was sent, then sees EOF —
    /// unless another process still holds a copy of this end.
    pub fn close(&mut self) {
        self.stream = None;
    }

    // -- sending -------------------------------------------------------------

    /// Sends raw bytes as one message.
    pub fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        if !self.writable {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this end of the pipe cannot send",
            ));
        }
        let len = u32::try_from(bytes.len()).map_err(|_| {
            Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a message of {} bytes exceeds the 4 GiB frame limit",
                    bytes.len()
                ),
            )
        })?;
        let stream = self.stream()?;
        let _guard = lock(&self.send);
        let header = len.to_le_bytes();
        // Small messages: one contiguous write (cheaper in the kernel than
        // a two-part writev). Large ones: writev, no copy.
        let mut small = [0u8; SMALL_SEND];
        let mut joined = [IoSlice::new(&[])];
        let mut split = [IoSlice::new(&header), IoSlice::new(bytes)];
        let mut parts: &mut [IoSlice<'_>] = if bytes.len() + HEADER <= SMALL_SEND {
            small[..HEADER].copy_from_slice(&header);
            small[HEADER..HEADER + bytes.len()].copy_from_slice(bytes);
            joined[0] = IoSlice::new(&small[..HEADER + bytes.len()]);
            &mut joined
        } else {
            &mut split
        };
        while !parts.is_empty() {
            match stream.write_vectored(parts) {
                Ok(0) => return Err(closed_error().context("cannot send")),
                Ok(n) => IoSlice::advance_slices(&mut parts, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                    return Err(Error::new(
                        ErrorKind::Closed,
                        "cannot send: the peer closed the connection",
                    ));
                }
                Err(e) => return Err(Error::io("cannot send", e)),
            }
        }
        Ok(())
    }

    /// Sends a value (serde, postcard).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let bytes = codec::encode(value)?;
        self.send_bytes(&bytes)
    }

    // -- receiving -----------------------------------------------------------

    /// Receives the next message into `out` (replacing its contents).
    pub fn recv_bytes_into(&self, out: &mut Vec<u8>) -> Result<()> {
        self.recv_until(out, None, self.max_message)
    }

    /// Receives the next message as raw bytes.
    pub fn recv_bytes(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.recv_bytes_into(&mut out)?;
        Ok(out)
    }

    /// Receives the next value.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<T> {
        let bytes = self.recv_bytes()?;
        codec::decode(&bytes)
    }

    /// Receives the next value if a whole message is there now; otherwise a
    /// would-block error (a message partly arrived stays buffered).
    pub fn try_recv<T: DeserializeOwned>(&self) -> Result<T> {
        let mut out = Vec::new();
        self.recv_until(&mut out, Some(Instant::now()), self.max_message)
            .map_err(|e| {
                if e.is_timeout() {
                    Error::new(ErrorKind::WouldBlock, "no complete message has arrived")
                } else {
                    e
                }
            })?;
        codec::decode(&out)
    }

    /// Receives the next value, waiting at most `timeout`.
    pub fn recv_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let mut out = Vec::new();
        self.recv_until(&mut out, deadline_after(timeout), self.max_message)?;
        codec::decode(&out)
    }

    /// Receives raw bytes into `out`, waiting at most `timeout`.
    pub fn recv_bytes_into_timeout(&self, out: &mut Vec<u8>, timeout: Duration) -> Result<()> {
        self.recv_until(out, deadline_after(timeout), self.max_message)
    }

    /// Receives raw bytes into `out` until `deadline`, refusing a message
    /// over `limit` bytes from its length prefix, before reading or
    /// allocating for it (the handshake's frames, from a peer not yet
    /// authenticated).
    pub(crate) fn recv_bytes_within(
        &self,
        out: &mut Vec<u8>,
        deadline: Option<Instant>,
        limit: usize,
    ) -> Result<()> {
        self.recv_until(out, deadline, limit)
    }

    /// Whether a message (or EOF) can be received without waiting longer
    /// than `timeout` (`None`: wait as long as needed; `Some(ZERO)`: check).
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        if !self.readable {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this end of the pipe cannot receive",
            ));
        }
        let stream = self.stream()?;
        {
            let st = lock(&self.recv);
            if st.end > st.start || st.eof || st.big.is_some() {
                return Ok(true);
            }
        }
        platform::poll_readable(stream.fd().as_raw_fd(), timeout)
            .map_err(|e| Error::io("cannot poll the connection", e))
    }

    fn recv_until(&self, out: &mut Vec<u8>, deadline: Option<Instant>, limit: usize) -> Result<()> {
        if !self.readable {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "this end of the pipe cannot receive",
            ));
        }
        let stream = self.stream()?;
        let mut st = lock(&self.recv);
        let st = &mut *st;
        loop {
            // A large message in progress: fill it straight from the socket.
            if let Some((len, big)) = st.big.as_mut() {
                if big.len() == *len {
                    let (_, mut big) = st.big.take().expect("checked");
                    std::mem::swap(out, &mut big);
                    st.after_big = true;
                    return Ok(());
                }
                if st.eof {
                    return Err(truncated(big.len(), *len));
                }
                wait_readable(stream, deadline)?;
                let want = *len - big.len();
                big.reserve(want);
                let spare = &mut big.spare_capacity_mut()[..want];
                // SAFETY: MaybeUninit<u8> and u8 have the same layout; read()
                // only writes into the slice, and we only count what it wrote.
                let dst = unsafe { &mut *(spare as *mut [std::mem::MaybeUninit<u8>] as *mut [u8]) };
                match stream.read(dst) {
                    Ok(0) => st.eof = true,
                    // SAFETY: read() initialised the first `n` bytes.
                    Ok(n) => unsafe { big.set_len(big.len() + n) },
                    Err(e) => handle_read_error(e, st)?,
                }
                continue;
            }
            // A complete frame in the read-ahead buffer?
            let avail = st.end - st.start;
            if avail >= HEADER {
                let mut h = [0u8; HEADER];
                h.copy_from_slice(&st.buf[st.start..st.start + HEADER]);
                let len = u32::from_le_bytes(h) as usize;
                if len > limit {
                    return Err(Error::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "the peer sent a message of {len} bytes, over this end's limit of {limit}"
                        ),
                    ));
                }
                if avail >= HEADER + len {
                    st.after_big = false;
                    let from = st.start + HEADER;
                    out.clear();
                    out.extend_from_slice(&st.buf[from..from + len]);
                    st.start += HEADER + len;
                    return Ok(());
                }
                if HEADER + len > st.buf.len() {
                    // Too big for the buffer: move what we have into a
                    // vector of its own and read the rest straight into it.
                    let mut big = std::mem::take(out);
                    big.clear();
                    big.extend_from_slice(&st.buf[st.start + HEADER..st.end]);
                    st.start = 0;
                    st.end = 0;
                    st.big = Some((len, big));
                    continue;
                }
            }
            if st.eof {
                return if avail == 0 {
                    Err(Error::new(
                        ErrorKind::Closed,
                        "the peer closed the connection (no more messages)",
                    ))
                } else {
                    Err(truncated(avail, HEADER))
                };
            }
            // Make room at the end of the buffer, then read more.
            if st.start > 0 && st.end == st.buf.len() || st.start == st.end {
                st.buf.copy_within(st.start..st.end, 0);
                st.end -= st.start;
                st.start = 0;
            }
            wait_readable(stream, deadline)?;
            let end = st.end;
            let stop = if st.after_big && avail < HEADER {
                st.start + HEADER
            } else {
                st.buf.len()
            };
            match stream.read(&mut st.buf[end..stop]) {
                Ok(0) => st.eof = true,
                Ok(n) => st.end += n,
                Err(e) => handle_read_error(e, st)?,
            }
        }
    }
}

fn truncated(got: usize, want: usize) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!(
            "the peer closed the connection in the middle of a message ({got} bytes of {want})"
        ),
    )
}

fn handle_read_error(e: io::Error, st: &mut RecvState) -> Result<()> {
    match e.kind() {
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock => Ok(()),
        // A peer that died with unread data in its buffer resets the socket:
        // the same as EOF for us.
        io::ErrorKind::ConnectionReset => {
            st.eof = true;
            Ok(())
        }
        _ => Err(Error::io("cannot receive", e)),
    }
}

fn wait_readable(stream: &Stream, deadline: Option<Instant>) -> Result<()> {
    let Some(deadline) = deadline else {
        return Ok(()); // a blocking read waits by itself
    };
    let rem = deadline.saturating_duration_since(Instant::now());
    let ready = platform::poll_readable(stream.fd().as_raw_fd(), Some(rem))
        .map_err(|e| Error::io("cannot wait for the connection", e))?;
    if ready {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Timeout,
            "timed out waiting for a message",
        ))
    }
}

/// Waits until at least one of `connections` can receive (a message or EOF)
/// or `timeout` passes; returns the indices of the ready ones (empty on
/// timeout). Python's `multiprocessing.connection.wait`.
pub fn wait(connections: &[&Connection], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let mut ready = Vec::new();
    for (i, c) in connections.iter().enumerate() {
        if c.poll(Some(Duration::ZERO))? {
            ready.push(i);
        }
    }
    if !ready.is_empty() {
        return Ok(ready);
    }
    let mut pfds: Vec<libc::pollfd> = connections
        .iter()
        .map(|c| {
            Ok(libc::pollfd {
                fd: c.stream()?.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
        })
        .collect::<Result<_>>()?;
    platform::poll_many(&mut pfds, timeout).map_err(|e| Error::io("cannot wait", e))?;
    Ok(pfds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents != 0)
        .map(|(i, _)| i)
        .collect())
}

impl AsRawFd for Connection {
    /// The socket's descriptor, or -1 once closed.
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_ref().map_or(-1, |s| s.fd().as_raw_fd())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the descriptor is enough; an explicit shutdown would also
        // cut off copies held by children.
        let _ = self.stream.take();
    }
}

/// How a connection travels inside a spawn argument.
#[derive(Serialize, Deserialize)]
struct ConnectionToken {
    index: u32,
    tcp: bool,
    readable: bool,
    writable: bool,
    max_message: u64,
}

impl Serialize for Connection {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let stream = self
            .stream
            .as_ref()
            .ok_or_else(|| S::Error::custom("the connection is closed"))?;
        // Only inside a spawn argument is there a channel for the socket.
        let index = crate::handoff::push(stream.fd())
            .ok_or_else(|| {
                S::Error::custom(
                    "a Connection can only be sent to a child process inside its spawn argument",
                )
            })?
            .map_err(S::Error::custom)?;
        ConnectionToken {
            index,
            tcp: matches!(stream, Stream::Tcp(_)),
            readable: self.readable,
            writable: self.writable,
            max_message: self.max_message as u64,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Connection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let t = ConnectionToken::deserialize(d)?;
        let fd: OwnedFd = crate::handoff::take(t.index).ok_or_else(|| {
            D::Error::custom("the connection's socket was not passed with this value")
        })?;
        let stream = if t.tcp {
            Stream::Tcp(TcpStream::from(fd))
        } else {
            Stream::Unix(UnixStream::from(fd))
        };
        let mut c = Connection::new(stream, t.readable, t.writable);
        c.max_message = usize::try_from(t.max_message).unwrap_or(DEFAULT_MAX_MESSAGE);
        Ok(c)
    }
}

/// Half-closes the sending direction (used by the handshake on failure).
pub(crate) fn shutdown_write(c: &Connection) {
    if let Some(s) = &c.stream {
        s.shutdown_write();
    }
}
