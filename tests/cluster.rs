//! ipckit::cluster against a real nats-server (started by the tests on a free
//! port with a temporary JetStream store): the Executor, workers in other
//! processes, redelivery after SIGKILL, max deliveries, a server restart,
//! credentials, the queue and the dict across processes, bad bytes.
#![cfg(feature = "nats")]

mod common;
#[path = "support/nats.rs"]
mod nats;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::Ctx;
use ipckit::ErrorKind;
use ipckit::cluster::{Cluster, ClusterPool, Connect, Registry, Worker, current_attempt};
use ipckit::pool::{Executor, MapOptions, as_completed};

ipckit::test_support!();

// The task functions are `#[inline(never)]`: one address each, so that
// `submit(f, …)` finds them in the registry in optimised builds too.

#[inline(never)]
fn square(x: u64) -> u64 {
    x * x
}

#[inline(never)]
fn neg(x: i64) -> i64 {
    -x
}

/// Sleeps `ms`, then returns `(pid, attempt)`; writes the pid to `path` first.
#[inline(never)]
fn slow_where((ms, path): (u64, String)) -> (u32, u32) {
    std::fs::write(&path, std::process::id().to_string()).unwrap();
    std::thread::sleep(Duration::from_millis(ms));
    (std::process::id(), current_attempt())
}

/// Kills the worker running it, every time.
#[inline(never)]
fn kill_worker(_: u64) -> u64 {
    // SAFETY: signalling this process.
    unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    unreachable!()
}

#[inline(never)]
fn boom(x: u64) -> u64 {
    panic!("no luck with {x}")
}

#[inline(never)]
fn big(n: u64) -> Vec<u8> {
    vec![7; n as usize]
}

fn registry() -> Registry {
    ipckit::registry![square, neg, slow_where, kill_worker, boom, big]
}

/// A worker in a child process: serves `pool` until SIGTERM; returns its
/// completed count.
fn worker_child((url, pool, concurrency): (String, String, usize)) -> u64 {
    let cluster = Cluster::connect(&Connect::new(&url)).expect("worker connects");
    let stats = Worker::builder(&cluster, &pool)
        .concurrency(concurrency)
        .serve(&registry())
        .expect("worker serves");
    stats.completed
}

fn connect(s: &nats::Server) -> Cluster {
    Cluster::connect(&Connect::new(&s.url())).expect("connect")
}

macro_rules! server {
    () => {
        match nats::Server::start() {
            Some(s) => s,
            None => return,
        }
    };
}

#[test]
fn submit_map_and_errors_with_an_in_process_worker() {
    let _ctx = Ctx::new("cluster_basics");
    let s = server!();
    let cluster = connect(&s);
    let worker = Worker::builder(&cluster, "basics")
        .concurrency(2)
        .start(&registry())
        .unwrap();
    let pool = ClusterPool::builder(&cluster, "basics")
        .connect(&registry())
        .unwrap();
    assert_eq!(pool.submit(square, 12).unwrap().result().unwrap(), 144);
    assert_eq!(pool.apply(neg, 5).unwrap(), -5);
    let v: Vec<u64> = pool
        .map_with(
            square,
            0..1000u64,
            MapOptions {
                chunksize: 50,
                buffersize: None,
            },
        )
        .collect::<ipckit::Result<_>>()
        .unwrap();
    assert_eq!(v, (0..1000u64).map(|x| x * x).collect::<Vec<_>>());
    let mut got: Vec<u64> = pool
        .map_unordered(square, 0..100u64)
        .collect::<ipckit::Result<_>>()
        .unwrap();
    got.sort_unstable();
    assert_eq!(got, (0..100u64).map(|x| x * x).collect::<Vec<_>>());

    // A panic is the task's error, with its location.
    let e = pool.submit(boom, 3).unwrap().result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Panicked, "{e}");
    assert!(e.to_string().contains("no luck with 3"), "{e}");
    assert!(e.to_string().contains("cluster.rs"), "{e}");

    // An unregistered function fails at submit.
    fn unregistered(x: u8) -> u8 {
        x
    }
    let e = pool.submit(unregistered, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // A name the worker lacks, and a name the worker has with other types.
    fn ghost(x: u64) -> u64 {
        x
    }
    fn square_u32(x: u32) -> u32 {
        x * x
    }
    let other = Registry::new()
        .register("ghost", ghost)
        .register("square", square_u32);
    let pool2 = ClusterPool::builder(&cluster, "basics")
        .connect(&other)
        .unwrap();
    let e = pool2.submit(ghost, 1).unwrap().result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("ghost"), "{e}");
    let e = pool2.submit(square_u32, 2).unwrap().result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongType, "{e}");

    // Oversized: an argument is refused at submit, a result is a task error.
    let e = pool.submit(big, 2 << 20).unwrap().result().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    let huge = vec![u64::MAX; 200_000];
    let e = pool.submit_chunk(square, huge).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");

    // Callbacks and as_completed, as locally.
    let calls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..20u64)
        .map(|i| pool.submit(square, i).unwrap())
        .collect();
    for h in &handles {
        let c = calls.clone();
        h.add_done_callback(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut n = 0;
    for i in as_completed(&handles, Some(Duration::from_secs(30))) {
        assert!(handles[i.unwrap()].done());
        n += 1;
    }
    assert_eq!(n, 20);
    assert!(common::eventually(Duration::from_secs(5), || calls
        .load(Ordering::SeqCst)
        == 20));
    let stats = worker.stop().unwrap();
    // Tasks, not inputs: 1 + 1 + 20 chunks + 100 + 20.
    assert_eq!(stats.completed, 142, "{stats:?}");
    // boom, big (its result over the limit), ghost, square_u32.
    assert_eq!(stats.failed, 4, "{stats:?}");
}

#[test]
fn undecodable_tasks_do_not_kill_a_worker() {
    let _ctx = Ctx::new("cluster_bad_bytes");
    let s = server!();
    let cluster = connect(&s);
    let worker = Worker::builder(&cluster, "bad")
        .concurrency(1)
        .start(&registry())
        .unwrap();
    let pool = ClusterPool::builder(&cluster, "bad")
        .connect(&registry())
        .unwrap();
    for payload in [&b""[..], b"\xff\xff\xff\xff", b"hello", &[1u8; 4096]] {
        s.publish_raw("ipckit.bad.tasks", payload);
    }
    assert_eq!(pool.submit(square, 9).unwrap().result().unwrap(), 81);
    assert!(common::eventually(Duration::from_secs(10), || worker
        .stats()
        .rejected
        == 4));
    let stats = worker.stop().unwrap();
    assert!(stats.last_rejected.is_some());
}

#[test]
fn wrong_credentials_are_a_clear_error_at_connect() {
    let _ctx = Ctx::new("cluster_auth");
    let Some(s) = nats::Server::start_with(&["--user", "ipckit", "--pass", "s3cret"]) else {
        return;
    };
    let e = Cluster::connect(&Connect::new(&s.url()).user_password("ipckit", "wrong")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    assert!(
        !format!("{e}").contains("wrong"),
        "the password is not printed: {e}"
    );
    let e = Cluster::connect(&Connect::new(&s.url())).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    let ok = Cluster::connect(&Connect::new(&s.url()).user_password("ipckit", "s3cret")).unwrap();
    let d = ok.dict::<u32>("auth").unwrap();
    d.insert("k", &1).unwrap();
    assert_eq!(d.get("k").unwrap(), Some(1));
    let shown = format!(
        "{:?}",
        Connect::new(&s.url()).user_password("ipckit", "s3cret")
    );
    assert!(!shown.contains("s3cret"), "{shown}");

    // A token, the same way.
    let Some(t) = nats::Server::start_with(&["--auth", "t0ken"]) else {
        return;
    };
    let e = Cluster::connect(&Connect::new(&t.url()).token("nope")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    let ok = Cluster::connect(&Connect::new(&t.url()).token("t0ken")).unwrap();
    ok.flush().unwrap();
    assert!(!format!("{:?}", Connect::new(&t.url()).token("t0ken")).contains("t0ken"));
}

/// Runs openssl (the test's certificate authority); a missing binary is a
/// failure with instructions, not a skipped test.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the TLS test needs the openssl command (Debian: apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `openssl req` for a new P-256 key in `key` and a request (or, with
/// `-x509` in `extra`, a self-signed certificate) in `out` for `subject`.
fn new_key(dir: &std::path::Path, extra: &[&str], key: &str, out: &str, subject: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let files = ["-keyout", key, "-out", out, "-subj", subject];
    openssl(dir, &[&["req"], extra, &ec, &files].concat());
}

/// A CA, and a certificate it signed for `name` (127.0.0.1 and localhost)
/// with extended key usage `usage` (serverAuth or clientAuth).
fn issue(dir: &std::path::Path, name: &str, usage: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n"),
    )
    .unwrap();
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    new_key(dir, &[], &key, &csr, "/CN=localhost");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "1",
            "-extfile",
            &ext,
        ],
    );
}

/// The credentials the server asks for that the other test does not
/// cover: an nkey, a TLS server that must be trusted through its CA, and
/// mutual TLS with a client certificate.
#[test]
fn nkey_and_tls_connections() {
    let _ctx = Ctx::new("cluster_nkey_tls");
    let dir = std::env::temp_dir().join(format!("ipckit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());

    // An nkey user: the server knows only the public key.
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().unwrap();
    let conf = dir.join("nkey.conf");
    std::fs::write(
        &conf,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let Some(s) = nats::Server::start_with(&["-c", conf.to_str().unwrap()]) else {
        return;
    };
    let ok = Cluster::connect(&Connect::new(&s.url()).nkey(&seed)).unwrap();
    let d = ok.dict::<u32>("nkey").unwrap();
    d.insert("k", &7).unwrap();
    assert_eq!(d.get("k").unwrap(), Some(7));
    let stranger = nkeys::KeyPair::new_user().seed().unwrap();
    let e = Cluster::connect(&Connect::new(&s.url()).nkey(&stranger)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    assert!(
        !format!("{e}").contains(&stranger),
        "the seed is not printed: {e}"
    );
    assert!(!format!("{:?}", Connect::new(&s.url()).nkey(&seed)).contains(&seed));
    drop(ok);
    drop(s);

    // TLS: a CA of our own, a server certificate it signed.
    new_key(
        &dir,
        &["-x509", "-days", "1"],
        "ca.key",
        "ca.pem",
        "/CN=ipckit test CA",
    );
    issue(&dir, "server", "serverAuth");
    issue(&dir, "client", "clientAuth");
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let (cert, key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let tls = ["--tls", "--tlscert", &cert, "--tlskey", &key];
    let Some(s) = nats::Server::start_with(&tls) else {
        return;
    };
    let url = format!("tls://127.0.0.1:{}", s.port());
    // Not trusted without the CA; trusted with it.
    let e = Cluster::connect(&Connect::new(&url).timeout(Duration::from_secs(5))).unwrap_err();
    println!("without the CA: {e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let ok = Cluster::connect(&Connect::new(&url).root_certificate(&ca).require_tls(true)).unwrap();
    ok.queue::<String>("tls")
        .unwrap()
        .put(&"over TLS".into())
        .unwrap();
    drop(ok);
    drop(s);

    // Mutual TLS: the server also asks for a client certificate.
    let mutual = [&tls[..], &["--tlsverify", "--tlscacert", &ca]].concat();
    let Some(s) = nats::Server::start_with(&mutual) else {
        return;
    };
    let url = format!("tls://127.0.0.1:{}", s.port());
    let without = Connect::new(&url)
        .root_certificate(&ca)
        .timeout(Duration::from_secs(5));
    let e = Cluster::connect(&without).unwrap_err();
    println!("without a client certificate: {e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    let with = Connect::new(&url)
        .root_certificate(&ca)
        .client_certificate(path("client.pem"), path("client.key"));
    let ok = Cluster::connect(&with).unwrap();
    ok.flush().unwrap();
}

/// A task longer than ack_wait is kept by its worker's heartbeats: it runs
/// once, not again elsewhere.
#[test]
fn heartbeats_keep_a_long_task_on_its_worker() {
    let ctx = Ctx::with_limit("cluster_heartbeat", Duration::from_secs(120));
    let s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "long")
        .ack_wait(Duration::from_secs(1))
        .connect(&registry())
        .unwrap();
    let worker = Worker::builder(&cluster, "long")
        .concurrency(2)
        .start(&registry())
        .unwrap();
    let marker = std::env::temp_dir().join(ctx.name("long"));
    let h = pool
        .submit(slow_where, (3500, marker.to_string_lossy().into_owned()))
        .unwrap();
    let (_, attempt) = h.result().unwrap();
    assert_eq!(attempt, 1);
    // A redelivery would have started on the idle thread by now.
    std::thread::sleep(Duration::from_millis(1500));
    let stats = worker.stop().unwrap();
    assert_eq!((stats.completed, stats.running), (1, 0), "{stats:?}");
    let _ = std::fs::remove_file(&marker);
}

/// 10 000 tasks shared by 3 worker processes: every result once and right.
#[test]
fn three_worker_processes_share_ten_thousand_tasks() {
    let _ctx = Ctx::with_limit("cluster_three_workers", Duration::from_secs(240));
    let s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "share")
        .connect(&registry())
        .unwrap();
    let workers: Vec<_> = (0..3)
        .map(|_| common::spawn(worker_child, (s.url(), "share".to_owned(), 2)))
        .collect();
    let calls = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..10_000u64)
        .map(|i| {
            let h = pool.submit(square, i).unwrap();
            let c = calls.clone();
            h.add_done_callback(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            });
            h
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(h.result().unwrap(), i * i);
    }
    // A waiter may return before the completing thread ran the callbacks
    // (as in CPython): every one runs, once.
    assert!(common::eventually(Duration::from_secs(10), || calls
        .load(Ordering::SeqCst)
        >= 10_000));
    assert_eq!(calls.load(Ordering::SeqCst), 10_000);
    let st = pool.stats();
    assert_eq!(
        (st.completed, st.failed, st.pending),
        (10_000, 0, 0),
        "{st:?}"
    );
    // Nothing left behind in the server: tasks acknowledged, results
    // received and acknowledged (deleted).
    assert!(
        common::eventually(Duration::from_secs(10), || pool.backlog().unwrap()
            == (0, 0)),
        "{:?}",
        pool.backlog()
    );
    let mut per_worker = Vec::new();
    for w in workers {
        w.terminate().unwrap();
        per_worker.push(w.join().unwrap());
    }
    assert_eq!(per_worker.iter().sum::<u64>(), 10_000, "{per_worker:?}");
    assert!(
        per_worker.iter().all(|&n| n > 0),
        "every worker took some: {per_worker:?}"
    );
}

/// A worker SIGKILLed mid-task: the task completes on another worker, on
/// its second delivery.
#[test]
fn a_killed_workers_task_runs_again_elsewhere() {
    let ctx = Ctx::with_limit("cluster_redelivery", Duration::from_secs(120));
    let s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "redeliver")
        .ack_wait(Duration::from_secs(2))
        .connect(&registry())
        .unwrap();
    let a = common::spawn(worker_child, (s.url(), "redeliver".to_owned(), 1));
    let b = common::spawn(worker_child, (s.url(), "redeliver".to_owned(), 1));
    let marker = std::env::temp_dir().join(ctx.name("pid"));
    let path = marker.to_string_lossy().into_owned();
    let h = pool.submit(slow_where, (1500, path.clone())).unwrap();
    assert!(common::eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(&marker).is_ok_and(|p| !p.is_empty())
    }));
    let first: u32 = std::fs::read_to_string(&marker).unwrap().parse().unwrap();
    let (victim, survivor) = if first == a.pid() { (a, b) } else { (b, a) };
    assert_eq!(victim.pid(), first);
    victim.kill().unwrap();
    let _ = victim.join();
    // Delivery 2 on the survivor: redelivered, not run twice at once.
    let (ran_on, attempt) = h.result().unwrap();
    assert_eq!(ran_on, survivor.pid());
    assert_eq!(attempt, 2);
    survivor.terminate().unwrap();
    let _ = survivor.join();
    let _ = std::fs::remove_file(&marker);
}

/// A task that kills every worker fails after max_deliver deliveries. As
/// under a supervisor (systemd, Kubernetes), a dead worker is replaced: the
/// server notices the last delivery's timeout when a worker asks for work.
#[test]
fn a_task_that_kills_every_worker_fails_after_max_deliver() {
    let _ctx = Ctx::with_limit("cluster_max_deliver", Duration::from_secs(120));
    let s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "poison")
        .ack_wait(Duration::from_secs(1))
        .max_deliver(2)
        .connect(&registry())
        .unwrap();
    let mut h = pool.submit(kill_worker, 1).unwrap();
    let mut deaths = 0;
    let outcome = loop {
        let w = common::spawn(worker_child, (s.url(), "poison".to_owned(), 1));
        // Each worker either dies running the task or is still alive when
        // the task has failed.
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut done = None;
        while Instant::now() < deadline {
            match h.result_timeout(Duration::from_millis(100)) {
                Err(e) if e.is_timeout() => {}
                other => {
                    done = Some(other);
                    break;
                }
            }
            if !w.is_alive() {
                break;
            }
        }
        if let Some(r) = done {
            let _ = w.kill();
            let _ = w.join();
            break r;
        }
        assert!(
            !w.is_alive(),
            "a worker neither died nor failed the task in 20 s"
        );
        let _ = w.join();
        deaths += 1;
        assert!(
            deaths <= 2,
            "the task was delivered more than max_deliver times"
        );
    };
    let e = outcome.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ProcessDied, "{e}");
    assert!(e.to_string().contains("delivered 2 times"), "{e}");
    assert_eq!(deaths, 2, "one death per delivery");
    // And the pool goes on: the next task runs.
    let w = common::spawn(worker_child, (s.url(), "poison".to_owned(), 1));
    assert_eq!(pool.submit(square, 3).unwrap().result().unwrap(), 9);
    w.terminate().unwrap();
    let _ = w.join();
}

/// Tasks queued while the server restarts (file storage) are not lost.
#[test]
fn a_server_restart_loses_no_queued_task() {
    let _ctx = Ctx::with_limit("cluster_restart", Duration::from_secs(180));
    let mut s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "restart")
        .connect(&registry())
        .unwrap();
    let handles: Vec<_> = (0..200u64)
        .map(|i| pool.submit(square, i).unwrap())
        .collect();
    // Every task stored before the restart.
    pool.flush(Duration::from_secs(10)).unwrap();
    s.restart();
    let w = common::spawn(worker_child, (s.url(), "restart".to_owned(), 2));
    for (i, mut h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(h.result_timeout(Duration::from_secs(60)).unwrap(), i * i);
    }
    w.terminate().unwrap();
    assert_eq!(w.join().unwrap(), 200);
}

/// `map` over 100 000 inputs in chunks never has more than its bound in flight.
#[test]
fn map_keeps_its_in_flight_bound() {
    let _ctx = Ctx::with_limit("cluster_map_bound", Duration::from_secs(180));
    let s = server!();
    let cluster = connect(&s);
    let worker = Worker::builder(&cluster, "bound")
        .concurrency(2)
        .start(&registry())
        .unwrap();
    let pool = ClusterPool::builder(&cluster, "bound")
        .connect(&registry())
        .unwrap();
    let bound = 6;
    let mut max_seen = 0;
    let mut n = 0u64;
    for r in pool.map_with(
        square,
        0..100_000u64,
        MapOptions {
            chunksize: 500,
            buffersize: Some(bound),
        },
    ) {
        assert_eq!(r.unwrap(), n * n);
        n += 1;
        let st = pool.stats();
        max_seen = max_seen.max(st.pending + st.running);
    }
    assert_eq!(n, 100_000);
    assert!(max_seen <= bound, "in flight {max_seen} > bound {bound}");
    worker.stop().unwrap();
}

fn queue_producer((url, n): (String, u64)) -> u64 {
    let cluster = Cluster::connect(&Connect::new(&url)).unwrap();
    let q = cluster.queue::<(u64, String)>("jobs").unwrap();
    for i in 0..n {
        q.put(&(i, format!("job {i}"))).unwrap();
    }
    n
}

fn dict_incrementer((url, n): (String, u64)) -> u64 {
    let cluster = Cluster::connect(&Connect::new(&url)).unwrap();
    let d = cluster.dict::<u64>("counts").unwrap();
    for _ in 0..n {
        d.update("hits", |old| old.unwrap_or(0) + 1).unwrap();
    }
    n
}

#[test]
fn queue_and_dict_across_processes() {
    let _ctx = Ctx::with_limit("cluster_queue_dict", Duration::from_secs(180));
    let s = server!();
    let cluster = connect(&s);
    let q = cluster.queue::<(u64, String)>("jobs").unwrap();
    let producers: Vec<_> = (0..2)
        .map(|_| common::spawn(queue_producer, (s.url(), 300)))
        .collect();
    let mut seen = vec![0u32; 300];
    for _ in 0..600 {
        let job = q.get_timeout(Duration::from_secs(30)).unwrap();
        let (i, text) = job.value().clone();
        assert_eq!(text, format!("job {i}"));
        seen[i as usize] += 1;
        job.task_done().unwrap();
    }
    assert!(seen.iter().all(|&c| c == 2));
    for p in producers {
        assert_eq!(p.join().unwrap(), 300);
    }
    q.join_timeout(Duration::from_secs(10)).unwrap();
    assert!(q.try_get().unwrap_err().is_would_block());
    assert!(
        q.get_timeout(Duration::from_millis(200))
            .unwrap_err()
            .is_timeout()
    );

    // A job dropped without task_done goes back; join waits for it.
    q.put(&(7, "job 7".into())).unwrap();
    let job = q.get().unwrap();
    assert_eq!(job.attempt(), 1);
    assert!(
        q.join_timeout(Duration::from_millis(200))
            .unwrap_err()
            .is_timeout()
    );
    drop(job);
    let again = q.get_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(again.attempt(), 2);
    // into_value moves the item out and acknowledges it: join ends.
    assert_eq!(again.into_value().unwrap(), (7, "job 7".to_owned()));
    q.join_timeout(Duration::from_secs(10)).unwrap();

    // An item of another type is an error, not a crash, and is dropped.
    cluster
        .queue::<String>("jobs")
        .unwrap()
        .put(&"not a tuple".into())
        .unwrap();
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Codec);
    q.join_timeout(Duration::from_secs(10)).unwrap();

    // The dict: atomic increments from two processes.
    let d = cluster.dict::<u64>("counts").unwrap();
    let incs: Vec<_> = (0..2)
        .map(|_| common::spawn(dict_incrementer, (s.url(), 150)))
        .collect();
    for p in incs {
        assert_eq!(p.join().unwrap(), 150);
    }
    assert_eq!(d.get("hits").unwrap(), Some(300));
    let (v, rev) = d.entry("hits").unwrap().unwrap();
    assert_eq!(v, 300);
    assert!(d.compare_and_set("hits", rev, &0).unwrap().is_some());
    assert!(
        d.compare_and_set("hits", rev, &1).unwrap().is_none(),
        "a stale revision"
    );
    assert_eq!(d.insert_new("hits", &5).unwrap(), None);
    assert!(d.insert_new("fresh", &5).unwrap().is_some());
    assert_eq!(d.keys().unwrap(), ["fresh", "hits"]);
    assert!(d.remove("fresh").unwrap());
    assert!(!d.remove("fresh").unwrap());
    assert_eq!(d.get("fresh").unwrap(), None);
    assert!(
        d.insert_new("fresh", &6).unwrap().is_some(),
        "a removed key can be made again"
    );
    assert_eq!(d.keys().unwrap(), ["fresh", "hits"]);
    assert_eq!(
        d.insert("bad key", &1).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    let wrong = cluster.dict::<(u64, u64, u64)>("counts").unwrap();
    assert_eq!(wrong.get("hits").unwrap_err().kind(), ErrorKind::Codec);
}

/// cancel of a pending task removes it (no worker runs it); `.await`,
/// `wait` and `shutdown` work as on a local pool.
#[test]
fn cancel_await_wait_and_shutdown() {
    let _ctx = Ctx::with_limit("cluster_cancel", Duration::from_secs(120));
    let s = server!();
    let cluster = connect(&s);
    let pool = ClusterPool::builder(&cluster, "cancel")
        .connect(&registry())
        .unwrap();
    // No worker yet: every task is pending.
    let a = pool.submit(square, 2).unwrap();
    let b = pool.submit(square, 3).unwrap();
    let c = pool.submit(square, 4).unwrap();
    // A done-callback of a cancelled task may submit (it runs on the
    // cancelling thread, with no lock of the pool held).
    let pool = Arc::new(pool);
    let again = Arc::new(std::sync::Mutex::new(None));
    let (p, slot) = (pool.clone(), again.clone());
    b.add_done_callback(move |_| *slot.lock().unwrap() = Some(p.submit(square, 6).unwrap()));
    assert!(b.cancel(), "a pending task is cancelled");
    let again = again
        .lock()
        .unwrap()
        .take()
        .expect("the callback submitted");
    assert!(b.cancelled());
    assert_eq!(b.result().unwrap_err().kind(), ErrorKind::Cancelled);
    pool.flush(Duration::from_secs(10)).unwrap();
    let worker = Worker::builder(&cluster, "cancel")
        .concurrency(1)
        .start(&registry())
        .unwrap();
    assert_eq!(common::block_on(a).unwrap(), 4);
    let (done, not_done) = ipckit::pool::wait(
        std::slice::from_ref(&c),
        Some(Duration::from_secs(30)),
        ipckit::pool::ReturnWhen::AllCompleted,
    );
    assert_eq!((done.len(), not_done.len()), (1, 0));
    assert!(!c.cancel(), "a finished task is not cancelled");
    assert_eq!(again.result().unwrap(), 36);
    assert_eq!(c.result().unwrap(), 16);
    // The long task is running: cancel is refused.
    let dir = std::env::temp_dir().join(format!("ipckit-cancel-{}", std::process::id()));
    let long = pool
        .submit(slow_where, (1000, dir.to_string_lossy().into_owned()))
        .unwrap();
    assert!(common::eventually(Duration::from_secs(10), || long.running()));
    assert!(!long.cancel(), "a running task is not cancelled");
    let last = pool.submit(square, 5).unwrap();
    pool.shutdown(true, false);
    assert!(last.done() && long.done());
    assert_eq!(
        pool.submit(square, 1).unwrap_err().kind(),
        ErrorKind::Closed
    );
    let stats = worker.stop().unwrap();
    assert_eq!(
        stats.completed, 5,
        "the cancelled task never ran: {stats:?}"
    );
    let _ = std::fs::remove_file(&dir);
}

/// A 3-node JetStream cluster with 3 replicas: one node SIGKILLed with
/// tasks queued, and every task still runs.
#[test]
fn a_three_node_cluster_loses_no_task_with_a_node() {
    let _ctx = Ctx::with_limit("cluster_three_nodes", Duration::from_secs(180));
    let Some(mut nodes) = nats::Server::start_cluster() else {
        return;
    };
    let urls = nodes.iter().map(|n| n.url()).collect::<Vec<_>>().join(",");
    let cluster = Cluster::connect(&Connect::new(&urls).replicas(3)).unwrap();
    // The cluster elects its JetStream leader after its routes are up.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pool = loop {
        match ClusterPool::builder(&cluster, "replicated")
            .ack_wait(Duration::from_secs(2))
            .connect(&registry())
        {
            Ok(p) => break p,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("no JetStream cluster in 60 s: {e}"),
        }
    };
    let handles: Vec<_> = (0..100u64)
        .map(|i| pool.submit(square, i).unwrap())
        .collect();
    pool.flush(Duration::from_secs(20)).unwrap();
    nodes[0].kill();
    let w = common::spawn(worker_child, (urls.clone(), "replicated".to_owned(), 2));
    for (i, mut h) in handles.into_iter().enumerate() {
        let i = i as u64;
        assert_eq!(h.result_timeout(Duration::from_secs(60)).unwrap(), i * i);
    }
    w.terminate().unwrap();
    assert_eq!(w.join().unwrap(), 100);
}
