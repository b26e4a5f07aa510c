//! Helpers shared by the benchmarks: CPU pinning, hex tokens for children's
//! arguments, and a raw shared-futex ping-pong (the baseline for waiting).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use ipckit::Segment;

pub mod regime_report;

/// With `IPCKIT_BENCH_PIN=1`, pins the calling process to one CPU (parent
/// on CPU 0, child on CPU 1), as the Python baselines in
/// `docs/design-measurements.md` were measured. By default processes float,
/// as they do in real programs.
pub fn pin_to(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    if n < 2 || std::env::var("IPCKIT_BENCH_PIN").as_deref() != Ok("1") {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET and sched_setaffinity take
    // a properly sized set for the calling process (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// The share of CPU time the hypervisor gave to others while a bench ran
/// (`steal` in `/proc/stat`): on a VM whose host is busy, every figure
/// slows and spreads, so a bench records it beside its results. Start it,
/// run, then read [`Steal::percent`].
pub struct Steal(Option<Vec<u64>>);

impl Steal {
    pub fn start() -> Steal {
        Steal(cpu_times())
    }

    /// Stolen time as a percentage of all CPU time since `start`; `None`
    /// where `/proc/stat` has no steal column.
    pub fn percent(&self) -> Option<f64> {
        let (a, b) = (self.0.as_ref()?, cpu_times()?);
        // user nice system idle iowait irq softirq steal
        let d: Vec<u64> = a
            .iter()
            .zip(&b)
            .map(|(x, y)| y.saturating_sub(*x))
            .collect();
        let total: u64 = d.iter().take(8).sum();
        (d.len() >= 8 && total > 0).then(|| 100.0 * d[7] as f64 / total as f64)
    }
}

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks.
fn cpu_times() -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    line.split_whitespace().map(|f| f.parse().ok()).collect()
}

/// Where one measurement's wall-clock time went, for telling a slow run
/// of the Queue's own making from one the machine imposed: for each of two
/// tasks (the bench's thread and the child's), the time it ran and the time
/// it waited runnable for a CPU (`/proc/<task>/schedstat`: the kernel's
/// run time excludes what the hypervisor stole, on kernels with paravirt
/// steal accounting), and the time the hypervisor took from the guest's
/// CPUs (`steal` in `/proc/stat`, summed over CPUs, 10 ms resolution).
/// Start it, run, then [`RunAccount::finish`].
pub struct RunAccount {
    tasks: [String; 2],
    at: [Option<[u64; 2]>; 2],
    steal: Option<Vec<u64>>,
    began: std::time::Instant,
}

/// What a [`RunAccount`] saw, as fractions of the run's wall-clock time:
/// `ran` and `waited` per task (bench thread, child), `stolen` summed over
/// CPUs (2.0 would be both CPUs taken for the whole run).
#[derive(Clone, Copy, Debug)]
pub struct RunShares {
    pub ran: [Option<f64>; 2],
    pub waited: [Option<f64>; 2],
    pub stolen: Option<f64>,
}

impl RunAccount {
    /// `child`: the pid whose main thread is the peer.
    pub fn start(child: u32) -> RunAccount {
        let tasks = [
            "/proc/thread-self/schedstat".to_owned(),
            format!("/proc/{child}/schedstat"),
        ];
        RunAccount {
            at: [schedstat(&tasks[0]), schedstat(&tasks[1])],
            tasks,
            steal: cpu_times(),
            began: std::time::Instant::now(),
        }
    }

    pub fn finish(self) -> RunShares {
        let wall = self.began.elapsed().as_nanos().max(1) as f64;
        let mut ran = [None; 2];
        let mut waited = [None; 2];
        for i in 0..2 {
            if let (Some(a), Some(b)) = (self.at[i], schedstat(&self.tasks[i])) {
                ran[i] = Some(b[0].saturating_sub(a[0]) as f64 / wall);
                waited[i] = Some(b[1].saturating_sub(a[1]) as f64 / wall);
            }
        }
        let stolen = match (self.steal, cpu_times()) {
            (Some(a), Some(b)) if a.len() >= 8 && b.len() >= 8 => {
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
                Some(b[7].saturating_sub(a[7]) as f64 / hz * 1e9 / wall)
            }
            _ => None,
        };
        RunShares {
            ran,
            waited,
            stolen,
        }
    }
}

/// (ns on a CPU, ns waiting runnable) from a schedstat file.
fn schedstat(path: &str) -> Option<[u64; 2]> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>().ok());
    Some([f.next()??, f.next()??])
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The futex word at the start of `seg`.
pub fn word(seg: &Segment) -> &AtomicU32 {
    // SAFETY: the segment is at least 4 bytes, page-aligned, and the word is
    // only accessed atomically by both processes.
    unsafe { &*(seg.as_ptr() as *const AtomicU32) }
}

fn futex_wait(w: &AtomicU32, v: u32) {
    // SAFETY: futex(2) FUTEX_WAIT on a valid shared word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            w.as_ptr(),
            libc::FUTEX_WAIT,
            v,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(w: &AtomicU32) {
    // SAFETY: futex(2) FUTEX_WAKE on a valid shared word.
    unsafe { libc::syscall(libc::SYS_futex, w.as_ptr(), libc::FUTEX_WAKE, 1) };
}

/// Word states of the raw ping-pong.
pub const IDLE: u32 = 0;
pub const PING: u32 = 1;
pub const PONG: u32 = 2;
pub const STOP: u32 = 3;

/// Waits (sleeping, never spinning) until the word is `want` (or STOP).
pub fn futex_await(w: &AtomicU32, want: u32) -> u32 {
    loop {
        let v = w.load(Ordering::Acquire);
        if v == want || v == STOP {
            return v;
        }
        futex_wait(w, v);
    }
}

/// Sets the word and wakes the peer.
pub fn futex_set(w: &AtomicU32, v: u32) {
    w.store(v, Ordering::Release);
    futex_wake(w);
}

/// The child side of the raw ping-pong: answers every PING with a PONG.
pub fn futex_pong(seg: &Segment) {
    let w = word(seg);
    while futex_await(w, PING) != STOP {
        futex_set(w, PONG);
    }
}

/// A Python peer for the baselines: `benches/python/<script>` in a python3
/// child, driven line by line over stdin/stdout. The script prints "ready"
/// once set up, then answers each command with the nanoseconds the batch
/// took (Python times itself, so process start-up is not counted).
pub struct PythonPeer {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::BufReader<std::process::ChildStdout>,
}

impl PythonPeer {
    /// Starts the peer, or prints why the Python rows are skipped.
    pub fn start(script: &str, args: &[&str]) -> Option<PythonPeer> {
        match PythonPeer::try_start(script, args) {
            Ok(p) => Some(p),
            Err(why) => {
                eprintln!("skipping the Python rows: {why}");
                None
            }
        }
    }

    fn try_start(script: &str, args: &[&str]) -> Result<PythonPeer, String> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};
        let path = format!("{}/benches/python/{script}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("python3")
            .arg(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3 cannot be started: {e}"))?;
        let input = child.stdin.take().expect("piped");
        let mut output = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        output
            .read_line(&mut line)
            .map_err(|e| format!("python3 peer: {e}"))?;
        if line.trim() != "ready" {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("python3 peer did not start (said {line:?})"));
        }
        Ok(PythonPeer {
            child,
            input,
            output,
        })
    }

    /// Runs one command; the batch's elapsed time as measured by Python.
    pub fn time(&mut self, command: &str) -> std::time::Duration {
        use std::io::{BufRead, Write};
        writeln!(self.input, "{command}").expect("python3 peer gone");
        self.input.flush().expect("python3 peer gone");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("python3 peer gone");
        let ns: u64 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("python3 peer answered {line:?} to {command:?}"));
        std::time::Duration::from_nanos(ns)
    }
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        use std::io::Write;
        let _ = writeln!(self.input, "quit");
        let _ = self.input.flush();
        let _ = self.child.wait();
    }
}

/// How long one cache line takes to go from the first CPU of this
/// process's affinity mask to the second and back, in nanoseconds: two
/// threads, one pinned to each, bounce a line for `time`. On a VM the host
/// decides where the virtual CPUs run; on this project's machine the figure
/// is ~110 ns most of the time and ~510 ns in phases that last seconds to
/// minutes (the virtual CPUs on far cores), and every shared-memory
/// transport slows with it. The regime section records it before each run.
/// `None` with fewer than two CPUs.
pub fn line_round_trip_ns(time: std::time::Duration) -> Option<f64> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    #[repr(align(128))]
    struct Line(AtomicU64);

    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity fills it for
    // the calling thread (0).
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .take(2)
            .collect()
    };
    if cpus.len() < 2 {
        return None;
    }
    let pin = |cpu: usize| {
        // SAFETY: as above; pins the calling thread only.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    };
    let lines = Arc::new([Line(AtomicU64::new(0)), Line(AtomicU64::new(0))]);
    let peer = {
        let lines = lines.clone();
        let cpu = cpus[1];
        std::thread::spawn(move || {
            pin(cpu);
            let mut seen = 0;
            loop {
                let v = lines[0].0.load(Ordering::Acquire);
                if v == seen {
                    std::hint::spin_loop();
                    continue;
                }
                seen = v;
                lines[1].0.store(v, Ordering::Release);
                if v == u64::MAX {
                    return;
                }
            }
        })
    };
    let measure = move || {
        pin(cpus[0]);
        // The first bounces wait for the peer thread to start.
        let mut n = 0u64;
        let mut bounce = |count: u64| {
            for _ in 0..count {
                n += 1;
                lines[0].0.store(n, Ordering::Release);
                while lines[1].0.load(Ordering::Acquire) != n {
                    std::hint::spin_loop();
                }
            }
        };
        bounce(100);
        let (start, mut trips) = (Instant::now(), 0u64);
        while start.elapsed() < time {
            bounce(256);
            trips += 256;
        }
        let ns = start.elapsed().as_nanos() as f64 / trips as f64;
        lines[0].0.store(u64::MAX, Ordering::Release);
        ns
    };
    // Measured on a thread of its own, so the caller's affinity is untouched.
    let ns = std::thread::spawn(measure).join().ok();
    let _ = peer.join();
    ns
}
