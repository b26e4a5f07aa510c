//! # ipckit — Python's `multiprocessing` and `concurrent.futures` for Rust, on shared memory
//!
//! ipckit gives Rust programs the toolbox Python's `multiprocessing` and
//! `concurrent.futures` give Python programs: child processes running your
//! functions ([`process`]), process and thread pools with futures ([`pool`]),
//! managers serving shared dicts, lists, queues and locks ([`manager`]),
//! queues ([`queue`]), pipes and authenticated connections ([`pipe`],
//! [`connection`]), and the shared memory under them all: named and anonymous
//! segments ([`Segment`]), shared values and arrays ([`Value`], [`Array`]),
//! robust cross-process locks ([`sync`]) and server-less containers
//! ([`collections`]).
//!
//! Everything is typed (values cross processes serde-encoded, or as
//! [`ShmSafe`] data in place), checked (opening an object as the wrong kind
//! or type is an [`Error`], never undefined behaviour), and safe when a process
//! is killed at any instruction: a dead peer is reported, never waited for
//! forever.
//!
//! ```
//! use ipckit::{Value, sync::Event};
//! # fn main() -> ipckit::Result<()> {
//! let counter = Value::new(0u64)?;
//! let done = Event::new()?;
//! // Send `counter` and `done` to a child process (they are serde values);
//! // here we play both sides.
//! *counter.lock()? += 41;
//! counter.update(|c| *c += 1)?;
//! done.set();
//! done.wait();
//! assert_eq!(counter.get()?, 42);
//! # Ok(()) }
//! ```
//!
//! The [tour](#a-tour) below shows each part with an example; the
//! [mapping](#from-python-to-ipckit) finds the ipckit name of a Python call.
//!
//! ## From Python to ipckit
//!
//! | Python `multiprocessing` | ipckit | notes |
//! |---|---|---|
//! | `if __name__ == "__main__":` guard | [`ipckit::init()`](init) first in `main` | [`ipckit::test_support!()`](test_support) in integration tests |
//! | `Process(target=f, args=(a,)).start()` | [`Process::spawn(f, a)`](process::Process::spawn) | `f: fn(A) -> R`; [`Process::builder()`](process::Process::builder) for name, daemon, env, stdio |
//! | `p.join()`, result sent back by hand | [`p.join()`](process::Process::join) returns `R` | `join_timeout`, `join_deadline`, `try_join` |
//! | `p.is_alive()`, `p.exitcode`, `p.pid`, `p.name` | `is_alive()`, [`exit_status()`](process::Process::exit_status), `pid()`, `name()` | `exit_status()` is a [`std::process::ExitStatus`] (code or signal) once the child ended |
//! | `p.terminate()`, `p.kill()` | [`terminate()`](process::Process::terminate) (SIGTERM), [`kill()`](process::Process::kill) (SIGKILL) | |
//! | `p.daemon = True` | [`Process::builder().daemon(true)`](process::Builder::daemon) | killed when the parent dies, even by SIGKILL |
//! | `current_process()`, `parent_process()`, `active_children()`, `cpu_count()` | [`process::current_process`], [`process::parent_process`], [`process::active_children`], [`process::cpu_count`] | |
//! | `set_executable(path)` | [`Process::builder().executable(path)`](process::Builder::executable) | must be the parent's own executable |
//! | `Pool(n)`, `ProcessPoolExecutor(max_workers=n)` | [`ProcessPool::new(n)`](pool::ProcessPool::new), [`ProcessPool::builder()`](pool::ProcessPool::builder) | `.workers(n)`, `.initializer(f, arg)`, `.max_tasks_per_child(k)`, `.name(s)` |
//! | `ThreadPoolExecutor(n)` | [`ThreadPool::new(n)`](pool::ThreadPool::new) | same [`Executor`](pool::Executor) trait and [`TaskHandle`](pool::TaskHandle) |
//! | `executor.submit(f, a)`, `pool.apply_async(f, (a,))` | [`pool.submit(f, a)`](pool::Executor::submit) → [`TaskHandle<R>`](pool::TaskHandle) | [`submit_with_timeout(f, a, d)`](pool::ProcessPool::submit_with_timeout) kills an overrunning task's worker |
//! | `pool.apply(f, (a,))` | [`pool.apply(f, a)`](pool::Executor::apply) | |
//! | `executor.map(f, xs, chunksize=c, buffersize=b)`, `pool.imap(f, xs, c)` | [`pool.map(f, xs)`](pool::Executor::map), [`pool.map_with(f, xs, MapOptions { chunksize, buffersize })`](pool::Executor::map_with) | lazy, in input order, bounded in flight ([`DEFAULT_BUFFER_PER_WORKER`](pool::DEFAULT_BUFFER_PER_WORKER) tasks per worker by default) |
//! | `pool.imap_unordered(f, xs)` | [`pool.map_unordered(f, xs)`](pool::Executor::map_unordered) | |
//! | `future.result(timeout)`, `future.exception()` | [`h.result()`](pool::TaskHandle::result), [`h.result_timeout(d)`](pool::TaskHandle::result_timeout), [`h.error()`](pool::TaskHandle::error) | the result is taken once |
//! | `future.cancel()`, `cancelled()`, `running()`, `done()` | same names | [`cancel_running()`](pool::TaskHandle::cancel_running) also stops a running task (kills its worker) |
//! | `future.add_done_callback(f)` | [`h.add_done_callback(\|event\| ...)`](pool::TaskHandle::add_done_callback) | runs once; at once if already done |
//! | `await asyncio.wrap_future(future)` | `h.await` | `TaskHandle` is a [`Future`], no runtime needed |
//! | `wait(fs, timeout, return_when=FIRST_COMPLETED)` | [`pool::wait(&hs, timeout, ReturnWhen::FirstCompleted)`](pool::wait) | [`ReturnWhen`](pool::ReturnWhen): also `FirstException`, `AllCompleted`; returns `(done, not_done)` indices |
//! | `as_completed(fs, timeout)` | [`pool::as_completed(&hs, timeout)`](pool::as_completed) | yields indices |
//! | `executor.shutdown(wait, cancel_futures)`, `pool.terminate()` | [`pool.shutdown(wait, cancel_pending)`](pool::Executor::shutdown), [`terminate_workers()`](pool::ProcessPool::terminate_workers) / [`kill_workers()`](pool::ProcessPool::kill_workers) | drop shuts down and waits |
//! | `Manager()` / `with Manager() as m:` | [`Manager::start()`](manager::Manager::start) | the server stops when the `Manager` is dropped or [`shutdown()`](manager::Manager::shutdown) |
//! | `m.dict()` | [`m.dict::<K, V>()`](manager::Manager::dict) → [`DictProxy`](manager::DictProxy) | typed proxies, cloneable and serialisable |
//! | `m.list()` | [`m.list::<T>()`](manager::Manager::list) → [`ListProxy`](manager::ListProxy) | |
//! | `m.Namespace()` | [`m.namespace()`](manager::Manager::namespace) → [`NamespaceProxy`](manager::NamespaceProxy) | `ns.x = 1` is `ns.set("x", &1)` |
//! | `m.Value(t, v)` | [`m.value(&v)`](manager::Manager::value) → [`ValueProxy`](manager::ValueProxy) | |
//! | `m.Queue(n)` | [`m.queue::<T>(n)`](manager::Manager::queue) → [`QueueProxy`](manager::QueueProxy) | same waiting vocabulary as everywhere (`try_`, `_timeout`) |
//! | `m.Lock()`, `m.RLock()` | [`m.lock()`](manager::Manager::lock) → [`LockProxy`](manager::LockProxy), [`m.rlock()`](manager::Manager::rlock) → [`RLockProxy`](manager::RLockProxy) | `acquire()` returns a guard ([`LockGuard`](manager::LockGuard), [`RLockGuard`](manager::RLockGuard)) |
//! | `m.Semaphore(n)`, `m.Event()` | [`m.semaphore(n)`](manager::Manager::semaphore) → [`SemaphoreProxy`](manager::SemaphoreProxy), [`m.event()`](manager::Manager::event) → [`EventProxy`](manager::EventProxy) | |
//! | `m.Condition()`, `m.Barrier(n)` | [`m.condition()`](manager::Manager::condition) → [`ConditionProxy`](manager::ConditionProxy), [`m.barrier(n)`](manager::Manager::barrier) → [`BarrierProxy`](manager::BarrierProxy) | |
//! | `BaseManager(address, authkey).get_server().serve_forever()` | [`Manager::builder().address(a).authkey(k).serve()`](manager::ManagerBuilder::serve) | [`.start()`](manager::ManagerBuilder::start) for a server process |
//! | `BaseManager(address, authkey).connect()` + registered getters | [`Manager::connect(a, Some(k))`](manager::Manager::connect), [`m.named("jobs").queue::<T>(0)`](manager::Manager::named) | objects by name, created by the first to ask |
//! | `shared_memory.ShareableList([...])` | [`ShareableList::create(name, [...])`](collections::ShareableList::create) | no server; not byte-compatible with Python's |
//! | — (a `Manager().dict()` is the nearest) | [`SharedMap::<K, V>::create(name, capacity)`](collections::SharedMap::create) | no server; [`ShmSafe`] keys and values |
//! | `Queue(maxsize)` | [`Queue::<T>::new(bytes)`](queue::Queue::new), [`Queue::builder(bytes).max_items(n)`](queue::QueueBuilder::max_items) | bounded in bytes (rounded up to a power of two), optionally in items |
//! | `q.put(x)`, `q.get()` | [`q.put(&x)`](queue::Queue::put), [`q.get()`](queue::Queue::get) | `try_`, `_timeout`, `_deadline` variants; [`put_bytes`](queue::Queue::put_bytes) / [`get_bytes_into`](queue::Queue::get_bytes_into) for raw bytes; [`put_many`](queue::Queue::put_many) / [`get_many`](queue::Queue::get_many) in batches |
//! | `q.put_nowait(x)`, `q.get_nowait()` | [`q.try_put(&x)`](queue::Queue::try_put), [`q.try_get()`](queue::Queue::try_get) | [`WouldBlock`](ErrorKind::WouldBlock) instead of `Full`/`Empty` |
//! | `q.qsize()`, `q.empty()`, `q.full()` | `len()`, `is_empty()`, `is_full()` | exact when nobody is putting or getting |
//! | `q.close()` | [`q.close()`](queue::Queue::close) | closes the queue for every process |
//! | `JoinableQueue()`, `task_done()`, `join()` | [`JoinableQueue::<T>::new(bytes)`](queue::JoinableQueue), [`task_done()`](queue::Queue::task_done), [`join()`](queue::Queue::join) | `Queue<T, Joinable>`: the constructors of `Queue`; `join_timeout` too |
//! | `a, b = Pipe()` / `r, w = Pipe(duplex=False)` | [`Pipe::duplex()`](pipe::Pipe::duplex) / [`Pipe::simplex()`](pipe::Pipe::simplex) | each end is a [`Connection`](pipe::Connection) |
//! | `conn.send(x)`, `conn.recv()` | [`conn.send(&x)`](pipe::Connection::send), [`conn.recv::<T>()`](pipe::Connection::recv) | `try_recv`, `recv_timeout`; `EOFError` is [`ErrorKind::Closed`] |
//! | `send_bytes`, `recv_bytes`, `recv_bytes_into` | same names | [`recv_bytes_into(&mut Vec<u8>)`](pipe::Connection::recv_bytes_into) reuses the buffer |
//! | `conn.poll(timeout)`, `connection.wait(conns, timeout)` | [`conn.poll(timeout)`](pipe::Connection::poll), [`pipe::wait(&conns, timeout)`](pipe::wait) | `wait` returns the ready indices |
//! | `Listener(address, authkey=k)`, `Client(address, authkey=k)` | [`Listener::bind(address, Some(k))`](connection::Listener::bind), [`Client::connect(address, Some(k))`](connection::Client::connect) | HMAC-SHA256 both ways; not wire-compatible with Python |
//! | `shared_memory.SharedMemory(name, create=True, size=n)` | [`Segment::create(name, n)`](Segment::create) | fails if it exists, like Python |
//! | `shared_memory.SharedMemory(name)` | [`Segment::open(name)`](Segment::open) | |
//! | — | [`Segment::new(n)`](Segment::new) | anonymous: a sealed `memfd`, never in `/dev/shm` |
//! | `shm.buf[a:b]` | [`seg.read_at(a, &mut buf)`](Segment::read_at) / [`seg.write_at(a, &bytes)`](Segment::write_at) / [`seg.as_ptr()`](Segment::as_ptr) | copies, bounds-checked; never a `&[u8]` into memory others write |
//! | `shm.unlink()` | [`Segment::unlink(name)`](Segment::unlink), or drop the creating handle | the creator owns the name ([`persist()`](Segment::persist) keeps it) |
//! | `Lock()` | [`sync::Mutex<T>`](sync::Mutex) | the lock owns its data, as in Rust |
//! | `RLock()` | [`m.rlock()`](manager::Manager::rlock) | served by a manager; no shared-memory rlock |
//! | `Condition()` | [`sync::Mutex<T>`](sync::Mutex) + [`sync::Condvar`] | |
//! | `Semaphore(n)` / `BoundedSemaphore(n)` | [`Semaphore::new(n)`](sync::Semaphore::new) / [`Semaphore::bounded(n)`](sync::Semaphore::bounded) | `acquire()` returns a [`SemaphorePermit`](sync::SemaphorePermit) guard |
//! | `Event()` | [`sync::Event`] | |
//! | `Barrier(n)` | [`Barrier::new(n)`](sync::Barrier::new) | `wait()` returns a [`BarrierWaitResult`](sync::BarrierWaitResult): `index()`, `is_leader()` |
//! | `Value('Q', 0)` | [`Value::<u64>::new(0)`](Value::new) | `get`/`set`/`update`/`lock` |
//! | `Array('d', 10)` | [`Array::<f64>::filled(10, 0.0)`](Array::filled) | `get`/`set`/`to_vec`/`copy_from_slice`/`lock` |
//! | `v.get_lock()` | [`v.lock()`](Value::lock) | |
//!
//! Every shared-memory object can be named (`create`, `open`,
//! `open_or_create`), anonymous (`new`; a builder's `.new()`) or embedded at a
//! 64-byte-aligned offset of a segment you lay out (`create_in`, `open_in`,
//! `size_in_segment`).
//!
//! Waiting uses one vocabulary everywhere: `op()` blocks, `try_op()` never
//! blocks (a [`WouldBlock`](ErrorKind::WouldBlock) error), `op_timeout(Duration)`
//! and `op_deadline(Instant)` return a [`Timeout`](ErrorKind::Timeout) error,
//! never earlier than asked. A timeout too long to make a deadline of
//! (`Duration::MAX`) waits forever.
//!
//! The README's "Semantic differences from Python" lists where ipckit
//! deliberately differs (one start method, queues bounded in bytes, `close()`
//! for every process, results taken once, …).
//!
//! ## A tour
//!
//! ### Processes and `init()`
//!
//! A child is this same executable started again, told which function to
//! run and handed its serde-encoded argument; the parent's `join` gets the
//! result back, or an error with the panic message and location, or how the
//! child died. So [`ipckit::init()`](init) must be the first line of `main`:
//! in a child it runs the function and exits. The function is a plain `fn(A) -> R` (a
//! closure that captures nothing coerces to one). Integration tests invoke
//! [`test_support!()`](test_support) instead; doc tests that spawn are
//! `standalone_crate` blocks with their own `main`, as this one.
//!
//! ```standalone_crate
//! use ipckit::ErrorKind;
//! use ipckit::process::Process;
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn refuse(why: String) {
//!     panic!("{why}");
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init(); // in a child: runs the function and exits
//!     let child = Process::builder().name("squarer").spawn(square, 12)?;
//!     assert_eq!(child.name(), "squarer");
//!     assert_eq!(child.join()?, 144);
//!
//!     // A panic (or a crash) in the child is an error of `join`, not a hang.
//!     let err = Process::spawn(refuse, "bad input".to_owned())?.join().unwrap_err();
//!     assert_eq!(err.kind(), ErrorKind::Panicked);
//!     assert!(err.to_string().contains("bad input"), "{err}");
//!     Ok(())
//! }
//! ```
//!
//! [`Builder::daemon`](process::Builder::daemon) children die with their
//! parent, however it dies; dropping a [`Process`](process::Process) without
//! joining it detaches the child, which is reaped in the background. See
//! [`process`].
//!
//! ### Pools and futures
//!
//! [`ProcessPool`](pool::ProcessPool) and [`ThreadPool`](pool::ThreadPool)
//! implement one [`Executor`](pool::Executor) trait and return the same
//! [`TaskHandle<R>`](pool::TaskHandle): Python's `concurrent.futures.Future`,
//! and a Rust [`Future`] for any async runtime. A worker
//! process that dies (SIGKILL, abort, the OOM killer) fails only its own task,
//! with [`ErrorKind::ProcessDied`], and is replaced.
//!
//! ```standalone_crate
//! use ipckit::pool::{self, Executor, ProcessPool, ReturnWhen, ThreadPool};
//!
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init();
//!     let pool = ProcessPool::new(2)?;
//!     let task = pool.submit(square, 7)?; // a TaskHandle
//!     assert_eq!(task.result()?, 49);
//!
//!     // Lazy, in input order, a bounded number of tasks in flight.
//!     let squares: Vec<u64> = pool.map(square, 0..100).collect::<ipckit::Result<_>>()?;
//!     assert_eq!(squares[9], 81);
//!
//!     let tasks = vec![pool.submit(square, 2)?, pool.submit(square, 3)?];
//!     let (done, not_done) = pool::wait(&tasks, None, ReturnWhen::AllCompleted);
//!     assert_eq!((done.len(), not_done.len()), (2, 0));
//!     for index in pool::as_completed(&tasks, None) {
//!         println!("task {} is done", index?);
//!     }
//!
//!     // The same functions run on threads, behind the same trait.
//!     let threads = ThreadPool::new(2)?;
//!     assert_eq!(threads.apply(square, 9)?, 81);
//!     Ok(())
//! }
//! ```
//!
//! ### Queues
//!
//! A [`Queue<T>`](queue::Queue) is Python's `multiprocessing.Queue`:
//! multi-producer, multi-consumer, one ring of variable-size frames in
//! shared memory, bounded in bytes. A put or get is committed by one store,
//! so a process killed anywhere in it leaves every message whole or absent;
//! messages larger than the ring are streamed through it.
//! [`JoinableQueue<T>`](queue::JoinableQueue) is `Queue<T, Joinable>`, with
//! the same constructors and `task_done`/`join`.
//!
//! ```
//! use ipckit::ErrorKind;
//! use ipckit::queue::{JoinableQueue, Queue};
//! # fn main() -> ipckit::Result<()> {
//! let q = Queue::<String>::new(64 << 10)?; // anonymous, a 64 KiB ring: pass it to children
//! q.put(&"one".to_owned())?;
//! q.put_many([&"two".to_owned(), &"three".to_owned()])?;
//! assert_eq!(q.get()?, "one");
//! assert_eq!(q.get_many(10)?, ["two", "three"]); // takes what is there, drops nothing
//! assert!(q.try_get().unwrap_err().is_would_block());
//!
//! // Each handle has a message size limit: a larger put is refused whole.
//! let mut small = q.clone();
//! small.set_max_message_size(16);
//! let err = small.put(&"x".repeat(100)).unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::LimitExceeded);
//! assert!(q.is_empty());
//!
//! let jobs = JoinableQueue::<u32>::new(4096)?;
//! jobs.put(&7)?;
//! let job = jobs.get()?;
//! jobs.task_done()?; // `job` is finished
//! jobs.join()?;      // returns once every job put is done
//! # let _ = job;
//! q.close(); // for every process: puts fail, gets drain, then fail
//! assert!(q.get().unwrap_err().is_closed());
//! # Ok(()) }
//! ```
//!
//! Typed messages are postcard-encoded; [`put_bytes`](queue::Queue::put_bytes)
//! and [`get_bytes_into`](queue::Queue::get_bytes_into) move raw bytes without
//! encoding (the fastest path for bulk data). See [`queue`].
//!
//! ### Pipes and connections
//!
//! [`Pipe::duplex`](pipe::Pipe::duplex) and [`Pipe::simplex`](pipe::Pipe::simplex)
//! give [`Connection`](pipe::Connection)s with `send`/`recv`/`poll`, EOF when the
//! peer is gone, and [`pipe::wait`] over many; their ends travel to child
//! processes inside spawn arguments. [`connection::Listener`] and
//! [`connection::Client`] connect over unix sockets or TCP with mutual
//! HMAC-SHA256 authentication.
//!
//! ```
//! use std::time::Duration;
//! use ipckit::pipe::{self, Pipe};
//! # fn main() -> ipckit::Result<()> {
//! let (a, b) = Pipe::duplex()?;
//! a.send(&("ping", 1u32))?;
//! assert!(b.poll(Some(Duration::from_secs(5)))?);
//! assert_eq!(b.recv::<(String, u32)>()?, ("ping".to_owned(), 1));
//!
//! let (rx, tx) = Pipe::simplex()?; // (receiving end, sending end)
//! tx.send_bytes(b"frame")?;
//! assert_eq!(pipe::wait(&[&a, &rx], Some(Duration::from_secs(5)))?, [1]);
//! drop(tx);
//! assert_eq!(rx.recv_bytes()?, b"frame");
//! assert!(rx.recv_bytes().unwrap_err().is_closed()); // EOF: Python's EOFError
//! # Ok(()) }
//! ```
//!
//! For speed between local processes use a [`Queue`](queue::Queue); a
//! `Connection` is the tool for `wait()` over several channels, EOF on a
//! peer's death, or a peer on another machine.
//!
//! ### Shared memory objects
//!
//! A named [`Segment`] is a POSIX shared-memory object: the segment `"jobs"`
//! is `/dev/shm/jobs`, the very object Python's
//! `multiprocessing.shared_memory.SharedMemory("jobs")` attaches to. The
//! creator owns the name and unlinks it on drop (unless it calls
//! [`Segment::persist`]); [`Segment::new`] makes an anonymous segment that
//! leaks nothing even if every process using it is killed. On segments live
//! the typed objects: [`Value<T>`](Value) and [`Array<T>`](Array) of any
//! [`ShmSafe`] type, the locks and signals of [`sync`] ([`Mutex`](sync::Mutex),
//! [`Condvar`](sync::Condvar), [`Semaphore`](sync::Semaphore),
//! [`Event`](sync::Event), [`Barrier`](sync::Barrier)) and the containers of
//! [`collections`] ([`SharedMap`](collections::SharedMap),
//! [`ShareableList`](collections::ShareableList)). Each object starts with a
//! header recording its kind, element type and size, so opening a
//! `Mutex<u32>` as a `Semaphore` or a `Value<u64>` as a `Value<i64>` is a
//! clear error.
//!
//! ```
//! use ipckit::collections::{Item, ShareableList, SharedMap};
//! use ipckit::sync::{Event, Mutex, Semaphore};
//! use ipckit::{Array, ErrorKind, Segment, Value};
//! # fn main() -> ipckit::Result<()> {
//! // Bytes: copied in and out, bounds-checked.
//! let seg = Segment::new(4096)?;
//! seg.write_at(0, b"hello")?;
//! let mut buf = [0u8; 5];
//! seg.read_at(0, &mut buf)?;
//! assert_eq!(&buf, b"hello");
//!
//! // Named objects: what one process creates, another opens.
//! let name = format!("ipckit-doc-tour-{}", std::process::id());
//! let total = Value::create(&name, 0u64)?; // /dev/shm/<name>, removed when `total` drops
//! Value::<u64>::open(&name)?.set(5)?;
//! assert_eq!(total.get()?, 5);
//! assert_eq!(Value::<i64>::open(&name).unwrap_err().kind(), ErrorKind::WrongType);
//!
//! // Values and arrays have their own lock; a Mutex owns the data it guards.
//! let samples = Array::filled(4, 0.0f64)?;
//! samples.set(2, 1.5)?;
//! assert_eq!(samples.to_vec()?, [0.0, 0.0, 1.5, 0.0]);
//! let state = Mutex::new([0u32; 4])?;
//! state.lock()?[0] = 7;
//! let permits = Semaphore::new(2)?;
//! {
//!     let _permit = permits.acquire()?; // given back on drop
//!     assert_eq!(permits.value(), 1);
//! }
//!
//! // Several objects in one segment you lay out, at multiples of 64.
//! let layout = Segment::new(4096)?;
//! let ready = Event::create_in(&layout, 0)?;
//! let at = Event::size_in_segment().next_multiple_of(64);
//! let count = Value::<u32>::create_in(&layout, at, 0)?;
//! ready.set();
//! assert_eq!(Value::<u32>::open_in(&layout, at)?.get()?, count.get()?);
//!
//! // Containers without a server.
//! let map: SharedMap<u32, u64> = SharedMap::new(64)?;
//! map.insert(1, 10)?;
//! map.update(&1, |v| *v += 1)?;
//! assert_eq!(map.get(&1)?, Some(11));
//! let list = ShareableList::new([Item::from(1), "howdy".into(), Item::None])?;
//! list.set(2, 2.5)?;
//! assert_eq!(list.get(1)?, Item::from("howdy"));
//! # Ok(()) }
//! ```
//!
//! ### Managers
//!
//! [`Manager::start`](manager::Manager::start) runs a server process; its
//! constructors return typed proxies — [`DictProxy`](manager::DictProxy),
//! [`ListProxy`](manager::ListProxy), [`QueueProxy`](manager::QueueProxy),
//! [`LockProxy`](manager::LockProxy) and the others of the table above —
//! that you clone and pass to child processes and pool tasks. Serve on TCP
//! with an auth key and [`Manager::connect`](manager::Manager::connect) from
//! other programs, finding objects by name. If the server dies, calls fail at
//! once; if a client dies, the locks and permits it held are released.
//!
//! ```standalone_crate
//! use ipckit::manager::{DictProxy, Manager};
//! use ipckit::process::Process;
//!
//! fn record(scores: DictProxy<String, u32>) {
//!     scores.insert(&"grace".to_owned(), &42).unwrap();
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init();
//!     let manager = Manager::start()?; // a server process
//!     let scores = manager.dict::<String, u32>()?;
//!     scores.insert(&"ada".to_owned(), &36)?;
//!     Process::spawn(record, scores.clone())?.join()?; // proxies travel
//!     assert_eq!(scores.len()?, 2);
//!
//!     let lock = manager.lock()?;
//!     let guard = lock.acquire()?; // released if this process dies
//!     guard.unlock()?;
//!
//!     let jobs = manager.named("jobs").queue::<u64>(0)?; // found by name
//!     jobs.put(&1)?;
//!     assert_eq!(manager.named("jobs").queue::<u64>(0)?.get()?, 1);
//!     manager.shutdown()?;
//!     Ok(())
//! }
//! ```
//!
//! The server keeps every object as encoded bytes and needs no knowledge of
//! your types. When speed matters more than flexibility, the
//! [`collections`] need no server (an insert + get in nanoseconds rather
//! than microseconds). See [`manager`].
//!
//! ### Passing handles to child processes
//!
//! Every handle — segments, values, arrays, locks, events, queues, maps,
//! lists, connections, manager proxies — implements serde's `Serialize` and
//! `Deserialize`: put it in a child's spawn argument (or a pool task's) and
//! the child's decoded handle opens the same object. Anonymous objects
//! travel too: inside a spawn argument their descriptors are passed beside
//! the encoded bytes, so the child has them even if the parent drops its
//! handle at once.
//!
//! ```standalone_crate
//! use ipckit::process::Process;
//! use ipckit::queue::Queue;
//! use ipckit::Value;
//!
//! fn worker((results, finished): (Queue<u64>, Value<u32>)) {
//!     for i in 0..10 {
//!         results.put(&(i * i)).unwrap();
//!     }
//!     finished.update(|n| *n += 1).unwrap();
//! }
//!
//! fn main() -> ipckit::Result<()> {
//!     ipckit::init();
//!     let results = Queue::<u64>::new(1 << 16)?; // anonymous: nothing to clean up
//!     let finished = Value::new(0u32)?;
//!     let children = (0..2)
//!         .map(|_| Process::spawn(worker, (results.clone(), finished.clone())))
//!         .collect::<ipckit::Result<Vec<_>>>()?;
//!     for child in children {
//!         child.join()?;
//!     }
//!     assert_eq!(finished.get()?, 2);
//!     let sum = (0..20).map(|_| results.get()).sum::<ipckit::Result<u64>>()?;
//!     assert_eq!(sum, 2 * 285);
//!
//!     // Any other channel works too: encode the handle, send the bytes.
//!     let token = ipckit::codec::encode(&finished)?;
//!     let again: Value<u32> = ipckit::codec::decode(&token)?;
//!     assert_eq!(again.get()?, 2);
//!     Ok(())
//! }
//! ```
//!
//! Outside a spawn argument an anonymous handle refers to the sender's
//! descriptor (through `/proc/<pid>/fd`), so the sender must keep its handle
//! until the receiver has opened it. A [`Connection`](pipe::Connection)
//! travels only inside a spawn argument.
//!
//! ### Crashes and poisoning
//!
//! A lock whose holder died — a process killed, even by SIGKILL — or
//! *panicked* is reported, not silently released and never deadlocked: the
//! next locker gets [`sync::LockError::OwnerDied`] with the guard, repairs the
//! data and calls [`mark_consistent()`](sync::MutexGuard::mark_consistent);
//! until then every locker is told (std's poisoning, across processes).
//! [`Value::get`] and [`Value::set`] fail with [`ErrorKind::OwnerDied`] in
//! that state.
//!
//! ```
//! use ipckit::sync::{LockError, Mutex};
//! # fn main() -> ipckit::Result<()> {
//! let accounts = Mutex::new([50u64, 50])?; // invariant: the sum is 100
//! let m = accounts.clone();
//! let _ = std::thread::spawn(move || {
//!     let mut g = m.lock().unwrap();
//!     g[0] -= 30; // half of a transfer...
//!     panic!("crashed mid-transfer"); // ...and the holder is gone
//! })
//! .join();
//! let g = match accounts.lock() {
//!     Ok(g) => g,
//!     Err(LockError::OwnerDied(mut g)) => {
//!         g[1] = 100 - g[0]; // repair the invariant, then say so
//!         g.mark_consistent();
//!         g
//!     }
//!     Err(e) => return Err(e.into()),
//! };
//! assert_eq!(g[0] + g[1], 100);
//! drop(g);
//! assert!(accounts.lock().is_ok()); // consistent again
//! # Ok(()) }
//! ```
//!
//! Everything else recovers by itself: semaphore permits of dead processes
//! are given back; queues and [`collections`] commit every change with one
//! store, so a process killed mid-operation leaves the old state or the new
//! one; a pool worker's death fails only its task; a manager releases what a
//! dead client held; waits never wedge on a dead peer (every sleep is
//! bounded). A creator killed by SIGKILL cannot unlink its *named* objects:
//! they stay in `/dev/shm`, as in Python, until removed (see
//! [Operations](#operations)); anonymous ones never leak.
//!
//! ### Errors
//!
//! Every operation returns [`ipckit::Result`](Result): one [`Error`] type
//! with a [`kind()`](Error::kind) ([`ErrorKind`], `#[non_exhaustive]`),
//! predicates such as [`is_timeout()`](Error::is_timeout) and
//! [`is_closed()`](Error::is_closed), and a lowercase message that says
//! what was being done, then why. The message carries the whole cause, so
//! `source()` is `None`; errors from a child process or a pool worker arrive
//! with their kind and text intact. `?` also converts `std::io::Error`, so
//! `main` can mix both.
//!
//! ```
//! use ipckit::{ErrorKind, sync::Mutex};
//! let err = Mutex::<u32>::open("ipckit-doc-no-such-lock").unwrap_err();
//! assert_eq!(err.kind(), ErrorKind::NotFound);
//! assert!(err.to_string().starts_with("cannot open"), "{err}");
//! ```
//!
//! ### Operations
//!
//! A crash leaves named objects in `/dev/shm`. [`admin`] lists, inspects
//! and removes them — in particular the *stale* ones, whose creator is dead
//! and which no live process maps or holds open — as the `ipckit`
//! command-line tool does (`ipckit ls`, `inspect`, `watch`, `rm`, `clean`;
//! feature `cli`).
//!
//! ```no_run
//! # fn main() -> ipckit::Result<()> {
//! for obj in ipckit::admin::list(false)? {
//!     println!("{} {} {}", obj.name, obj.kind_name(), obj.status());
//! }
//! // At start-up, remove what an earlier crashed run of this program left.
//! let removed = ipckit::admin::clean_stale_with_prefix("myapp-", false)?;
//! eprintln!("removed {} stale objects", removed.len());
//! # Ok(()) }
//! ```
//!
//! ## Feature flags
//!
//! | feature | default | what it does |
//! |---|---|---|
//! | `cli` | on | builds the `ipckit` command-line tool (`cargo install ipckit`); pulls in `clap`. The library, [`admin`] included, does not need it: `default-features = false` keeps a dependent's build lean. |
//! | `progress` | off | `.progress(label)` on the iterators of [`Executor::map`](pool::Executor::map), [`map_unordered`](pool::Executor::map_unordered), [`completed`](pool::completed) and [`as_completed`](pool::as_completed): a bar with count, rate and time left on stderr, drawn by `indicatif`, hidden when stderr is not a terminal. |
//! | `bench-iceoryx2` | off | adds iceoryx2 (zero-copy shared-memory pub/sub) as a row of `cargo bench --bench transports`. Not used by the library. |
//!
//! ## Platform
//!
//! Linux only (other targets fail to compile with a clear message), with
//! `/dev/shm` mounted: ipckit uses futexes, `memfd_create` and `/proc` (its
//! locks are its own, on futexes; a dead holder is found through `/proc`).
//! Tested on x86_64 with glibc ≥ 2.30; aarch64 has no architecture-specific
//! code but is not yet tested; other C libraries are not yet built or
//! tested. Queues use `membarrier(2)` where the kernel offers it to keep
//! full fences off the put/get path, and fall back to fenced commits where
//! it does not.
//!
//! Named segments are shared with Python's `multiprocessing.shared_memory`
//! in both directions; Python 3.11's resource tracker unlinks segments it
//! attached to (see the README).
//!
//! ## Performance
//!
//! Measured figures, with the commands that produce them, are kept out of
//! the API docs: see the README's Performance section, `docs/benchmarks.md`
//! (the transport report) and `docs/design-measurements.md` (the
//! measurements behind design constants).

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod admin;
#[cfg(feature = "nats")]
#[cfg_attr(docsrs, doc(cfg(feature = "nats")))]
pub mod cluster;
pub mod codec;
pub mod collections;
pub mod connection;
mod deadline;
pub mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod handoff;
pub mod layout;
mod loom;
pub mod manager;
mod object;
pub mod pipe;
mod platform;
pub mod pool;
pub mod process;
pub mod queue;
pub mod segment;
pub mod sync;
mod value;

pub use error::{Error, ErrorKind, Result};
pub use layout::ShmSafe;
pub use process::init;
pub use segment::{CreationMode, Segment, SegmentBuilder};
pub use value::{Array, Value};
