//! Pipes, connections, listeners and clients — between real processes, and
//! against peers that misbehave.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::ErrorKind;
use ipckit::connection::{Address, Client, Listener};
use ipckit::pipe::{Connection, Pipe, wait};
use proptest::prelude::*;

ipckit::test_support!();

fn sock_path(t: &Ctx, tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.sock", t.name(tag)))
}

// ---------------------------------------------------------------------------
// Pipes in one process
// ---------------------------------------------------------------------------

#[test]
fn duplex_and_simplex_semantics() {
    let (a, b) = Pipe::duplex().unwrap();
    a.send(&vec![1u32, 2, 3]).unwrap();
    b.send_bytes(b"raw").unwrap();
    assert_eq!(b.recv::<Vec<u32>>().unwrap(), [1, 2, 3]);
    assert_eq!(a.recv_bytes().unwrap(), b"raw");
    assert!(!a.poll(Some(Duration::ZERO)).unwrap());
    assert!(a.try_recv::<u8>().unwrap_err().is_would_block());
    let d = Duration::from_millis(30);
    let start = Instant::now();
    assert!(a.recv_timeout::<u8>(d).unwrap_err().is_timeout());
    assert!(start.elapsed() >= d);
    b.send(&7u8).unwrap();
    assert!(a.poll(Some(Duration::from_secs(5))).unwrap());
    assert_eq!(a.try_recv::<u8>().unwrap(), 7);

    let (r, w) = Pipe::simplex().unwrap();
    assert!(r.readable() && !r.writable());
    assert!(w.writable() && !w.readable());
    assert_eq!(r.send(&1u8).unwrap_err().kind(), ErrorKind::Unsupported);
    assert_eq!(w.recv::<u8>().unwrap_err().kind(), ErrorKind::Unsupported);
    w.send(&"one way").unwrap();
    assert_eq!(r.recv::<String>().unwrap(), "one way");
}

#[test]
fn the_peers_close_drains_then_reports_closed() {
    let (a, mut b) = Pipe::duplex().unwrap();
    for i in 0..3u8 {
        b.send(&i).unwrap();
    }
    b.close();
    assert!(b.is_closed());
    assert_eq!(b.send(&9u8).unwrap_err().kind(), ErrorKind::Closed);
    for i in 0..3u8 {
        assert_eq!(a.recv::<u8>().unwrap(), i);
    }
    let e = a.recv::<u8>().unwrap_err();
    assert!(e.is_closed(), "{e}");
    assert!(
        a.poll(Some(Duration::ZERO)).unwrap(),
        "EOF counts as readable"
    );
    let e = a.send(&1u8).unwrap_err();
    assert!(e.is_closed(), "{e}");
}

#[test]
fn messages_of_every_size_including_64_mib() {
    let (a, b) = Pipe::duplex().unwrap();
    let sender = std::thread::spawn(move || {
        for len in [0usize, 1, 4, 100, 65_532, 65_536, 70_000, 1 << 20, 64 << 20] {
            a.send_bytes(&vec![(len % 251) as u8; len]).unwrap();
        }
        a
    });
    let mut buf = Vec::new();
    for len in [0usize, 1, 4, 100, 65_532, 65_536, 70_000, 1 << 20, 64 << 20] {
        b.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(buf.len(), len);
        assert!(buf.iter().all(|&x| x == (len % 251) as u8));
    }
    drop(sender.join().unwrap());
}

// ---------------------------------------------------------------------------
// Between processes
// ---------------------------------------------------------------------------

fn echo(conn: Connection) -> u64 {
    let mut n = 0;
    let mut buf = Vec::new();
    loop {
        match conn.recv_bytes_into(&mut buf) {
            Ok(()) => {
                conn.send_bytes(&buf).unwrap();
                n += 1;
            }
            Err(e) if e.is_closed() => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_child_echoes_over_a_pipe_including_64_mib() {
    let _t = Ctx::new("pipe_echo");
    let (mine, theirs) = Pipe::duplex().unwrap();
    let child = spawn(echo, theirs); // our copy of `theirs` is dropped here
    let big = vec![0x5au8; 64 << 20];
    mine.send_bytes(&big).unwrap();
    assert!(mine.recv_bytes().unwrap() == big);
    for i in 0..1000u32 {
        mine.send(&i).unwrap();
        assert_eq!(mine.recv::<u32>().unwrap(), i);
    }
    drop(mine);
    assert_eq!(child.join().unwrap(), 1001);
}

fn produce_many((w, n): (Connection, u32)) {
    for i in 0..n {
        w.send(&i).unwrap();
    }
}

#[test]
fn many_small_messages_from_a_child_arrive_in_order() {
    let _t = Ctx::new("pipe_many");
    let (r, w) = Pipe::simplex().unwrap();
    let child = spawn(produce_many, (w, 100_000u32));
    for i in 0..100_000u32 {
        assert_eq!(r.recv::<u32>().unwrap(), i);
    }
    child.join().unwrap();
    assert!(r.recv::<u32>().unwrap_err().is_closed());
}

fn send_then_hang(w: Connection) {
    w.send(&"last words").unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn eof_after_the_peer_is_sigkilled() {
    let _t = Ctx::new("pipe_sigkill");
    let (r, w) = Pipe::simplex().unwrap();
    let child = spawn(send_then_hang, w);
    assert_eq!(r.recv::<String>().unwrap(), "last words");
    assert!(
        r.recv_timeout::<String>(Duration::from_millis(50))
            .unwrap_err()
            .is_timeout()
    );
    child.kill().unwrap();
    let e = r
        .recv_timeout::<String>(Duration::from_secs(30))
        .unwrap_err();
    assert!(e.is_closed(), "{e}");
    assert!(child.join().unwrap_err().is_process_died());
}

fn write_later((w, ms): (Connection, u64)) {
    std::thread::sleep(Duration::from_millis(ms));
    w.send(&"ready").unwrap();
}

#[test]
fn wait_returns_the_ready_connections() {
    let _t = Ctx::new("pipe_wait");
    let (mut readers, mut writers) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (r, w) = Pipe::simplex().unwrap();
        readers.push(r);
        writers.push(w);
    }
    let child = spawn(write_later, (writers.remove(1), 50));
    let refs: Vec<&Connection> = readers.iter().collect();
    assert!(wait(&refs, Some(Duration::ZERO)).unwrap().is_empty());
    let ready = wait(&refs, Some(Duration::from_secs(30))).unwrap();
    assert_eq!(ready, [1]);
    assert_eq!(refs[1].recv::<String>().unwrap(), "ready");
    child.join().unwrap();
    // The child exited: its end is closed, so reader 1 is ready with EOF.
    assert_eq!(wait(&refs, Some(Duration::from_secs(30))).unwrap(), [1]);
    assert!(refs[1].recv::<String>().unwrap_err().is_closed());
    let start = Instant::now();
    assert!(
        wait(&refs[..1], Some(Duration::from_millis(30)))
            .unwrap()
            .is_empty()
    );
    assert!(start.elapsed() >= Duration::from_millis(30));
}

// ---------------------------------------------------------------------------
// Listener and Client
// ---------------------------------------------------------------------------

fn serve_one(listener: Listener) -> std::thread::JoinHandle<ipckit::Result<String>> {
    std::thread::spawn(move || {
        let c = listener.accept()?;
        let s: String = c.recv()?;
        c.send(&s.to_uppercase())?;
        Ok(s)
    })
}

#[test]
fn listeners_and_clients_over_unix_and_tcp_with_keys() {
    let t = Ctx::new("listener_ok");
    let unix = sock_path(&t, "l");
    for (addr, key) in [
        (Address::Unix(unix.clone()), Some(&b"sesame"[..])),
        (Address::parse("127.0.0.1:0").unwrap(), Some(&b"sesame"[..])),
        (Address::Unix(sock_path(&t, "nokey")), None),
    ] {
        let listener = Listener::bind(addr, key).unwrap();
        let addr = listener.address().clone();
        let server = serve_one(listener);
        let c = Client::connect(addr, key).unwrap();
        c.send(&"hello").unwrap();
        assert_eq!(c.recv::<String>().unwrap(), "HELLO");
        assert_eq!(server.join().unwrap().unwrap(), "hello");
    }
    assert!(!unix.exists(), "the listener removes its socket file");
}

#[test]
fn wrong_or_missing_keys_are_rejected_on_both_sides() {
    let t = Ctx::new("listener_bad_keys");
    for (server_key, client_key) in [
        (Some(&b"right"[..]), Some(&b"wrong"[..])),
        (Some(&b"right"[..]), None),
        (None, Some(&b"right"[..])),
    ] {
        let listener = Listener::bind(sock_path(&t, "k").as_path(), server_key).unwrap();
        let addr = listener.address().clone();
        let server = std::thread::spawn(move || listener.accept().map(drop));
        let e = Client::connect(addr, client_key).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "client: {e}");
        match server.join().unwrap() {
            // A server without a key has nothing to check; the client hangs up.
            Ok(()) => assert!(server_key.is_none()),
            Err(e) => assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "server: {e}"),
        }
    }
}

fn client_in_child((addr, key): (String, Vec<u8>)) -> String {
    let c = Client::connect(Address::parse(&addr).unwrap(), Some(&key)).unwrap();
    c.send(&format!("from pid {}", std::process::id())).unwrap();
    c.recv::<String>().unwrap()
}

#[test]
fn a_client_in_another_process_authenticates() {
    let t = Ctx::new("listener_child");
    let listener = Listener::bind(sock_path(&t, "c").as_path(), Some(b"k3y")).unwrap();
    let addr = listener.address().to_string();
    let server = serve_one(listener);
    let child = spawn(client_in_child, (addr, b"k3y".to_vec()));
    let pid = child.pid();
    assert_eq!(child.join().unwrap(), format!("FROM PID {pid}"));
    assert_eq!(server.join().unwrap().unwrap(), format!("from pid {pid}"));
}

// ---------------------------------------------------------------------------
// Misbehaving peers
// ---------------------------------------------------------------------------

#[test]
fn garbage_silence_and_huge_lengths_in_the_handshake_are_rejected() {
    let t = Ctx::new("listener_garbage");
    let path = sock_path(&t, "g");
    let mut listener = Listener::bind(path.as_path(), Some(b"key")).unwrap();
    listener.set_handshake_timeout(Duration::from_millis(200));
    let cases: [&[u8]; 4] = [
        b"GET / HTTP/1.1\r\n\r\n",          // garbage
        &[0xff, 0xff, 0xff, 0x7f, 1, 2, 3], // a 2 GiB length prefix
        &[64, 0, 0, 0, 1, 2],               // half a frame, then silence
        b"",                                // silence
    ];
    for bytes in cases {
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(bytes).unwrap();
        let start = Instant::now();
        let e = listener.accept().unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::AuthenticationFailed | ErrorKind::Timeout | ErrorKind::Codec
            ),
            "{e}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
    }
    // The listener still serves a good client.
    let addr = listener.address().clone();
    let server = serve_one(listener);
    let c = Client::connect(addr, Some(b"key")).unwrap();
    c.send(&"fine").unwrap();
    assert_eq!(c.recv::<String>().unwrap(), "FINE");
    server.join().unwrap().unwrap();
}

#[test]
fn an_oversized_handshake_frame_is_refused_from_its_length_before_its_body() {
    let t = Ctx::new("listener_prealloc");
    let path = sock_path(&t, "p");
    let mut listener = Listener::bind(path.as_path(), Some(b"key")).unwrap();
    // Long: the refusal must not come from the deadline.
    listener.set_handshake_timeout(Duration::from_secs(30));
    let mut raw = UnixStream::connect(&path).unwrap();
    // A frame announced at 64 MiB (within the normal message limit), of
    // which a first kilobyte arrives; the peer then stays, silent — what
    // made an unauthenticated peer cost the server a buffer of that size.
    raw.write_all(&(64u32 << 20).to_le_bytes()).unwrap();
    raw.write_all(&[7u8; 1024]).unwrap();
    let start = Instant::now();
    let e = listener.accept().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    assert!(e.to_string().contains("oversized handshake frame"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    drop(raw);
}

/// A raw peer behind a keyless listener, speaking whatever bytes it likes.
fn raw_peer(t: &Ctx, bytes: &[u8]) -> Connection {
    let path = sock_path(t, "raw");
    let listener = Listener::bind(path.as_path(), None).unwrap();
    let bytes = bytes.to_vec();
    let peer = std::thread::spawn(move || {
        let mut raw = UnixStream::connect(&path).unwrap();
        // Read the hello frame, then write the bytes and hang up.
        let mut hello = [0u8; 64];
        let _ = std::io::Read::read(&mut raw, &mut hello);
        raw.write_all(&bytes).unwrap();
    });
    let c = listener.accept().unwrap();
    peer.join().unwrap();
    c
}

#[test]
fn a_raw_peers_huge_length_half_frame_and_garbage_are_errors() {
    let t = Ctx::new("raw_peer");
    let c = raw_peer(&t, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(c.recv_bytes().unwrap_err().kind(), ErrorKind::LimitExceeded);
    let c = raw_peer(&t, &[100, 0, 0, 0, 1, 2, 3]);
    assert_eq!(c.recv_bytes().unwrap_err().kind(), ErrorKind::Codec);
    let c = raw_peer(&t, &[3, 0]);
    assert_eq!(c.recv_bytes().unwrap_err().kind(), ErrorKind::Codec);
    let c = raw_peer(&t, &[3, 0, 0, 0, 0xff, 0xff, 0xff]);
    assert_eq!(c.recv::<String>().unwrap_err().kind(), ErrorKind::Codec);
    let mut c = raw_peer(&t, &[0, 0, 0x10, 0]); // 1 MiB announced
    c.set_max_message_size(1000);
    assert_eq!(c.recv_bytes().unwrap_err().kind(), ErrorKind::LimitExceeded);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    /// Whatever bytes a peer writes, receiving never panics, allocates no
    /// more than the limit allows, and ends in an error.
    #[test]
    fn arbitrary_streams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (mut a, b) = Pipe::duplex().unwrap();
        a.set_max_message_size(64);
        let mut raw = connection_stream(&b);
        raw.write_all(&bytes).unwrap();
        drop(raw);
        drop(b);
        let mut buf = Vec::new();
        let mut n = 0;
        while a.recv_bytes_into(&mut buf).is_ok() {
            prop_assert!(buf.len() <= 64);
            n += 1;
            prop_assert!(n <= bytes.len() / 4 + 1);
        }
    }
}

/// The raw socket under a connection (for writing arbitrary bytes into it).
fn connection_stream(c: &Connection) -> UnixStream {
    use std::os::fd::{AsRawFd, FromRawFd};
    // SAFETY: dup() gives a new descriptor owned by the returned stream.
    unsafe { UnixStream::from_raw_fd(libc::dup(c.as_raw_fd())) }
}

#[test]
fn silent_peers_do_not_delay_an_honest_client_of_accept() {
    let t = Ctx::new("listener_silent");
    let path = sock_path(&t, "s");
    // The default handshake timeout (10 s): accept used to run handshakes
    // one after another, so five silent peers held the next client 50 s.
    let listener = Listener::bind(path.as_path(), Some(b"key")).unwrap();
    let addr = listener.address().clone();
    let silent: Vec<UnixStream> = (0..5)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    let server = serve_one(listener);
    std::thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    let c = Client::connect(addr, Some(b"key")).unwrap();
    c.send(&"first").unwrap();
    assert_eq!(c.recv::<String>().unwrap(), "FIRST");
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the honest client took {took:?}"
    );
    assert_eq!(server.join().unwrap().unwrap(), "first");
    drop(silent);
}

#[test]
fn accept_runs_at_most_the_cap_of_handshakes_and_closes_the_rest() {
    use std::io::Read;
    let t = Ctx::new("listener_cap");
    let path = sock_path(&t, "c");
    let mut listener = Listener::bind(path.as_path(), Some(b"key")).unwrap();
    listener.set_max_pending_handshakes(2);
    let addr = listener.address().clone();
    let mut peers: Vec<UnixStream> = (0..4)
        .map(|_| UnixStream::connect(&path).unwrap())
        .collect();
    // Nobody authenticates within 300 ms: accept gives up, handshakes go on.
    assert!(
        listener
            .accept_timeout(Duration::from_millis(300))
            .unwrap()
            .is_none()
    );
    // Two peers got the server's hello; the two beyond the cap read EOF.
    let mut hello = 0;
    let mut closed = 0;
    for p in &mut peers {
        p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        match p.read(&mut b).unwrap() {
            0 => closed += 1,
            _ => hello += 1,
        }
    }
    assert_eq!((hello, closed), (2, 2));
    // When those two hang up, their failures come out of accept and an
    // honest client is served.
    drop(peers);
    let server = std::thread::spawn(move || {
        let mut failures = 0;
        loop {
            match listener.accept() {
                Ok(c) => {
                    let s: String = c.recv()?;
                    c.send(&s)?;
                    return Ok::<_, ipckit::Error>(failures);
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
                    failures += 1;
                }
            }
        }
    });
    let start = Instant::now();
    let c = loop {
        match Client::connect(addr.clone(), Some(b"key")) {
            Ok(c) => break c,
            Err(e) if start.elapsed() < Duration::from_secs(10) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    c.send(&"x").unwrap();
    assert_eq!(c.recv::<String>().unwrap(), "x");
    assert_eq!(server.join().unwrap().unwrap(), 2);
}

#[test]
fn a_listeners_unix_socket_is_0600_and_an_existing_path_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let t = Ctx::new("listener_mode");
    // A directory of its own, so no other test's bind is running in it.
    let dir = std::env::temp_dir().join(t.name("dir"));
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("m.sock");
    let listener = Listener::bind(path.as_path(), None).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let e = Listener::bind(path.as_path(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // Nothing of the private bind directory is left beside it.
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["m.sock"]);
    // The socket works under its linked name.
    let server = serve_one(listener);
    let c = Client::connect(path.as_path(), None).unwrap();
    c.send(&"m").unwrap();
    assert_eq!(c.recv::<String>().unwrap(), "M");
    server.join().unwrap().unwrap();
    assert!(!path.exists());
    std::fs::remove_dir(&dir).unwrap();
}
