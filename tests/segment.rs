//! Segments between real processes, including Python's `SharedMemory`.

mod common;

ipckit::test_support!();

use std::process::Command;
use std::time::Duration;

use common::{Ctx, spawn};
use ipckit::sync::Event;
use ipckit::{ErrorKind, Segment, Value};

fn child_segment_echo((name, seg): (String, Segment)) {
    // `seg` arrived as a handle; also open the same name directly.
    let by_name = Segment::open(&name).unwrap();
    assert_eq!(by_name.len(), seg.len());
    let mut buf = [0u8; 6];
    by_name.read_at(10, &mut buf).unwrap();
    assert_eq!(&buf, b"parent");
    seg.write_at(100, b"child").unwrap();
}

#[test]
fn named_segment_is_shared_between_processes() {
    let t = Ctx::new("named_segment");
    let name = t.name("seg");
    let seg = Segment::create(&name, 4096).unwrap();
    seg.write_at(10, b"parent").unwrap();
    spawn(child_segment_echo, (name.clone(), seg.clone()))
        .join()
        .unwrap();
    let mut buf = [0u8; 5];
    seg.read_at(100, &mut buf).unwrap();
    assert_eq!(&buf, b"child");
}

fn child_anonymous_echo(seg: Segment) {
    assert!(seg.is_anonymous());
    let mut buf = [0u8; 4];
    seg.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"ping");
    seg.write_at(seg.len() - 4, b"pong").unwrap();
}

#[test]
fn anonymous_segment_is_usable_by_children() {
    let _t = Ctx::new("anon_segment");
    let before = common::shm_entries_not_ours();
    let seg = Segment::new(1 << 20).unwrap();
    seg.write_at(0, b"ping").unwrap();
    spawn(child_anonymous_echo, seg.clone()).join().unwrap();
    let mut buf = [0u8; 4];
    seg.read_at(seg.len() - 4, &mut buf).unwrap();
    assert_eq!(&buf, b"pong");
    assert_eq!(
        common::shm_entries_not_ours(),
        before,
        "anonymous segments never appear in /dev/shm"
    );
}

fn child_make_anonymous_then_hang(ready: Event) {
    let seg = Segment::new(8 << 20).unwrap();
    seg.write_at(0, &[1; 4096]).unwrap();
    let v = Value::new(5u64).unwrap();
    let m = ipckit::sync::Mutex::new(0u32).unwrap();
    let _g = m.lock().unwrap();
    ready.set();
    let _keep = (seg, v);
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn anonymous_objects_leak_nothing_when_their_holders_are_killed() {
    let t = Ctx::new("anon_leak");
    let ready = Event::create(&t.name("ready")).unwrap();
    let before = common::shm_entries_not_ours();
    let mut children: Vec<_> = (0..3)
        .map(|_| {
            ready.clear();
            let c = spawn(child_make_anonymous_then_hang, ready.clone());
            ready.wait_timeout(Duration::from_secs(30)).unwrap();
            c
        })
        .collect();
    for c in &mut children {
        c.kill().unwrap();
    }
    for c in children {
        assert!(c.join().unwrap_err().is_process_died());
    }
    assert_eq!(common::shm_entries_not_ours(), before);
}

fn child_create_segment((name, persist, ready): (String, bool, Option<Event>)) {
    let seg = Segment::create(&name, 128).unwrap();
    seg.write_at(0, b"made by child").unwrap();
    if persist {
        assert!(seg.persist());
    }
    if let Some(ready) = ready {
        ready.set();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}

#[test]
fn creator_ownership_across_processes() {
    let t = Ctx::new("ownership");
    // A creator that exits normally unlinks its name.
    let name = t.name("owned");
    spawn(child_create_segment, (name.clone(), false, None::<Event>))
        .join()
        .unwrap();
    assert!(!Segment::exists(&name).unwrap());

    // One that persists leaves it for others, who can take it over.
    let name = t.name("persisted");
    spawn(child_create_segment, (name.clone(), true, None::<Event>))
        .join()
        .unwrap();
    let seg = Segment::open(&name).unwrap();
    let mut buf = [0u8; 13];
    seg.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"made by child");
    assert!(!seg.is_owner());
    seg.take_ownership();
    drop(seg);
    assert!(!Segment::exists(&name).unwrap());

    // A SIGKILLed creator cannot unlink: the name stays (as in Python), and
    // anyone may remove it.
    let name = t.name("killed");
    let ready = Event::new().unwrap();
    let c = spawn(
        child_create_segment,
        (name.clone(), false, Some(ready.clone())),
    );
    ready.wait_timeout(Duration::from_secs(30)).unwrap();
    c.kill().unwrap();
    assert!(c.join().unwrap_err().is_process_died());
    assert!(Segment::exists(&name).unwrap());
    Segment::unlink(&name).unwrap();
    assert!(!Segment::exists(&name).unwrap());
    assert!(Segment::unlink(&name).unwrap_err().is_not_found());
}

#[test]
fn open_or_create_races_resolve_to_one_segment() {
    let t = Ctx::new("ooc_race");
    let name = t.name("seg");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || Segment::open_or_create(&name, 256).unwrap())
        })
        .collect();
    let segs: Vec<Segment> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(segs.iter().filter(|s| s.is_owner()).count(), 1);
    segs[3].write_at(0, b"x").unwrap();
    let mut b = [0u8];
    segs[5].read_at(0, &mut b).unwrap();
    assert_eq!(&b, b"x");
}

// ---------------------------------------------------------------------------
// Python interop: the same POSIX names in both directions
// ---------------------------------------------------------------------------

fn python() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import multiprocessing.shared_memory"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if ok {
        Some("python3")
    } else {
        eprintln!("skipping: python3 with multiprocessing.shared_memory is not available");
        None
    }
}

// Python 3.11's resource tracker unlinks every segment a process attached to
// when it exits (fixed by `track=False` in 3.13). The scripts unregister, so
// the Rust side keeps ownership.
const UNTRACK: &str = "from multiprocessing import resource_tracker\n\
def untrack(shm):\n    resource_tracker.unregister(shm._name, 'shared_memory')\n";

#[test]
fn python_attaches_to_a_rust_segment() {
    let t = Ctx::new("py_attach");
    let Some(py) = python() else { return };
    let name = t.name("jobs");
    let seg = Segment::create(&name, 1000).unwrap();
    seg.write_at(0, b"hello from rust").unwrap();
    let script = format!(
        "{UNTRACK}from multiprocessing.shared_memory import SharedMemory\n\
         shm = SharedMemory({name:?})\nuntrack(shm)\n\
         assert shm.size >= 1000, shm.size\n\
         assert bytes(shm.buf[:15]) == b'hello from rust', bytes(shm.buf[:15])\n\
         shm.buf[500:517] = b'hello from python'\nshm.close()\n"
    );
    let status = Command::new(py).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let mut buf = [0u8; 17];
    seg.read_at(500, &mut buf).unwrap();
    assert_eq!(&buf, b"hello from python");
    assert!(
        Segment::exists(&name).unwrap(),
        "python must not have unlinked it"
    );
}

#[test]
fn rust_attaches_to_a_python_segment() {
    let t = Ctx::new("py_create");
    let Some(py) = python() else { return };
    let name = t.name("jobs");
    let script = format!(
        "{UNTRACK}from multiprocessing.shared_memory import SharedMemory\n\
         shm = SharedMemory(name={name:?}, create=True, size=4096)\nuntrack(shm)\n\
         shm.buf[:11] = b'from python'\nshm.close()\n"
    );
    let status = Command::new(py).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    let seg = Segment::open(&name).unwrap();
    assert_eq!(seg.len(), 4096);
    let mut buf = [0u8; 11];
    seg.read_at(0, &mut buf).unwrap();
    assert_eq!(&buf, b"from python");
    // A plain Python segment is not an ipckit object.
    let e = Value::<u64>::open(&name).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    seg.write_at(100, b"from rust").unwrap();
    // This time Python removes the segment (unlink() also unregisters it).
    let script = format!(
        "from multiprocessing.shared_memory import SharedMemory\n\
         shm = SharedMemory({name:?})\n\
         assert bytes(shm.buf[100:109]) == b'from rust'\nshm.close()\nshm.unlink()\n"
    );
    let status = Command::new(py).args(["-c", &script]).status().unwrap();
    assert!(status.success());
    assert!(!Segment::exists(&name).unwrap());
}
