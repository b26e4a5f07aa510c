//! The manager server: objects held as encoded bytes, one thread per client
//! connection (as in Python's `BaseManager`).
//!
//! Robustness rules:
//! - every request is decoded as untrusted bytes; a frame that does not
//!   decode gets an error reply, a broken frame closes that connection only;
//! - frames are limited in size (the listener's message limit);
//! - a blocking operation waits in slices and gives up if its client's
//!   connection becomes readable (a client sends one request at a time, so
//!   that means it hung up or misbehaves) or the server shuts down;
//! - when a client process's last connection closes, the locks, permits
//!   and barrier places it held are released, so a dead client cannot
//!   wedge the others.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::protocol::{Bytes, Hello, Kind, Op, PROTOCOL_VERSION, Reply, Request, WaitLimit};
use crate::codec;
use crate::connection::{self, Listener};
use crate::deadline::deadline_after;
use crate::error::{Error, ErrorKind, Result};

use crate::pipe::Connection;
use crate::platform;

/// How often a blocked operation checks its client and the shutdown flag.
const SLICE: Duration = Duration::from_millis(50);

/// One client's identity for ownership: its process and its thread.
type Owner = (u128, u64);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking server thread must not take the others down with it: the
    // state it guarded is left as consistent as each operation's order makes it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) struct Server {
    registry: Mutex<Registry>,
    clients: Mutex<HashMap<u128, usize>>,
    shutdown: AtomicBool,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    by_id: HashMap<u64, Arc<Object>>,
    by_name: HashMap<String, u64>,
}

struct Object {
    kind: Kind,
    tag: String,
    state: Mutex<State>,
    cv: Condvar,
}

/// A dict that keeps insertion order, as Python's does.
#[derive(Default)]
struct OrderedMap {
    index: HashMap<Bytes, u64>,
    entries: BTreeMap<u64, (Bytes, Bytes)>,
    next: u64,
}

impl OrderedMap {
    fn get(&self, k: &[u8]) -> Option<&Bytes> {
        self.index.get(k).map(|seq| &self.entries[seq].1)
    }

    fn insert(&mut self, k: Bytes, v: Bytes) -> Option<Bytes> {
        match self.index.get(&k) {
            Some(seq) => {
                let slot = self.entries.get_mut(seq).expect("indexed");
                Some(std::mem::replace(&mut slot.1, v))
            }
            None => {
                let seq = self.next;
                self.next += 1;
                self.index.insert(k.clone(), seq);
                self.entries.insert(seq, (k, v));
                None
            }
        }
    }

    fn remove(&mut self, k: &[u8]) -> Option<Bytes> {
        let seq = self.index.remove(k)?;
        self.entries.remove(&seq).map(|(_, v)| v)
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn clear(&mut self) {
        self.index.clear();
        self.entries.clear();
    }
}

#[derive(Default)]
struct LockState {
    owner: Option<Owner>,
    count: u64,
}

impl LockState {
    fn try_take(&mut self, who: Owner, reentrant: bool) -> Option<Result<()>> {
        match self.owner {
            None => {
                self.owner = Some(who);
                self.count = 1;
                Some(Ok(()))
            }
            Some(o) if o == who && reentrant => {
                self.count += 1;
                Some(Ok(()))
            }
            Some(o) if o == who => Some(Err(Error::new(
                ErrorKind::WouldBlock,
                "this thread already holds the lock (use an rlock to re-acquire)",
            ))),
            Some(_) => None,
        }
    }

    /// Releases once; true if the lock became free.
    fn release(&mut self, who: Owner, reentrant: bool) -> Result<bool> {
        match self.owner {
            None => Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot release a lock that is not held",
            )),
            // A plain lock may be released by anyone, as Python's Lock.
            Some(o) if o != who && reentrant => Err(Error::new(
                ErrorKind::InvalidArgument,
                "cannot release an rlock held by another thread",
            )),
            Some(_) => {
                self.count -= 1;
                if self.count == 0 || !reentrant {
                    self.owner = None;
                    self.count = 0;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
        }
    }
}

enum State {
    Dict(OrderedMap),
    List(Vec<Bytes>),
    Value(Bytes),
    Queue {
        items: VecDeque<Bytes>,
        max: u64,
    },
    Lock(LockState),
    Semaphore {
        value: u64,
        held: HashMap<u128, u64>,
    },
    Event(bool),
    Condition {
        lock: LockState,
        next_ticket: u64,
        /// Tickets of waiters, oldest first, each with its client's
        /// connection: a notify skips waiters whose client hung up (the
        /// descriptor stays open while its ticket is queued, since the
        /// waiting thread removes the ticket before it returns).
        waiting: VecDeque<(u64, RawFd)>,
        woken: HashSet<u64>,
    },
    Barrier {
        parties: u64,
        count: u64,
        generation: u64,
        reset_generation: Option<u64>,
        broken: bool,
    },
    Namespace(BTreeMap<String, Bytes>),
}

fn err(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, message)
}

/// Python-style index (negative counts from the end) into `0..len`.
fn index(i: i64, len: usize) -> Result<usize> {
    let j = if i < 0 { len as i64 + i } else { i };
    if j < 0 || j >= len as i64 {
        return Err(err(
            ErrorKind::OutOfRange,
            format!("list index {i} out of range for length {len}"),
        ));
    }
    Ok(j as usize)
}

/// Python-style slice bound, clamped to `0..=len`.
fn bound(i: i64, len: usize) -> usize {
    let j = if i < 0 { len as i64 + i } else { i };
    j.clamp(0, len as i64) as usize
}

/// What a blocked operation needs to know about its surroundings.
struct Waiter<'a> {
    deadline: Option<Instant>,
    wait: WaitLimit,
    conn: &'a Connection,
    server: &'a Server,
}

impl Waiter<'_> {
    fn new<'a>(wait: WaitLimit, conn: &'a Connection, server: &'a Server) -> Waiter<'a> {
        let deadline = match wait {
            // A peer's wait too long to make a deadline of waits forever
            // (rather than overflowing the addition).
            WaitLimit::For(us) => deadline_after(Duration::from_micros(us)),
            _ => None,
        };
        Waiter {
            deadline,
            wait,
            conn,
            server,
        }
    }

    /// Sleeps one slice on `cv`, or says why the operation must stop.
    fn sleep<'g>(
        &self,
        obj: &'g Object,
        st: MutexGuard<'g, State>,
        what: &str,
    ) -> std::result::Result<MutexGuard<'g, State>, (MutexGuard<'g, State>, Error)> {
        let slice = match (self.wait, self.deadline) {
            (WaitLimit::No, _) => {
                return Err((
                    st,
                    err(ErrorKind::WouldBlock, format!("{what} would block")),
                ));
            }
            (_, Some(d)) => {
                let now = Instant::now();
                if now >= d {
                    return Err((st, err(ErrorKind::Timeout, format!("{what} timed out"))));
                }
                (d - now).min(SLICE)
            }
            _ => SLICE,
        };
        if self.server.shutdown.load(Ordering::Relaxed) {
            return Err((st, err(ErrorKind::Closed, "the manager is shutting down")));
        }
        // A client has one request in flight: anything readable now is its
        // hang-up (or garbage), so nobody is left to take the result.
        if self.conn.poll(Some(Duration::ZERO)).unwrap_or(true) {
            return Err((st, err(ErrorKind::Closed, "the client went away")));
        }
        let (st, _) = obj
            .cv
            .wait_timeout(st, slice)
            .unwrap_or_else(|e| e.into_inner());
        Ok(st)
    }

    /// Waits until `ready` produces a result.
    fn until<T>(
        &self,
        obj: &Object,
        what: &str,
        mut ready: impl FnMut(&mut State) -> Option<Result<T>>,
    ) -> Result<T> {
        let mut st = lock(&obj.state);
        loop {
            if let Some(r) = ready(&mut st) {
                return r;
            }
            st = self.sleep(obj, st, what).map_err(|(_, e)| e)?;
        }
    }
}

impl Server {
    pub(crate) fn new() -> Arc<Server> {
        Arc::new(Server {
            registry: Mutex::new(Registry::default()),
            clients: Mutex::new(HashMap::new()),
            shutdown: AtomicBool::new(false),
        })
    }

    /// Accepts clients until a `Shutdown` request; each is served on a
    /// thread of its own (authentication included).
    pub(crate) fn serve(self: &Arc<Server>, listener: &Listener) -> Result<()> {
        // At most `max_pending` peers in the handshake at once; more are closed
        // on arrival until some finish (each has the handshake timeout at most).
        let (key, handshake_timeout, max_pending) = listener.authenticator();
        // Peers not yet authenticated, each on a thread of its own: capped,
        // so that unauthenticated peers cannot take threads (or, with the
        // handshake's 256-byte frames, memory) without bound.
        let pending = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        while !self.shutdown.load(Ordering::Relaxed) {
            let conn = match listener.accept_unauthenticated(Duration::from_millis(100)) {
                Ok(Some(c)) => c,
                Ok(None) => continue,
                // Out of descriptors and the like: back off, keep serving.
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            // Ordering: a counter only (Relaxed).
            if pending.fetch_add(1, Ordering::Relaxed) >= max_pending {
                pending.fetch_sub(1, Ordering::Relaxed);
                drop(conn);
                continue;
            }
            let server = self.clone();
            let key = key.clone();
            let left = pending.clone();
            let spawned = std::thread::Builder::new()
                .name("ipckit-manager-client".into())
                .spawn(move || {
                    let ok = connection::authenticate(&conn, key.as_ref(), handshake_timeout);
                    left.fetch_sub(1, Ordering::Relaxed);
                    if ok.is_ok() {
                        server.client(conn);
                    }
                });
            if spawned.is_err() {
                pending.fetch_sub(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Ok(())
    }

    /// Serves one authenticated connection until it ends (the fuzz
    /// target's way in).
    #[cfg(feature = "fuzzing")]
    pub(crate) fn serve_one(self: &Arc<Server>, conn: Connection) {
        self.client(conn);
    }

    /// Serves one connection until it closes.
    fn client(self: &Arc<Server>, conn: Connection) {
        let mut buf = Vec::new();
        // The hello: protocol version and client identity.
        let hello = match conn.recv_bytes_into_timeout(&mut buf, Duration::from_secs(10)) {
            Ok(()) => codec::decode::<Hello>(&buf),
            Err(e) => Err(e),
        };
        let client = match hello {
            Ok(h) if h.protocol == PROTOCOL_VERSION => h.client,
            Ok(h) => {
                let _ = send(
                    &conn,
                    &Reply::error(&err(
                        ErrorKind::Incompatible,
                        format!(
                            "the manager speaks protocol {PROTOCOL_VERSION}, the client {}",
                            h.protocol
                        ),
                    )),
                );
                return;
            }
            Err(_) => return,
        };
        if send(&conn, &Reply::Unit).is_err() {
            return;
        }
        *lock(&self.clients).entry(client).or_default() += 1;
        loop {
            super::client::poll_briefly(&conn);
            if conn.recv_bytes_into(&mut buf).is_err() {
                // EOF, a broken frame, an oversized one: this connection is
                // over; others are unaffected.
                break;
            }
            let reply = match codec::decode::<Request>(&buf) {
                Ok(Request::Shutdown) => {
                    self.shutdown.store(true, Ordering::Relaxed);
                    self.wake_everyone();
                    let _ = send(&conn, &Reply::Unit);
                    break;
                }
                Ok(req) => match self.handle(req, client, &conn) {
                    Ok(r) => r,
                    Err(e) => Reply::error(&e),
                },
                Err(e) => Reply::error(&e.context("cannot decode the request")),
            };
            if send(&conn, &reply).is_err() || self.shutdown.load(Ordering::Relaxed) {
                break;
            }
        }
        drop(conn);
        let last = {
            let mut clients = lock(&self.clients);
            let n = clients.get_mut(&client).expect("registered");
            *n -= 1;
            if *n == 0 {
                clients.remove(&client);
                true
            } else {
                false
            }
        };
        if last {
            self.release_client(client);
        }
    }

    fn wake_everyone(&self) {
        let objects: Vec<Arc<Object>> = lock(&self.registry).by_id.values().cloned().collect();
        for o in objects {
            let _g = lock(&o.state);
            o.cv.notify_all();
        }
    }

    /// Gives back what a client process held: lock ownerships, semaphore
    /// permits. Its waiters have already left (their threads saw the
    /// hang-up); a barrier it was waiting on was broken by that.
    fn release_client(&self, client: u128) {
        let objects: Vec<Arc<Object>> = lock(&self.registry).by_id.values().cloned().collect();
        for o in objects {
            let mut st = lock(&o.state);
            let freed = match &mut *st {
                State::Lock(l) | State::Condition { lock: l, .. }
                    if l.owner.is_some_and(|(c, _)| c == client) =>
                {
                    *l = LockState::default();
                    true
                }
                State::Semaphore { value, held } => match held.remove(&client) {
                    Some(n) => {
                        *value += n;
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if freed {
                o.cv.notify_all();
            }
        }
    }

    fn object(&self, id: u64) -> Result<Arc<Object>> {
        lock(&self.registry).by_id.get(&id).cloned().ok_or_else(|| {
            err(
                ErrorKind::NotFound,
                format!("the manager has no object {id}"),
            )
        })
    }

    fn handle(&self, req: Request, client: u128, conn: &Connection) -> Result<Reply> {
        match req {
            Request::Ping => Ok(Reply::Unit),
            Request::Create {
                kind,
                name,
                tag,
                param,
                init,
            } => self.create(kind, name, tag, param, init),
            Request::Unname { name } => {
                let removed = lock(&self.registry).by_name.remove(&name).is_some();
                Ok(Reply::Bool(removed))
            }
            Request::Call { id, thread, op } => {
                let o = self.object(id)?;
                self.call(&o, (client, thread), op, conn)
            }
            Request::Shutdown => unreachable!("handled by the connection loop"),
        }
    }

    fn create(
        &self,
        kind: Kind,
        name: Option<String>,
        tag: String,
        param: u64,
        init: Option<Bytes>,
    ) -> Result<Reply> {
        let mut reg = lock(&self.registry);
        if let Some(name) = &name {
            if let Some(&id) = reg.by_name.get(name) {
                if let Some(o) = reg.by_id.get(&id) {
                    check(o, kind, &tag, &format!("{:?}", name))?;
                    return Ok(Reply::Object(id));
                }
            }
        }
        let state = match kind {
            Kind::Dict => State::Dict(OrderedMap::default()),
            Kind::List => State::List(Vec::new()),
            Kind::Value => State::Value(init.ok_or_else(|| {
                err(ErrorKind::InvalidArgument, "a value needs an initial value")
            })?),
            Kind::Queue => State::Queue {
                items: VecDeque::new(),
                max: param,
            },
            Kind::Lock | Kind::RLock => State::Lock(LockState::default()),
            Kind::Semaphore => State::Semaphore {
                value: param,
                held: HashMap::new(),
            },
            Kind::Event => State::Event(false),
            Kind::Condition => State::Condition {
                lock: LockState::default(),
                next_ticket: 0,
                waiting: VecDeque::new(),
                woken: HashSet::new(),
            },
            Kind::Barrier => {
                if param == 0 {
                    return Err(err(
                        ErrorKind::InvalidArgument,
                        "a barrier needs at least one party",
                    ));
                }
                State::Barrier {
                    parties: param,
                    count: 0,
                    generation: 0,
                    reset_generation: None,
                    broken: false,
                }
            }
            Kind::Namespace => State::Namespace(BTreeMap::new()),
        };
        reg.next_id += 1;
        let id = reg.next_id;
        reg.by_id.insert(
            id,
            Arc::new(Object {
                kind,
                tag,
                state: Mutex::new(state),
                cv: Condvar::new(),
            }),
        );
        if let Some(name) = name {
            reg.by_name.insert(name, id);
        }
        Ok(Reply::Object(id))
    }

    fn call(&self, o: &Object, who: Owner, op: Op, conn: &Connection) -> Result<Reply> {
        let reentrant = o.kind == Kind::RLock || o.kind == Kind::Condition;
        match op {
            Op::Acquire(wait) => {
                let w = Waiter::new(wait, conn, self);
                w.until(o, "acquire", |st| match st {
                    State::Lock(l) | State::Condition { lock: l, .. } => l.try_take(who, reentrant),
                    State::Semaphore { value, held } => {
                        if *value > 0 {
                            *value -= 1;
                            *held.entry(who.0).or_default() += 1;
                            Some(Ok(()))
                        } else {
                            None
                        }
                    }
                    _ => Some(Err(wrong_op(o, "acquire"))),
                })?;
                Ok(Reply::Unit)
            }
            Op::QueueGet(wait) => {
                let w = Waiter::new(wait, conn, self);
                let item = w.until(o, "get", |st| match st {
                    State::Queue { items, .. } => items.pop_front().map(Ok),
                    _ => Some(Err(wrong_op(o, "get"))),
                })?;
                o.cv.notify_all();
                Ok(Reply::Bytes(item))
            }
            Op::QueuePut(item, wait) => {
                let w = Waiter::new(wait, conn, self);
                let mut item = Some(item);
                w.until(o, "put", |st| match st {
                    State::Queue { items, max } => {
                        if *max == 0 || (items.len() as u64) < *max {
                            items.push_back(item.take().expect("put once"));
                            Some(Ok(()))
                        } else {
                            None
                        }
                    }
                    _ => Some(Err(wrong_op(o, "put"))),
                })?;
                o.cv.notify_all();
                Ok(Reply::Unit)
            }
            Op::EventWait(wait) => {
                let w = Waiter::new(wait, conn, self);
                let r = w.until(o, "wait", |st| match st {
                    State::Event(true) => Some(Ok(true)),
                    State::Event(false) => None,
                    _ => Some(Err(wrong_op(o, "wait"))),
                });
                match r {
                    Err(e) if e.is_timeout() => Ok(Reply::Bool(false)),
                    r => r.map(Reply::Bool),
                }
            }
            Op::ConditionWait(wait) => self.condition_wait(o, who, wait, conn),
            Op::BarrierWait(wait) => self.barrier_wait(o, wait, conn),
            op => {
                let mut st = lock(&o.state);
                let (reply, wake) = immediate(o, &mut st, who, op)?;
                if wake {
                    o.cv.notify_all();
                }
                Ok(reply)
            }
        }
    }

    /// Python's `Condition.wait`: releases the (reentrant) lock entirely,
    /// waits for a notification, re-acquires it with the same depth.
    fn condition_wait(
        &self,
        o: &Object,
        who: Owner,
        wait: WaitLimit,
        conn: &Connection,
    ) -> Result<Reply> {
        let mut st = lock(&o.state);
        let State::Condition {
            lock: l,
            next_ticket,
            waiting,
            ..
        } = &mut *st
        else {
            return Err(wrong_op(o, "wait"));
        };
        if l.owner != Some(who) {
            return Err(err(
                ErrorKind::InvalidArgument,
                "cannot wait on a condition without holding its lock",
            ));
        }
        let depth = l.count;
        *l = LockState::default();
        let ticket = *next_ticket;
        *next_ticket += 1;
        waiting.push_back((ticket, conn.as_raw_fd()));
        o.cv.notify_all();
        let w = Waiter::new(wait, conn, self);
        let notified = loop {
            let State::Condition { woken, .. } = &mut *st else {
                unreachable!("kind is fixed")
            };
            if woken.remove(&ticket) {
                break Ok(true);
            }
            match w.sleep(o, st, "wait") {
                Ok(g) => st = g,
                Err((mut g, e)) => {
                    if let State::Condition { waiting, woken, .. } = &mut *g {
                        waiting.retain(|&(t, _)| t != ticket);
                        // A notification that raced with the timeout counts.
                        if woken.remove(&ticket) {
                            st = g;
                            break Ok(true);
                        }
                    }
                    st = g;
                    break if e.is_timeout() { Ok(false) } else { Err(e) };
                }
            }
        };
        // Re-acquire (without a deadline, as Python does), unless the client
        // is gone or the server is stopping.
        let again = Waiter::new(WaitLimit::Forever, conn, self);
        loop {
            let State::Condition { lock: l, .. } = &mut *st else {
                unreachable!("kind is fixed")
            };
            if l.owner.is_none() {
                l.owner = Some(who);
                l.count = depth;
                break;
            }
            st = again.sleep(o, st, "re-acquire").map_err(|(_, e)| e)?;
        }
        drop(st);
        notified.map(Reply::Bool)
    }

    /// Python's `Barrier.wait`: the arrival index; a timeout, an abort or a
    /// waiter's client going away breaks the barrier for everyone.
    fn barrier_wait(&self, o: &Object, wait: WaitLimit, conn: &Connection) -> Result<Reply> {
        let mut st = lock(&o.state);
        let State::Barrier {
            parties,
            count,
            generation,
            broken,
            ..
        } = &mut *st
        else {
            return Err(wrong_op(o, "wait"));
        };
        if *broken {
            return Err(err(ErrorKind::BrokenBarrier, "the barrier is broken"));
        }
        let index = *count;
        *count += 1;
        if *count == *parties {
            *count = 0;
            *generation += 1;
            o.cv.notify_all();
            return Ok(Reply::U64(index));
        }
        let mine = *generation;
        let w = Waiter::new(
            match wait {
                WaitLimit::No => WaitLimit::For(0),
                w => w,
            },
            conn,
            self,
        );
        loop {
            let State::Barrier {
                count,
                generation,
                reset_generation,
                broken,
                ..
            } = &mut *st
            else {
                unreachable!("kind is fixed")
            };
            if *generation != mine {
                return if *reset_generation == Some(mine) {
                    Err(err(ErrorKind::BrokenBarrier, "the barrier was reset"))
                } else {
                    Ok(Reply::U64(index))
                };
            }
            if *broken {
                *count -= 1;
                return Err(err(ErrorKind::BrokenBarrier, "the barrier is broken"));
            }
            match w.sleep(o, st, "barrier wait") {
                Ok(g) => st = g,
                Err((mut g, e)) => {
                    if let State::Barrier {
                        count,
                        generation,
                        broken,
                        ..
                    } = &mut *g
                    {
                        if *generation != mine {
                            // Released just as the wait ended.
                            return Ok(Reply::U64(index));
                        }
                        *broken = true;
                        *count -= 1;
                    }
                    o.cv.notify_all();
                    return Err(err(
                        ErrorKind::BrokenBarrier,
                        format!("the barrier is broken: {e}"),
                    ));
                }
            }
        }
    }
}

fn send(conn: &Connection, reply: &Reply) -> Result<()> {
    conn.send_bytes(&codec::encode(reply)?)
}

fn check(o: &Object, kind: Kind, tag: &str, what: &str) -> Result<()> {
    if o.kind != kind {
        return Err(err(
            ErrorKind::WrongKind,
            format!(
                "manager object {what} is a {}, not a {}",
                o.kind.name(),
                kind.name()
            ),
        ));
    }
    if o.tag != tag {
        return Err(err(
            ErrorKind::WrongType,
            format!("manager object {what} holds {}, not {tag}", o.tag),
        ));
    }
    Ok(())
}

fn wrong_op(o: &Object, op: &str) -> Error {
    err(
        ErrorKind::WrongKind,
        format!("cannot {op} a manager {}", o.kind.name()),
    )
}

/// Operations that never wait. Returns the reply and whether waiters
/// should be woken.
fn immediate(o: &Object, st: &mut State, who: Owner, op: Op) -> Result<(Reply, bool)> {
    let reentrant = o.kind == Kind::RLock || o.kind == Kind::Condition;
    let unit = |wake| Ok((Reply::Unit, wake));
    match (st, op) {
        (State::Dict(d), Op::DictGet(k)) => Ok((Reply::MaybeBytes(d.get(&k).cloned()), false)),
        (State::Dict(d), Op::DictInsert(k, v)) => Ok((Reply::MaybeBytes(d.insert(k, v)), false)),
        (State::Dict(d), Op::DictRemove(k)) => Ok((Reply::MaybeBytes(d.remove(&k)), false)),
        (State::Dict(d), Op::DictContains(k)) => Ok((Reply::Bool(d.get(&k).is_some()), false)),
        (State::Dict(d), Op::DictGetOrInsert(k, v)) => {
            let v = match d.get(&k) {
                Some(existing) => existing.clone(),
                None => {
                    d.insert(k, v.clone());
                    v
                }
            };
            Ok((Reply::Bytes(v), false))
        }
        (State::Dict(d), Op::DictUpdate(pairs)) => {
            for (k, v) in pairs {
                d.insert(k, v);
            }
            unit(false)
        }
        (State::Dict(d), Op::DictKeys) => Ok((
            Reply::List(d.entries.values().map(|(k, _)| k.clone()).collect()),
            false,
        )),
        (State::Dict(d), Op::DictValues) => Ok((
            Reply::List(d.entries.values().map(|(_, v)| v.clone()).collect()),
            false,
        )),
        (State::Dict(d), Op::DictItems) => {
            Ok((Reply::Pairs(d.entries.values().cloned().collect()), false))
        }
        (State::Dict(d), Op::Len) => Ok((Reply::U64(d.len() as u64), false)),
        (State::Dict(d), Op::Clear) => {
            d.clear();
            unit(false)
        }

        (State::List(l), Op::ListPush(v)) => {
            l.push(v);
            unit(false)
        }
        (State::List(l), Op::ListExtend(vs)) => {
            l.extend(vs);
            unit(false)
        }
        (State::List(l), Op::ListGet(i)) => {
            let i = index(i, l.len())?;
            Ok((Reply::Bytes(l[i].clone()), false))
        }
        (State::List(l), Op::ListSet(i, v)) => {
            let i = index(i, l.len())?;
            l[i] = v;
            unit(false)
        }
        (State::List(l), Op::ListInsert(i, v)) => {
            // Python's insert clamps the position.
            let i = bound(i, l.len());
            l.insert(i, v);
            unit(false)
        }
        (State::List(l), Op::ListPop(i)) => {
            if l.is_empty() {
                return Err(err(ErrorKind::OutOfRange, "pop from an empty list"));
            }
            let i = index(i.unwrap_or(-1), l.len())?;
            Ok((Reply::Bytes(l.remove(i)), false))
        }
        (State::List(l), Op::ListRemove(v)) => match l.iter().position(|x| *x == v) {
            Some(i) => {
                l.remove(i);
                Ok((Reply::Bool(true), false))
            }
            None => Ok((Reply::Bool(false), false)),
        },
        (State::List(l), Op::ListRange(a, b)) => {
            let (a, b) = (bound(a, l.len()), bound(b, l.len()));
            let slice = if a < b { l[a..b].to_vec() } else { Vec::new() };
            Ok((Reply::List(slice), false))
        }
        (State::List(l), Op::ListToVec) => Ok((Reply::List(l.clone()), false)),
        (State::List(l), Op::Len) => Ok((Reply::U64(l.len() as u64), false)),
        (State::List(l), Op::Clear) => {
            l.clear();
            unit(false)
        }

        (State::Value(v), Op::ValueGet) => Ok((Reply::Bytes(v.clone()), false)),
        (State::Value(v), Op::ValueSet(n)) => {
            *v = n;
            unit(false)
        }

        (State::Queue { items, .. }, Op::Len) => Ok((Reply::U64(items.len() as u64), false)),
        (State::Queue { items, max }, Op::QueueFull) => {
            Ok((Reply::Bool(*max != 0 && items.len() as u64 >= *max), false))
        }
        (State::Queue { items, .. }, Op::Clear) => {
            items.clear();
            unit(true)
        }

        (State::Lock(l) | State::Condition { lock: l, .. }, Op::Release) => {
            let freed = l.release(who, reentrant)?;
            unit(freed)
        }
        (State::Semaphore { value, held }, Op::Release) => {
            *value += 1;
            if let Some(n) = held.get_mut(&who.0) {
                *n -= 1;
                if *n == 0 {
                    held.remove(&who.0);
                }
            }
            unit(true)
        }
        (State::Semaphore { value, .. }, Op::SemaphoreValue) => Ok((Reply::U64(*value), false)),

        (State::Event(e), Op::EventSet) => {
            *e = true;
            unit(true)
        }
        (State::Event(e), Op::EventClear) => {
            *e = false;
            unit(false)
        }
        (State::Event(e), Op::EventIsSet) => Ok((Reply::Bool(*e), false)),

        (
            State::Condition {
                lock: l,
                waiting,
                woken,
                ..
            },
            op @ (Op::ConditionNotify(_) | Op::ConditionNotifyAll),
        ) => {
            if l.owner != Some(who) {
                return Err(err(
                    ErrorKind::InvalidArgument,
                    "cannot notify on a condition without holding its lock",
                ));
            }
            let n = match op {
                Op::ConditionNotify(n) => n as usize,
                _ => usize::MAX,
            };
            let mut woke = 0;
            while woke < n {
                let Some((t, fd)) = waiting.pop_front() else {
                    break;
                };
                // A waiter has one request in flight: anything readable on
                // its connection is its client's hang-up. Such a waiter
                // would only find out at its next slice; it is not counted
                // (and leaves when it does find out).
                if platform::poll_readable(fd, Some(Duration::ZERO)).unwrap_or(true) {
                    continue;
                }
                woken.insert(t);
                woke += 1;
            }
            Ok((Reply::U64(woke as u64), woke > 0))
        }

        (
            State::Barrier {
                count,
                generation,
                reset_generation,
                broken,
                ..
            },
            Op::BarrierReset,
        ) => {
            if *count > 0 {
                *reset_generation = Some(*generation);
                *generation += 1;
            }
            *count = 0;
            *broken = false;
            unit(true)
        }
        (State::Barrier { broken, .. }, Op::BarrierAbort) => {
            *broken = true;
            unit(true)
        }
        (State::Barrier { parties, .. }, Op::BarrierParties) => Ok((Reply::U64(*parties), false)),
        (State::Barrier { count, .. }, Op::BarrierWaiting) => Ok((Reply::U64(*count), false)),
        (State::Barrier { broken, .. }, Op::BarrierBroken) => Ok((Reply::Bool(*broken), false)),

        (State::Namespace(ns), Op::NsGet(k)) => Ok((Reply::MaybeBytes(ns.get(&k).cloned()), false)),
        (State::Namespace(ns), Op::NsSet(k, v)) => {
            ns.insert(k, v);
            unit(false)
        }
        (State::Namespace(ns), Op::NsRemove(k)) => {
            Ok((Reply::Bool(ns.remove(&k).is_some()), false))
        }
        (State::Namespace(ns), Op::NsNames) => {
            Ok((Reply::Names(ns.keys().cloned().collect()), false))
        }
        (State::Namespace(ns), Op::Len) => Ok((Reply::U64(ns.len() as u64), false)),

        (_, op) => Err(err(
            ErrorKind::WrongKind,
            format!("a manager {} has no operation {op:?}", o.kind.name()),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_map_keeps_insertion_order() {
        let mut m = OrderedMap::default();
        for k in [3u8, 1, 2] {
            assert_eq!(m.insert(vec![k], vec![k * 10]), None);
        }
        assert_eq!(m.insert(vec![1], vec![99]), Some(vec![10]));
        assert_eq!(m.remove(&[3]), Some(vec![30]));
        m.insert(vec![3], vec![7]);
        let keys: Vec<u8> = m.entries.values().map(|(k, _)| k[0]).collect();
        assert_eq!(keys, [1, 2, 3]);
        assert_eq!(m.get(&[1]), Some(&vec![99]));
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn python_indices() {
        assert_eq!(index(-1, 3).unwrap(), 2);
        assert_eq!(index(0, 3).unwrap(), 0);
        assert!(index(3, 3).is_err());
        assert!(index(-4, 3).is_err());
        assert_eq!(bound(-10, 3), 0);
        assert_eq!(bound(10, 3), 3);
        assert_eq!(bound(-1, 3), 2);
    }

    #[test]
    fn lock_states() {
        let (a, b) = ((1, 1), (2, 1));
        let mut l = LockState::default();
        assert!(l.try_take(a, false).unwrap().is_ok());
        assert!(l.try_take(b, false).is_none());
        assert!(l.try_take(a, false).unwrap().is_err());
        // A plain lock may be released by another owner.
        assert!(l.release(b, false).unwrap());
        assert!(l.release(b, false).is_err());
        let mut r = LockState::default();
        assert!(r.try_take(a, true).unwrap().is_ok());
        assert!(r.try_take(a, true).unwrap().is_ok());
        assert!(r.release(b, true).is_err());
        assert!(!r.release(a, true).unwrap());
        assert!(r.release(a, true).unwrap());
    }
}
