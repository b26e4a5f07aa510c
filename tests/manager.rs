//! Managers: proxies across processes, pools, crashes, bad clients.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Ctx, spawn};
use ipckit::ErrorKind;
use ipckit::connection::{Address, Client};
use ipckit::manager::{
    BarrierProxy, ConditionProxy, DictProxy, EventProxy, ListProxy, LockProxy, Manager, QueueProxy,
    RLockProxy, SemaphoreProxy,
};
use ipckit::pool::{Executor, ProcessPool};
use serde::{Deserialize, Serialize};

ipckit::test_support!();

fn sock(ctx: &Ctx, tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}.sock", ctx.name(tag)))
}

#[test]
fn dict_list_value_namespace_semantics() {
    let _t = Ctx::new("mgr_semantics");
    let m = Manager::start().unwrap();
    let d = m.dict::<String, Vec<u32>>().unwrap();
    let k = |s: &str| s.to_owned();
    assert_eq!(d.insert(&k("b"), &vec![1]).unwrap(), None);
    assert_eq!(d.insert(&k("a"), &vec![2, 3]).unwrap(), None);
    assert_eq!(d.insert(&k("b"), &vec![4]).unwrap(), Some(vec![1]));
    assert_eq!(d.get(&k("a")).unwrap(), Some(vec![2, 3]));
    assert_eq!(d.get(&k("zz")).unwrap(), None);
    assert!(d.contains_key(&k("a")).unwrap());
    assert_eq!(d.keys().unwrap(), ["b", "a"], "insertion order");
    assert_eq!(d.values().unwrap(), [vec![4], vec![2, 3]]);
    assert_eq!(d.get_or_insert(&k("c"), &vec![9]).unwrap(), vec![9]);
    assert_eq!(d.get_or_insert(&k("c"), &vec![0]).unwrap(), vec![9]);
    d.update([(&k("d"), &vec![]), (&k("a"), &vec![7])]).unwrap();
    assert_eq!(d.len().unwrap(), 4);
    assert_eq!(d.pop(&k("d")).unwrap(), Vec::<u32>::new());
    assert_eq!(d.pop(&k("d")).unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(d.remove(&k("c")).unwrap(), Some(vec![9]));
    assert_eq!(d.items().unwrap(), [(k("b"), vec![4]), (k("a"), vec![7])]);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());

    let l = m.list::<i32>().unwrap();
    l.extend(&[1, 2, 3]).unwrap();
    l.push(&4).unwrap();
    assert_eq!(l.get(-1).unwrap(), 4);
    assert_eq!(l.get(9).unwrap_err().kind(), ErrorKind::OutOfRange);
    l.set(0, &10).unwrap();
    l.insert(1, &11).unwrap();
    l.insert(-100, &0).unwrap();
    assert_eq!(l.to_vec().unwrap(), [0, 10, 11, 2, 3, 4]);
    assert_eq!(l.range(1, -1).unwrap(), [10, 11, 2, 3]);
    assert_eq!(l.pop().unwrap(), 4);
    assert_eq!(l.pop_at(0).unwrap(), 0);
    assert!(l.remove(&11).unwrap());
    assert!(!l.remove(&11).unwrap());
    assert_eq!(l.len().unwrap(), 3);
    l.clear().unwrap();
    assert_eq!(l.pop().unwrap_err().kind(), ErrorKind::OutOfRange);

    let v = m.value(&(1u8, "x".to_owned())).unwrap();
    assert_eq!(v.get().unwrap(), (1, "x".to_owned()));
    v.set(&(2, "y".to_owned())).unwrap();
    assert_eq!(v.get().unwrap().0, 2);

    let ns = m.namespace().unwrap();
    ns.set("x", &1.5f64).unwrap();
    ns.set("name", "ipckit").unwrap();
    assert_eq!(ns.get::<f64>("x").unwrap(), Some(1.5));
    assert_eq!(ns.get::<String>("name").unwrap().as_deref(), Some("ipckit"));
    assert_eq!(ns.get::<u8>("missing").unwrap(), None);
    assert_eq!(ns.names().unwrap(), ["name", "x"]);
    assert!(ns.remove("x").unwrap());
    assert!(!ns.remove("x").unwrap());
    m.shutdown().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Writer {
    me: u32,
    n: u32,
    list: ListProxy<(u32, u32)>,
    dict: DictProxy<String, u32>,
    lock: LockProxy,
}

fn write_many(w: Writer) {
    let total = "total".to_owned();
    for i in 0..w.n {
        w.list.push(&(w.me, i)).unwrap();
        w.dict.insert(&format!("{}-{}", w.me, i), &i).unwrap();
        // A read-modify-write made atomic by the manager's lock.
        let _g = w.lock.acquire().unwrap();
        let t = w.dict.get(&total).unwrap().unwrap_or(0);
        w.dict.insert(&total, &(t + 1)).unwrap();
    }
}

#[test]
fn eight_processes_update_one_dict_and_one_list() {
    let _t = Ctx::new("mgr_eight");
    let m = Manager::start().unwrap();
    let list = m.list::<(u32, u32)>().unwrap();
    let dict = m.dict::<String, u32>().unwrap();
    let lock = m.lock().unwrap();
    let n = 150;
    let children: Vec<_> = (0..8)
        .map(|me| {
            spawn(
                write_many,
                Writer {
                    me,
                    n,
                    list: list.clone(),
                    dict: dict.clone(),
                    lock: lock.clone(),
                },
            )
        })
        .collect();
    for c in children {
        c.join().unwrap();
    }
    let items = list.to_vec().unwrap();
    assert_eq!(items.len(), 8 * n as usize);
    let distinct: HashSet<_> = items.iter().copied().collect();
    assert_eq!(distinct.len(), items.len(), "no duplicates");
    for me in 0..8 {
        let mine: Vec<u32> = items.iter().filter(|x| x.0 == me).map(|x| x.1).collect();
        assert_eq!(
            mine,
            (0..n).collect::<Vec<_>>(),
            "each writer's items in order"
        );
    }
    assert_eq!(dict.len().unwrap(), 8 * n as usize + 1);
    assert_eq!(dict.get(&"total".to_owned()).unwrap(), Some(8 * n));
}

fn record(args: (u64, ListProxy<u64>, DictProxy<u64, u64>)) -> u64 {
    let (x, list, dict) = args;
    list.push(&x).unwrap();
    dict.insert(&x, &(x * x)).unwrap();
    x * x
}

#[test]
fn proxies_work_in_pool_tasks() {
    let _t = Ctx::new("mgr_pool");
    let m = Manager::start().unwrap();
    let list = m.list::<u64>().unwrap();
    let dict = m.dict::<u64, u64>().unwrap();
    let pool = ProcessPool::new(3).unwrap();
    let squares: Vec<u64> = pool
        .map(record, (0..60).map(|x| (x, list.clone(), dict.clone())))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(squares, (0..60).map(|x| x * x).collect::<Vec<_>>());
    let mut seen = list.to_vec().unwrap();
    seen.sort();
    assert_eq!(seen, (0..60).collect::<Vec<_>>());
    assert_eq!(dict.get(&7).unwrap(), Some(49));
    assert_eq!(dict.len().unwrap(), 60);
}

fn hold_lock_and_die(args: (LockProxy, EventProxy)) {
    let (lock, held) = args;
    let g = lock.acquire().unwrap();
    g.forget();
    held.set().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn hold_permit_and_die(args: (SemaphoreProxy, RLockProxy, EventProxy)) {
    let (sem, rlock, held) = args;
    sem.acquire().unwrap().forget();
    rlock.acquire().unwrap().forget();
    rlock.acquire().unwrap().forget();
    held.set().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn what_a_dead_client_held_is_released() {
    let _t = Ctx::new("mgr_dead_client");
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let held = m.event().unwrap();
    let child = spawn(hold_lock_and_die, (lock.clone(), held.clone()));
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        lock.try_acquire().unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    let start = Instant::now();
    child.kill().unwrap();
    let _ = child.join();
    let g = lock.acquire_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    drop(g);

    let sem = m.semaphore(1).unwrap();
    let rlock = m.rlock().unwrap();
    held.clear().unwrap();
    let child = spawn(
        hold_permit_and_die,
        (sem.clone(), rlock.clone(), held.clone()),
    );
    held.wait_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(sem.value().unwrap(), 0);
    assert!(rlock.try_acquire().is_err());
    child.kill().unwrap();
    let _ = child.join();
    let _p = sem.acquire_timeout(Duration::from_secs(5)).unwrap();
    let _r = rlock.acquire_timeout(Duration::from_secs(5)).unwrap();
}

fn consume(q: QueueProxy<String>) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let s = q.get().unwrap();
        if s == "stop" {
            return got;
        }
        got.push(s);
    }
}

fn wait_then_set(args: (EventProxy, EventProxy)) {
    let (go, done) = args;
    go.wait().unwrap();
    done.set().unwrap();
}

fn barrier_party(b: BarrierProxy) -> usize {
    b.wait_timeout(Duration::from_secs(30)).unwrap()
}

fn condition_waiter(args: (ConditionProxy, ListProxy<u32>)) -> bool {
    let (c, l) = args;
    let g = c.acquire().unwrap();
    g.wait_for(|| Ok(l.len()? > 0), Some(Duration::from_secs(30)))
        .unwrap()
}

#[test]
fn queue_event_barrier_condition_across_processes() {
    let _t = Ctx::new("mgr_sync");
    let m = Manager::start().unwrap();

    let q = m.queue::<String>(2).unwrap();
    let consumer = spawn(consume, q.clone());
    for i in 0..50 {
        q.put(&format!("m{i}")).unwrap();
    }
    q.put(&"stop".to_owned()).unwrap();
    let got = consumer.join().unwrap();
    assert_eq!(got, (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::WouldBlock);
    let start = Instant::now();
    assert!(
        q.get_timeout(Duration::from_millis(100))
            .unwrap_err()
            .is_timeout()
    );
    assert!(start.elapsed() >= Duration::from_millis(100));
    q.put(&"a".into()).unwrap();
    q.put(&"b".into()).unwrap();
    assert!(q.is_full().unwrap());
    assert_eq!(
        q.try_put(&"c".into()).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    assert!(
        q.put_timeout(&"c".into(), Duration::from_millis(50))
            .unwrap_err()
            .is_timeout()
    );

    let (go, done) = (m.event().unwrap(), m.event().unwrap());
    let child = spawn(wait_then_set, (go.clone(), done.clone()));
    assert!(
        done.wait_timeout(Duration::from_millis(50))
            .unwrap_err()
            .is_timeout()
    );
    go.set().unwrap();
    done.wait_timeout(Duration::from_secs(30)).unwrap();
    child.join().unwrap();
    assert!(go.is_set().unwrap());

    let b = m.barrier(3).unwrap();
    let parties: Vec<_> = (0..2).map(|_| spawn(barrier_party, b.clone())).collect();
    let mine = b.wait_timeout(Duration::from_secs(30)).unwrap();
    let mut idx: Vec<usize> = parties.into_iter().map(|p| p.join().unwrap()).collect();
    idx.push(mine);
    idx.sort();
    assert_eq!(idx, [0, 1, 2]);
    // A timeout breaks it for everyone until reset.
    assert_eq!(
        b.wait_timeout(Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        ErrorKind::BrokenBarrier
    );
    assert!(b.is_broken().unwrap());
    assert_eq!(b.wait().unwrap_err().kind(), ErrorKind::BrokenBarrier);
    b.reset().unwrap();
    assert!(!b.is_broken().unwrap());
    assert_eq!(b.parties().unwrap(), 3);

    let c = m.condition().unwrap();
    let l = m.list::<u32>().unwrap();
    let waiter = spawn(condition_waiter, (c.clone(), l.clone()));
    std::thread::sleep(Duration::from_millis(100));
    {
        let g = c.acquire().unwrap();
        l.push(&1).unwrap();
        g.notify_all().unwrap();
    }
    assert!(waiter.join().unwrap());
    let g = c.acquire().unwrap();
    assert!(!g.wait_timeout(Duration::from_millis(50)).unwrap());
    g.unlock().unwrap();

    let r = m.rlock().unwrap();
    let a = r.acquire().unwrap();
    let b2 = r.acquire().unwrap();
    drop(b2);
    drop(a);
    let lock = m.lock().unwrap();
    let g = lock.acquire().unwrap();
    assert_eq!(
        lock.try_acquire().unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    g.unlock().unwrap();
    assert_eq!(
        lock.release().unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

fn blocked_get(q: QueueProxy<u8>) -> bool {
    q.get().unwrap_err().is_closed()
}

#[test]
fn killing_the_server_fails_calls_fast() {
    let _t = Ctx::new("mgr_kill_server");
    let m = Manager::start().unwrap();
    let d = m.dict::<u8, u8>().unwrap();
    let q = m.queue::<u8>(0).unwrap();
    d.insert(&1, &1).unwrap();
    let blocked_here = {
        let q = q.clone();
        std::thread::spawn(move || q.get().unwrap_err().kind())
    };
    let blocked_child = spawn(blocked_get, q.clone());
    std::thread::sleep(Duration::from_millis(200));
    let pid = m.server_pid().unwrap();
    // SAFETY: kill(2) on the manager's process id.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let start = Instant::now();
    assert_eq!(blocked_here.join().unwrap(), ErrorKind::Closed);
    assert!(blocked_child.join().unwrap());
    let e = d.get(&1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Closed, "{e}");
    assert!(e.to_string().contains("manager"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Dropping the manager of a dead server does not hang either.
    let start = Instant::now();
    drop(m);
    assert!(start.elapsed() < Duration::from_secs(6));
}

#[derive(Serialize)]
struct Hello {
    protocol: u32,
    client: u128,
}

#[test]
fn wrong_keys_garbage_and_oversized_requests_are_rejected() {
    let t = Ctx::new("mgr_bad_clients");
    let path = sock(&t, "m");
    let m = Manager::builder()
        .address(path.as_path())
        .authkey(b"right key")
        .max_message_size(1 << 20)
        .start()
        .unwrap();
    let d = m.named("shared").dict::<String, String>().unwrap();
    d.insert(&"k".into(), &"v".into()).unwrap();

    let e = Manager::connect(path.as_path(), Some(b"wrong key")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");
    let e = Manager::connect(path.as_path(), None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AuthenticationFailed, "{e}");

    // A raw client: garbage instead of a hello is dropped.
    let c = Client::connect(path.as_path(), Some(b"right key")).unwrap();
    c.send_bytes(b"\xff\xff\xff garbage").unwrap();
    assert!(c.recv_bytes().unwrap_err().is_closed());
    // After a good hello, garbage requests get error replies and the
    // connection keeps working; an oversized frame closes it.
    let c = Client::connect(path.as_path(), Some(b"right key")).unwrap();
    c.send(&Hello {
        protocol: 1,
        client: 42,
    })
    .unwrap();
    assert!(!c.recv_bytes().unwrap().is_empty());
    for garbage in [&b""[..], b"\x00", b"\xff\xff\xff\xff\xff\xff", &[7u8; 300]] {
        c.send_bytes(garbage).unwrap();
        let reply = c.recv_bytes().unwrap();
        assert!(!reply.is_empty());
    }
    c.send_bytes(&vec![0u8; 2 << 20]).unwrap_or(());
    assert!(c.recv_bytes().is_err());
    // A protocol from the future is refused.
    let c = Client::connect(path.as_path(), Some(b"right key")).unwrap();
    c.send(&Hello {
        protocol: 99,
        client: 43,
    })
    .unwrap();
    let _ = c.recv_bytes();

    // The server is unharmed: a new client sees the data.
    let other = Manager::connect(path.as_path(), Some(b"right key")).unwrap();
    let d2 = other.named("shared").dict::<String, String>().unwrap();
    assert_eq!(d2.get(&"k".into()).unwrap().as_deref(), Some("v"));
    // Named with other types: WrongType; another kind: WrongKind.
    assert_eq!(
        other
            .named("shared")
            .dict::<String, u32>()
            .unwrap_err()
            .kind(),
        ErrorKind::WrongType
    );
    assert_eq!(
        other.named("shared").list::<String>().unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    // A request over the limit is refused before it is sent.
    let e = d.insert(&"big".into(), &"x".repeat(2 << 20)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(d.len().unwrap(), 1);
    drop(other);
    m.shutdown().unwrap();
    assert!(!path.exists(), "the socket file is removed");
}

fn remote_client(args: (String, String)) -> u32 {
    let (address, key) = args;
    let m = Manager::connect(Address::parse(&address).unwrap(), Some(key.as_bytes())).unwrap();
    let hits = m.named("hits").dict::<String, u32>().unwrap();
    let lock = m.named("hits-lock").lock().unwrap();
    for _ in 0..20 {
        let _g = lock.acquire().unwrap();
        let n = hits.get(&"n".into()).unwrap().unwrap_or(0);
        hits.insert(&"n".into(), &(n + 1)).unwrap();
    }
    hits.get(&"n".into()).unwrap().unwrap()
}

#[test]
fn tcp_manager_with_named_objects_and_remote_clients() {
    let _t = Ctx::new("mgr_tcp");
    let m = Manager::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .authkey(b"tcp key")
        .start()
        .unwrap();
    let address = m.address().to_string();
    let clients: Vec<_> = (0..3)
        .map(|_| spawn(remote_client, (address.clone(), "tcp key".to_owned())))
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let hits = m.named("hits").dict::<String, u32>().unwrap();
    assert_eq!(hits.get(&"n".into()).unwrap(), Some(60));
    assert!(m.unname("hits").unwrap());
    assert!(!m.unname("hits").unwrap());
    // TCP without a key is refused.
    let e = Manager::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .start()
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[test]
fn serve_in_this_process_until_shutdown() {
    let t = Ctx::new("mgr_serve");
    let path = sock(&t, "serve");
    let p2 = path.clone();
    let server = std::thread::spawn(move || {
        Manager::builder()
            .address(p2.as_path())
            .authkey(b"k")
            .serve()
    });
    let start = Instant::now();
    let m = loop {
        match Manager::connect(path.as_path(), Some(b"k")) {
            Ok(m) => break m,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("{e}"),
        }
    };
    let ns = m.namespace().unwrap();
    ns.set("x", &1u8).unwrap();
    assert_eq!(ns.get::<u8>("x").unwrap(), Some(1));
    m.shutdown().unwrap();
    server.join().unwrap().unwrap();
    assert!(ns.get::<u8>("x").unwrap_err().is_closed());
}

fn block_on_lock(args: (LockProxy, EventProxy)) {
    let (lock, started) = args;
    started.set().unwrap();
    let _g = lock.acquire().unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

fn block_on_barrier(args: (BarrierProxy, EventProxy)) {
    let (b, started) = args;
    started.set().unwrap();
    let _ = b.wait();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_client_killed_mid_request_disturbs_nobody() {
    let _t = Ctx::new("mgr_mid_request");
    let m = Manager::start().unwrap();
    let lock = m.lock().unwrap();
    let started = m.event().unwrap();
    let g = lock.acquire().unwrap();
    let child = spawn(block_on_lock, (lock.clone(), started.clone()));
    started.wait_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(100)); // blocked in acquire now
    child.kill().unwrap();
    let _ = child.join();
    g.unlock().unwrap();
    // The dead client's pending acquire never keeps the lock.
    let g = lock.acquire_timeout(Duration::from_secs(2)).unwrap();
    g.unlock().unwrap();

    // A party dying at a barrier breaks it instead of leaving others waiting.
    let b = m.barrier(2).unwrap();
    started.clear().unwrap();
    let child = spawn(block_on_barrier, (b.clone(), started.clone()));
    started.wait_timeout(Duration::from_secs(30)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    child.kill().unwrap();
    let _ = child.join();
    let start = Instant::now();
    while !b.is_broken().unwrap() {
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "barrier not broken"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.wait().unwrap_err().kind(), ErrorKind::BrokenBarrier);
    b.reset().unwrap();
    assert_eq!(b.n_waiting().unwrap(), 0);
}

#[test]
fn a_server_that_cannot_start_reports_the_kind_of_its_failure() {
    let t = Ctx::new("mgr_start_failure");
    // The server process fails to bind: its error comes back with its kind.
    let missing_dir = std::env::temp_dir()
        .join(t.name("no-such-dir"))
        .join("manager.sock");
    let e = Manager::builder()
        .address(missing_dir)
        .start()
        .expect_err("binding in a missing directory fails");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string()
            .starts_with("the manager could not start: cannot listen on"),
        "{e}"
    );
}

#[test]
fn peers_that_never_authenticate_are_capped_and_do_not_hold_the_server() {
    use std::io::Read;
    let _t = Ctx::new("mgr_preauth");
    let m = Manager::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .authkey(b"cap key")
        .max_pending_handshakes(8)
        .start()
        .unwrap();
    let Address::Tcp(addr) = m.address().clone() else {
        unreachable!("a TCP address was asked for")
    };
    // 20 peers connect and say nothing.
    let mut silent: Vec<std::net::TcpStream> = (0..20)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    // Those over the cap (8 in the handshake at once) are closed on
    // arrival: they read EOF, where the others read the server's hello.
    let mut closed = 0;
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        if s.read(&mut b).unwrap() == 0 {
            closed += 1;
        }
    }
    assert!(closed >= 20 - 8, "{closed} of 20 closed");
    // Once they leave, a real client is served.
    drop(silent);
    let t = Instant::now();
    let c = loop {
        match Manager::connect(m.address().clone(), Some(b"cap key")) {
            Ok(c) => break c,
            Err(_) if t.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let d = c.dict::<String, u32>().unwrap();
    d.insert(&"k".to_owned(), &1).unwrap();
    assert_eq!(d.get(&"k".into()).unwrap(), Some(1));
    drop(c);
    m.shutdown().unwrap();
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn hostile_peers_announcing_huge_handshake_frames_cost_the_server_little_memory() {
    use std::io::Write;
    let _t = Ctx::new("mgr_preauth_rss");
    let m = Manager::builder()
        .address(Address::parse("127.0.0.1:0").unwrap())
        .authkey(b"rss key")
        .start()
        .unwrap();
    let Address::Tcp(addr) = m.address().clone() else {
        unreachable!("a TCP address was asked for")
    };
    let pid = m.server_pid().expect("this manager owns its server");
    let before = vm_rss_kib(pid);
    // Eight peers with no key announce a 60 MiB frame (within the message
    // limit), send its first 64 KiB, and stay.
    let peers: Vec<std::net::TcpStream> = (0..8)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(&(60u32 << 20).to_le_bytes()).unwrap();
            s.write_all(&vec![0x5a; 64 << 10]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let after = vm_rss_kib(pid);
    let grew = after.saturating_sub(before);
    println!("manager server RSS {before} KiB -> {after} KiB with 8 hostile peers");
    assert!(grew < 32 << 10, "the server grew by {grew} KiB");
    drop(peers);
    let c = Manager::connect(m.address().clone(), Some(b"rss key")).unwrap();
    let d = c.dict::<String, u32>().unwrap();
    d.insert(&"k".to_owned(), &2).unwrap();
    drop(c);
    m.shutdown().unwrap();
}

#[test]
fn debug_output_never_shows_a_key() {
    let key = b"hunter2-secret";
    let shown = format!("{:?}", Manager::builder().authkey(key));
    let as_numbers = format!("{:?}", &key[..3])
        .trim_matches(['[', ']'])
        .to_owned();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains(&as_numbers), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
}

/// Holds the manager lock, then makes a call that fails (its reply is over
/// the size limit), says so (through shared memory: another call would open
/// a connection and hide the loss of the first), and stays.
fn hold_lock_through_a_failed_call(args: (LockProxy, ListProxy<String>, ipckit::sync::Event)) {
    let (lock, list, failed) = args;
    lock.acquire().unwrap().forget();
    let e = list.to_vec().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    failed.set();
    std::thread::sleep(Duration::from_secs(60));
}

#[test]
fn a_lock_stays_held_across_a_failed_call_and_goes_with_its_holders_death() {
    let _t = Ctx::new("mgr_failed_call");
    let m = Manager::builder()
        .max_message_size(1 << 20)
        .start()
        .unwrap();
    let lock = m.lock().unwrap();
    let list = m.list::<String>().unwrap();
    // Two items of 600 kB: each fits, the list as one reply does not.
    list.push(&"x".repeat(600_000)).unwrap();
    list.push(&"y".repeat(600_000)).unwrap();
    let failed = ipckit::sync::Event::new().unwrap();
    let mut child = spawn(
        hold_lock_through_a_failed_call,
        (lock.clone(), list.clone(), failed.clone()),
    );
    failed.wait_timeout(Duration::from_secs(30)).unwrap();
    // The failed call closed its connection; the holder lives, so the lock
    // stays held (it used to be released, and taken here mid-section).
    std::thread::sleep(Duration::from_millis(200));
    let e = lock.try_acquire().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
    // Its death releases it.
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(child.pid() as i32, libc::SIGKILL) };
    let t = Instant::now();
    let g = lock.acquire_timeout(Duration::from_secs(5)).unwrap();
    println!("released {:?} after the holder's SIGKILL", t.elapsed());
    drop(g);
    let _ = child.join_timeout(Duration::from_secs(10));
    m.shutdown().unwrap();
}

/// Waits on the condition (holding its lock first) until killed.
fn doomed_condition_waiter((cond, waiting): (ConditionProxy, EventProxy)) {
    let g = cond.acquire().unwrap();
    waiting.set().unwrap();
    let _ = g.wait_timeout(Duration::from_secs(60));
}

#[test]
fn notify_one_skips_a_waiter_that_just_died() {
    let _t = Ctx::new("mgr_notify_dead");
    let m = Manager::start().unwrap();
    let cond = m.condition().unwrap();
    for _ in 0..5 {
        // The first waiter: a child, killed and reaped just before the
        // notify.
        let first = m.event().unwrap();
        let mut doomed = spawn(doomed_condition_waiter, (cond.clone(), first.clone()));
        first.wait_timeout(Duration::from_secs(30)).unwrap();
        // Its wait has reached the server once the lock is free again.
        drop(cond.acquire_timeout(Duration::from_secs(30)).unwrap());
        // The second: a thread here.
        let (tx, rx) = std::sync::mpsc::channel();
        let c = cond.clone();
        let live = std::thread::spawn(move || {
            let g = c.acquire().unwrap();
            tx.send(()).unwrap();
            g.wait_timeout(Duration::from_secs(10)).unwrap()
        });
        rx.recv().unwrap();
        drop(cond.acquire_timeout(Duration::from_secs(30)).unwrap());
        // SAFETY: kill(2) on a child we own.
        unsafe { libc::kill(doomed.pid() as i32, libc::SIGKILL) };
        // kill(2) only queues the signal: until the child has exited its
        // connection is open and it is, to the server, a living waiter (CI
        // once saw the notify go to it, 1 ms after the kill on a busy
        // machine). Reaping it means its descriptors are closed; the
        // server's waiting thread may or may not have noticed yet.
        let _ = doomed.join_timeout(Duration::from_secs(10));
        let g = cond.acquire().unwrap();
        // The dead waiter is first in line; the notification must reach the
        // living one (it used to go to the dead, and the living wait ran
        // out).
        assert_eq!(g.notify(1).unwrap(), 1);
        drop(g);
        assert!(live.join().unwrap(), "the living waiter was not notified");
    }
    m.shutdown().unwrap();
}
