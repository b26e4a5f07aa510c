//! `SharedMap` and `ShareableList`, tested between real processes: concurrent
//! writers, writers SIGKILLed at random points, handles passed to children,
//! errors, and arbitrary segment contents.

mod common;

ipckit::test_support!();

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{Ctx, spawn};
use ipckit::collections::{Item, ShareableList, SharedMap};
use ipckit::layout::TypeFingerprint;
use ipckit::layout::header::{Header, ObjectKind, STATE_OFFSET, STATE_READY};
use ipckit::sync::{Event, LockError};
use ipckit::{ErrorKind, Segment, Value};
use proptest::prelude::*;

fn send_sync<T: Send + Sync + Clone + serde::Serialize + serde::de::DeserializeOwned>() {}

#[test]
fn handles_are_send_sync_clone_and_serde() {
    send_sync::<SharedMap<u64, [f64; 4]>>();
    send_sync::<ShareableList>();
}

/// A small xorshift generator: the tests' randomness, seeded per run.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        Rng(0x2545_f491_4f6c_dd1d ^ u64::from(std::process::id()).wrapping_mul(0x9e37_79b9))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads a `Value<u64>` whose last writer may have been killed while
/// holding its lock (one u64 store: the value is consistent either way).
fn read_repairing(v: &Value<u64>) -> u64 {
    match v.lock() {
        Ok(g) => *g,
        Err(LockError::OwnerDied(g)) => {
            g.mark_consistent();
            *g
        }
        Err(e) => panic!("{e}"),
    }
}

/// Whether the lock of a collection at offset 0 of `seg` still names a
/// holder (its first word, the holder, is not 0; the lock sits right after
/// the 128-byte header): read after its only user was killed, whether the
/// kill landed inside the lock. Diagnostic only.
fn lock_owner_died(seg: &Segment) -> bool {
    let mut w = [0u8; 8];
    seg.read_at(128, &mut w).unwrap();
    u64::from_le_bytes(w) != 0
}

// ---------------------------------------------------------------------------
// SharedMap: four writers at once
// ---------------------------------------------------------------------------

const COUNTER: u64 = u64::MAX;

fn child_insert_range((m, c, n): (SharedMap<u64, u64>, u64, u64)) -> u64 {
    for i in 0..n {
        let k = c * 1_000_000 + i;
        assert_eq!(m.insert(k, i * 2).unwrap(), None);
        m.update(&COUNTER, |x| *x += 1)
            .unwrap()
            .expect("counter key");
        m.update_or_insert(COUNTER - 1, 0, |x| *x += 1).unwrap();
        if i % 7 == 0 {
            assert_eq!(m.get(&k).unwrap(), Some(i * 2));
        }
    }
    // Overwrite our own range once more: updates of existing keys.
    for i in (0..n).step_by(3) {
        let k = c * 1_000_000 + i;
        assert_eq!(m.insert(k, i * 3).unwrap(), Some(i * 2));
    }
    n
}

#[test]
fn map_four_processes_disjoint_ranges_and_shared_counter() {
    let t = Ctx::new("map_four_writers");
    let n = 2_000u64;
    let m = SharedMap::<u64, u64>::create(&t.name("m"), 4 * n as usize + 2).unwrap();
    m.insert(COUNTER, 0).unwrap();
    let children: Vec<_> = (0..4u64)
        .map(|c| spawn(child_insert_range, (m.clone(), c, n)))
        .collect();
    for c in children {
        assert_eq!(c.join().unwrap(), n);
    }
    assert_eq!(m.get(&COUNTER).unwrap(), Some(4 * n));
    assert_eq!(m.get(&(COUNTER - 1)).unwrap(), Some(4 * n));
    assert_eq!(m.len().unwrap(), 4 * n as usize + 2);
    for c in 0..4u64 {
        for i in 0..n {
            let want = if i % 3 == 0 { i * 3 } else { i * 2 };
            assert_eq!(m.get(&(c * 1_000_000 + i)).unwrap(), Some(want), "{c}/{i}");
        }
    }
    let all: HashMap<u64, u64> = m.to_vec().unwrap().into_iter().collect();
    assert_eq!(all.len(), 4 * n as usize + 2, "no duplicate keys");
    // Full now: one more new key is refused, existing keys still update.
    let e = m.insert(999_999_999, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded, "{e}");
    assert_eq!(m.insert(COUNTER, 0).unwrap(), Some(4 * n));
}

// ---------------------------------------------------------------------------
// SharedMap: a writer killed at random points
// ---------------------------------------------------------------------------

type Val = [u64; 8];
const KEYS: u64 = 48;

fn op_key(k: u64) -> u64 {
    (k.wrapping_mul(0x9e37_79b9) >> 3) % KEYS
}

/// Operation `k` of the churn, on the shared map.
fn apply_map(m: &SharedMap<u64, Val>, k: u64) {
    let key = op_key(k);
    let v = [k; 8];
    match k % 16 {
        0..=7 => drop(m.insert(key, v).unwrap()),
        8 | 9 => drop(m.update(&key, |x| *x = v).unwrap()),
        10..=12 => drop(m.remove(&key).unwrap()),
        13 | 14 => drop(m.get_or_insert(key, v).unwrap()),
        _ if k % 128 == 15 => m.clear().unwrap(),
        _ => drop(m.insert(key, v).unwrap()),
    }
}

/// Operation `k` of the churn, on the model.
fn apply_model(m: &mut BTreeMap<u64, Val>, k: u64) {
    let key = op_key(k);
    let v = [k; 8];
    match k % 16 {
        0..=7 => drop(m.insert(key, v)),
        8 | 9 => {
            if let Some(x) = m.get_mut(&key) {
                *x = v;
            }
        }
        10..=12 => drop(m.remove(&key)),
        13 | 14 => drop(*m.entry(key).or_insert(v)),
        _ if k % 128 == 15 => m.clear(),
        _ => drop(m.insert(key, v)),
    }
}

fn child_map_churn((m, progress, started, start): (SharedMap<u64, Val>, Value<u64>, Event, u64)) {
    started.set();
    let mut k = start;
    loop {
        apply_map(&m, k);
        // Reported as committed only after the operation returned.
        progress.set(k + 1).unwrap();
        k += 1;
    }
}

/// Checks the map against the model: same entries (so nothing committed is
/// lost, nothing is torn, no key is duplicated), every key reachable, len
/// right.
fn check_map(m: &SharedMap<u64, Val>, snapshot: &BTreeMap<u64, Val>) {
    for (k, v) in snapshot {
        assert!(v.iter().all(|w| *w == v[0]), "torn value {v:?} at {k}");
        assert_eq!(m.get(k).unwrap(), Some(*v), "key {k} unreachable");
    }
    assert_eq!(m.len().unwrap(), snapshot.len());
}

#[test]
fn map_writer_killed_at_random_points_loses_nothing_committed() {
    let _t = Ctx::new("map_crash");
    let m = SharedMap::<u64, Val>::new(KEYS as usize).unwrap();
    let progress = Value::new(0u64).unwrap();
    let mut model = BTreeMap::new();
    let mut done = 0u64;
    let mut rng = Rng::new();
    let (mut in_lock, mut in_flight_committed) = (0, 0);
    let rounds = 25;
    for _ in 0..rounds {
        progress.set(done).unwrap();
        let started = Event::new().unwrap();
        let c = spawn(
            child_map_churn,
            (m.clone(), progress.clone(), started.clone(), done),
        );
        started.wait_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_micros(200 + rng.next() % 5_000));
        c.kill().unwrap();
        assert!(c.join().unwrap_err().is_process_died());
        in_lock += usize::from(lock_owner_died(m.segment()));

        let p = read_repairing(&progress);
        assert!(p >= done);
        for k in done..p {
            apply_model(&mut model, k);
        }
        // Operation p may have committed before the kill, or not.
        let raw = m.to_vec().unwrap();
        let snapshot: BTreeMap<u64, Val> = raw.iter().copied().collect();
        assert_eq!(snapshot.len(), raw.len(), "duplicate keys: {raw:?}");
        let mut with_p = model.clone();
        apply_model(&mut with_p, p);
        if snapshot == model {
            done = p;
        } else if snapshot == with_p {
            in_flight_committed += 1;
            model = with_p;
            done = p + 1;
        } else {
            panic!("after op {p}: map {snapshot:?}\nexpected {model:?}\nor {with_p:?}");
        }
        check_map(&m, &model);
    }
    eprintln!(
        "{rounds} kills after {done} operations: {in_lock} inside the map's lock, \
         {in_flight_committed} with the in-flight operation committed"
    );
    assert!(done > 0);
    // Still usable: churn on in this process and compare once more.
    for k in done..done + 500 {
        apply_map(&m, k);
        apply_model(&mut model, k);
    }
    let snapshot: BTreeMap<u64, Val> = m.to_vec().unwrap().into_iter().collect();
    assert_eq!(snapshot, model);
    check_map(&m, &model);
}

// ---------------------------------------------------------------------------
// SharedMap: churn (remove a key, insert a new one) and tombstone reclamation
// ---------------------------------------------------------------------------

/// The raw slots of a map made by `new`/`create` (the object at offset 0):
/// `(state word, key)` per slot, read from the segment without the lock.
/// The layout is the module docs' (slots at 256, state word first, key at
/// 8); `slot_size` is `size_of::<Slot<K, V>>()`.
fn raw_slots(seg: &Segment, nslots: usize, slot_size: usize) -> Vec<(u32, u64)> {
    (0..nslots)
        .map(|i| {
            let at = 256 + slot_size * i;
            let (mut w, mut k) = ([0u8; 4], [0u8; 8]);
            seg.read_at(at, &mut w).unwrap();
            seg.read_at(at + 8, &mut k).unwrap();
            (u32::from_le_bytes(w), u64::from_le_bytes(k))
        })
        .collect()
}

/// Tombstones and keys held twice among raw slots (epoch 0: the map was
/// never cleared, so state words are 0 EMPTY, 1 TOMBSTONE, 2 and 3 LIVE).
fn tombstones_and_duplicates(slots: &[(u32, u64)]) -> (usize, usize) {
    let tombstones = slots.iter().filter(|(w, _)| *w == 1).count();
    let mut keys: Vec<u64> = slots
        .iter()
        .filter(|(w, _)| *w == 2 || *w == 3)
        .map(|(_, k)| *k)
        .collect();
    let live = keys.len();
    keys.sort_unstable();
    keys.dedup();
    (tombstones, live - keys.len())
}

#[test]
fn map_churn_matches_a_model_and_leaves_no_tombstones() {
    let _t = Ctx::new("map_churn");
    let (capacity, live, pairs) = (1000usize, 750u64, 200_000u64);
    let m = SharedMap::<u64, u64>::new(capacity).unwrap();
    // 1000 entries: 2048 slots of 32 bytes.
    assert_eq!(
        SharedMap::<u64, u64>::size_in_segment(capacity),
        Some(256 + 2048 * 32)
    );
    let mut rng = Rng::new();
    let mut model = HashMap::new();
    let mut keys = Vec::new();
    let mut next = 0u64;
    while keys.len() < live as usize {
        let (k, v) = (next * 0x9e37_79b9 % 1_000_003 + (next << 20), rng.next());
        next += 1;
        assert_eq!(m.insert(k, v).unwrap(), None);
        model.insert(k, v);
        keys.push(k);
    }
    let check_all = |m: &SharedMap<u64, u64>, model: &HashMap<u64, u64>, next: u64| {
        for (k, v) in model {
            assert_eq!(m.get(k).unwrap(), Some(*v), "key {k}");
        }
        // Keys never inserted, and keys inserted and removed long ago.
        for k in (0..200)
            .map(|i| u64::MAX - i)
            .chain((0..next.min(200)).map(|i| i << 20))
        {
            assert_eq!(m.get(&k).unwrap(), model.get(&k).copied(), "key {k}");
        }
        assert_eq!(m.len().unwrap(), model.len());
    };
    for pair in 0..pairs {
        // Remove an existing key, insert a never-seen one.
        let gone = keys.swap_remove((rng.next() % keys.len() as u64) as usize);
        let want = model.remove(&gone).unwrap();
        assert_eq!(m.remove(&gone).unwrap(), Some(want));
        let (k, v) = (next * 0x9e37_79b9 % 1_000_003 + (next << 20), rng.next());
        next += 1;
        assert_eq!(m.insert(k, v).unwrap(), None);
        model.insert(k, v);
        keys.push(k);
        assert_eq!(m.get(&gone).unwrap(), None);
        assert_eq!(m.get(&k).unwrap(), Some(v));
        if pair % 20_000 == 0 {
            check_all(&m, &model, next);
        }
    }
    check_all(&m, &model, next);
    let all: HashMap<u64, u64> = m.to_vec().unwrap().into_iter().collect();
    assert_eq!(all, model);
    // Reclaimed: no tombstone is left, every slot not holding a key is
    // EMPTY (marking alone would have left ~1300 tombstones and no EMPTY).
    let raw = raw_slots(m.segment(), 2048, 32);
    assert_eq!(tombstones_and_duplicates(&raw), (0, 0));
    let empty = raw.iter().filter(|(w, _)| *w == 0).count();
    assert_eq!(empty, 2048 - live as usize);
}

/// Churn of a map near its capacity, one map call per step: step `3p`
/// removes key `p` (the oldest), `3p + 1` inserts the new key `p + CHURN_LIVE`,
/// `3p + 2` overwrites a present key. Keys `p + 1 ..= p + CHURN_LIVE` are
/// present after step `3p + 1`.
const CHURN_CAP: usize = 96;
const CHURN_LIVE: u64 = 90;

fn churn_step_key(s: u64) -> u64 {
    let p = s / 3;
    match s % 3 {
        0 => p,
        1 => p + CHURN_LIVE,
        _ => p + 1 + (p * 7919) % (CHURN_LIVE - 1),
    }
}

fn churn_step_map(m: &SharedMap<u64, Val>, s: u64) {
    let k = churn_step_key(s);
    match s % 3 {
        0 => assert!(m.remove(&k).unwrap().is_some(), "step {s}: {k} absent"),
        1 => assert_eq!(m.insert(k, [s; 8]).unwrap(), None, "step {s}"),
        _ => assert!(m.insert(k, [s; 8]).unwrap().is_some(), "step {s}"),
    }
}

fn churn_step_model(m: &mut BTreeMap<u64, Val>, s: u64) {
    let k = churn_step_key(s);
    match s % 3 {
        0 => drop(m.remove(&k).unwrap()),
        _ => drop(m.insert(k, [s; 8])),
    }
}

fn child_near_full_churn(
    (m, progress, started, start): (SharedMap<u64, Val>, Value<u64>, Event, u64),
) {
    started.set();
    let mut s = start;
    loop {
        churn_step_map(&m, s);
        // Reported as committed only after the call returned.
        progress.set(s + 1).unwrap();
        s += 1;
    }
}

#[test]
fn map_churning_near_capacity_killed_at_random_points_loses_nothing_committed() {
    let _t = Ctx::new("map_churn_crash");
    let m = SharedMap::<u64, Val>::new(CHURN_CAP).unwrap();
    // 96 entries: 128 slots of 144 bytes (state, key, two [u64; 8]).
    let (nslots, slot_size) = (128, 144);
    assert_eq!(
        SharedMap::<u64, Val>::size_in_segment(CHURN_CAP),
        Some(256 + nslots * slot_size)
    );
    let mut model = BTreeMap::new();
    for k in 0..CHURN_LIVE {
        m.insert(k, [k; 8]).unwrap();
        model.insert(k, [k; 8]);
    }
    let progress = Value::new(0u64).unwrap();
    let mut done = 0u64;
    let mut rng = Rng::new();
    let (mut in_lock, mut mid_remove, mut twice, mut in_flight_committed) = (0, 0, 0, 0);
    let mut rounds = 0;
    // Kills land anywhere; go on until a few landed inside a remove's
    // backward shift (a tombstone or a key held twice seen before repair).
    while rounds < 40 || (mid_remove < 3 && rounds < 400) {
        rounds += 1;
        progress.set(done).unwrap();
        let started = Event::new().unwrap();
        let c = spawn(
            child_near_full_churn,
            (m.clone(), progress.clone(), started.clone(), done),
        );
        started.wait_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_micros(200 + rng.next() % 3_000));
        c.kill().unwrap();
        assert!(c.join().unwrap_err().is_process_died());
        in_lock += usize::from(lock_owner_died(m.segment()));
        // What the dead writer left, before anyone repairs it.
        let (tombs, dups) = tombstones_and_duplicates(&raw_slots(m.segment(), nslots, slot_size));
        assert!(dups <= 1, "{dups} keys held twice: one move at a time");
        mid_remove += usize::from(tombs + dups > 0);
        twice += dups;

        let p = read_repairing(&progress);
        assert!(p >= done);
        for s in done..p {
            churn_step_model(&mut model, s);
        }
        // The first lock repairs; then no key is held twice, no tombstone
        // is left, and the count is a recount.
        let raw = m.to_vec().unwrap();
        let snapshot: BTreeMap<u64, Val> = raw.iter().copied().collect();
        assert_eq!(snapshot.len(), raw.len(), "duplicate keys: {raw:?}");
        assert_eq!(m.len().unwrap(), raw.len(), "len is not a recount");
        assert_eq!(
            tombstones_and_duplicates(&raw_slots(m.segment(), nslots, slot_size)),
            (0, 0),
            "repair left holes or duplicates"
        );
        // Step p may have committed before the kill, or not; values are
        // old or new, never torn.
        let mut with_p = model.clone();
        churn_step_model(&mut with_p, p);
        if snapshot == model {
            done = p;
        } else if snapshot == with_p {
            in_flight_committed += 1;
            model = with_p;
            done = p + 1;
        } else {
            panic!("after step {p}: map {snapshot:?}\nexpected {model:?}\nor {with_p:?}");
        }
        check_map(&m, &model);
    }
    eprintln!(
        "{rounds} kills after {done} steps: {in_lock} inside the map's lock, {mid_remove} \
         inside a remove's backward shift ({twice} between a move's two stores), \
         {in_flight_committed} with the in-flight step committed"
    );
    assert!(
        done > 3 * CHURN_LIVE,
        "the churn went round the keys at least once"
    );
    assert!(mid_remove > 0, "no kill landed inside a backward shift");
    // Still usable: churn on in this process and compare once more.
    for s in done..done + 3_000 {
        churn_step_map(&m, s);
        churn_step_model(&mut model, s);
    }
    let snapshot: BTreeMap<u64, Val> = m.to_vec().unwrap().into_iter().collect();
    assert_eq!(snapshot, model);
    check_map(&m, &model);
}

// ---------------------------------------------------------------------------
// ShareableList: a writer killed at random points
// ---------------------------------------------------------------------------

const LIST_SLOTS: u64 = 6;

/// The value operation `k` writes (to slot `k % LIST_SLOTS`).
fn list_value(k: u64) -> Item {
    let len = 1 + (k * 7 % 64) as usize;
    if k % 3 == 0 {
        Item::Bytes(vec![(k % 251) as u8; len])
    } else {
        Item::Str(std::iter::repeat_n(char::from(b'a' + (k % 26) as u8), len).collect())
    }
}

fn child_list_churn((l, progress, started, start): (ShareableList, Value<u64>, Event, u64)) {
    started.set();
    let mut k = start;
    loop {
        l.set((k % LIST_SLOTS) as usize, list_value(k)).unwrap();
        progress.set(k + 1).unwrap();
        k += 1;
    }
}

fn uniform(item: &Item) -> bool {
    match item {
        Item::Str(s) => s.bytes().all(|b| Some(b) == s.bytes().next()),
        Item::Bytes(b) => b.iter().all(|x| Some(x) == b.first()),
        _ => false,
    }
}

#[test]
fn list_writer_killed_at_random_points_never_tears() {
    let t = Ctx::new("list_crash");
    let initial: Vec<(Item, usize)> = (0..LIST_SLOTS).map(|_| (Item::None, 64)).collect();
    let l = ShareableList::create_with_capacities(&t.name("l"), initial).unwrap();
    let progress = Value::new(0u64).unwrap();
    let mut model: Vec<Item> = vec![Item::None; LIST_SLOTS as usize];
    let mut done = 0u64;
    let mut rng = Rng::new();
    let mut in_lock = 0;
    for _ in 0..25 {
        progress.set(done).unwrap();
        let started = Event::new().unwrap();
        let c = spawn(
            child_list_churn,
            (l.clone(), progress.clone(), started.clone(), done),
        );
        started.wait_timeout(Duration::from_secs(30)).unwrap();
        std::thread::sleep(Duration::from_micros(200 + rng.next() % 5_000));
        c.kill().unwrap();
        assert!(c.join().unwrap_err().is_process_died());
        in_lock += usize::from(lock_owner_died(l.segment()));

        let p = read_repairing(&progress);
        for k in done..p {
            model[(k % LIST_SLOTS) as usize] = list_value(k);
        }
        let now = l.to_vec().unwrap();
        for item in now.iter().filter(|i| **i != Item::None) {
            assert!(uniform(item), "torn item {item:?}");
        }
        let mut with_p = model.clone();
        with_p[(p % LIST_SLOTS) as usize] = list_value(p);
        if now == model {
            done = p;
        } else if now == with_p {
            model = with_p;
            done = p + 1;
        } else {
            panic!("after op {p}: list {now:?}\nexpected {model:?}\nor {with_p:?}");
        }
    }
    eprintln!("25 kills after {done} sets: {in_lock} inside the list's lock");
    assert!(done > 0);
    l.set(0, "still usable").unwrap();
    assert_eq!(l.get(0).unwrap(), Item::from("still usable"));
}

// ---------------------------------------------------------------------------
// Handles passed to children
// ---------------------------------------------------------------------------

fn child_use_handles((m, l): (SharedMap<u64, u64>, ShareableList)) -> (Option<u64>, String) {
    m.insert(5, 50).unwrap();
    let seen = m.get(&1).unwrap();
    let item = l.get(1).unwrap();
    l.set(0, "child").unwrap();
    (seen, format!("{item:?}"))
}

#[test]
fn handles_pass_to_children_named_and_anonymous() {
    let t = Ctx::new("handles");
    let named = (
        SharedMap::<u64, u64>::create(&t.name("m"), 16).unwrap(),
        ShareableList::create(&t.name("l"), [Item::from("parent"), 7.into()]).unwrap(),
    );
    let anonymous = (
        SharedMap::<u64, u64>::new(16).unwrap(),
        ShareableList::new([Item::from("parent"), 7.into()]).unwrap(),
    );
    for (m, l) in [named, anonymous] {
        m.insert(1, 10).unwrap();
        let c = spawn(child_use_handles, (m.clone(), l.clone()));
        assert_eq!(c.join().unwrap(), (Some(10), "Int(7)".to_owned()));
        assert_eq!(m.get(&5).unwrap(), Some(50));
        assert_eq!(l.get(0).unwrap(), Item::from("child"));
    }
}

// ---------------------------------------------------------------------------
// Semantics in one process
// ---------------------------------------------------------------------------

#[test]
fn map_basic_operations() {
    let t = Ctx::new("map_basic");
    let name = t.name("m");
    let m = SharedMap::<u32, [u16; 3]>::create(&name, 10).unwrap();
    assert_eq!(m.capacity(), 10);
    assert!(m.is_empty().unwrap());
    assert_eq!(m.insert(1, [1, 1, 1]).unwrap(), None);
    assert_eq!(m.insert(1, [2, 2, 2]).unwrap(), Some([1, 1, 1]));
    assert!(m.contains_key(&1).unwrap());
    assert!(!m.contains_key(&2).unwrap());
    assert_eq!(m.update(&1, |v| v[0] = 9).unwrap(), Some(()));
    assert_eq!(m.update(&2, |v| v[0] = 9).unwrap(), None);
    assert_eq!(m.update_or_insert(7, [0; 3], |v| v[0] += 1).unwrap(), ());
    assert_eq!(m.update_or_insert(7, [0; 3], |v| v[0] += 1).unwrap(), ());
    assert_eq!(m.remove(&7).unwrap(), Some([2, 0, 0]));
    assert_eq!(m.get_or_insert(2, [5; 3]).unwrap(), [5; 3]);
    assert_eq!(m.get_or_insert(2, [6; 3]).unwrap(), [5; 3]);
    let other = SharedMap::<u32, [u16; 3]>::open(&name).unwrap();
    assert_eq!(other.capacity(), 10);
    assert_eq!(other.get(&1).unwrap(), Some([9, 2, 2]));
    let mut keys = other.keys().unwrap();
    keys.sort_unstable();
    assert_eq!(keys, [1, 2]);
    assert_eq!(other.values().unwrap().len(), 2);
    assert_eq!(m.remove(&1).unwrap(), Some([9, 2, 2]));
    assert_eq!(m.remove(&1).unwrap(), None);
    assert_eq!(other.len().unwrap(), 1);
    m.clear().unwrap();
    assert!(other.is_empty().unwrap());
    assert_eq!(other.get(&2).unwrap(), None);
    // open_or_create finds the existing map.
    let again = SharedMap::<u32, [u16; 3]>::open_or_create(&name, 99).unwrap();
    assert_eq!(again.capacity(), 10);
    // Re-entrance from an update closure is an error, not a deadlock.
    m.insert(3, [0; 3]).unwrap();
    let inner = m.update(&3, |_| m.get(&3).map(drop)).unwrap().unwrap();
    assert_eq!(inner.unwrap_err().kind(), ErrorKind::LimitExceeded);
    // A panicking closure changes nothing and releases the lock.
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        m.update(&3, |v| {
            v[0] = 1;
            panic!("boom")
        })
    }));
    assert!(r.is_err());
    assert_eq!(m.get(&3).unwrap(), Some([0; 3]));
}

#[test]
fn map_and_list_embedded_in_a_segment() {
    let seg = Segment::new(8192).unwrap();
    let m = SharedMap::<u64, u64>::create_in(&seg, 0, 8).unwrap();
    let at = SharedMap::<u64, u64>::size_in_segment(8).unwrap();
    let l = ShareableList::create_in(&seg, at, [1, 2, 3]).unwrap();
    m.insert(1, 2).unwrap();
    l.set(2, 30).unwrap();
    assert_eq!(
        SharedMap::<u64, u64>::open_in(&seg, 0)
            .unwrap()
            .get(&1)
            .unwrap(),
        Some(2)
    );
    assert_eq!(
        ShareableList::open_in(&seg, at).unwrap().get(2).unwrap(),
        Item::Int(30)
    );
}

#[test]
fn map_full_is_limit_exceeded_and_slots_are_reused() {
    let m = SharedMap::<u32, u32>::new(3).unwrap();
    for k in 0..3 {
        m.insert(k, k).unwrap();
    }
    let e = m.insert(3, 3).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert!(e.to_string().contains("map is full"), "{e}");
    assert_eq!(
        m.get_or_insert(3, 3).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    assert_eq!(
        m.insert(2, 20).unwrap(),
        Some(2),
        "existing keys still update"
    );
    // Many remove/insert cycles (tombstones everywhere) never exhaust the table.
    for round in 1..1_000u32 {
        for key in m.keys().unwrap() {
            assert!(m.remove(&key).unwrap().is_some());
        }
        for i in 0..3 {
            assert_eq!(m.insert(round * 3 + i, round).unwrap(), None);
        }
        assert_eq!(m.get(&(round * 3 + 1)).unwrap(), Some(round));
        assert_eq!(m.get(&(round * 3 - 1)).unwrap(), None);
    }
    assert_eq!(m.len().unwrap(), 3);
    assert_eq!(
        SharedMap::<u8, u8>::new(0).unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
}

#[test]
fn wrong_types_kinds_and_missing_names() {
    let t = Ctx::new("map_wrong");
    let name = t.name("m");
    let _m = SharedMap::<u64, u64>::create(&name, 4).unwrap();
    for e in [
        SharedMap::<u32, u64>::open(&name).unwrap_err(),
        SharedMap::<u64, u32>::open(&name).unwrap_err(),
        SharedMap::<i64, u64>::open(&name).unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::WrongType, "{e}");
    }
    let e = SharedMap::<u32, u64>::open(&name).unwrap_err();
    assert!(e.to_string().contains("(u64, u64)"), "{e}");
    assert_eq!(
        ShareableList::open(&name).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    assert_eq!(
        Value::<u64>::open(&name).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    let v = t.name("v");
    let _v = Value::create(&v, 1u64).unwrap();
    let e = SharedMap::<u64, u64>::open(&v).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::WrongKind);
    assert!(
        e.to_string()
            .contains("segment holds a Value, not a SharedMap"),
        "{e}"
    );
    assert_eq!(
        ShareableList::open(&v).unwrap_err().kind(),
        ErrorKind::WrongKind
    );
    let missing = t.name("missing");
    assert_eq!(
        SharedMap::<u64, u64>::open(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        ShareableList::open(&missing).unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        SharedMap::<u64, u64>::create(&name, 4).unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
}

#[test]
fn list_semantics_like_python() {
    let t = Ctx::new("list_basic");
    let name = t.name("l");
    let l = ShareableList::create(
        &name,
        [
            Item::from("howdy"),
            b"HoWdY".into(),
            Item::from(-273.154),
            100.into(),
            Item::None,
            true.into(),
            42.into(),
        ],
    )
    .unwrap();
    assert_eq!(l.len(), 7);
    assert_eq!(l.slot_capacity(0).unwrap(), 8);
    assert_eq!(l.get(2).unwrap(), Item::Float(-273.154));
    let other = ShareableList::open(&name).unwrap();
    assert_eq!(other.to_vec().unwrap(), l.to_vec().unwrap());
    // Slots may change type within their capacity.
    l.set(2, "a str").unwrap();
    l.set(0, 7).unwrap();
    l.set(4, Some(1.5)).unwrap();
    l.set(6, None::<i64>).unwrap();
    l.set(1, "").unwrap();
    assert_eq!(
        other.to_vec().unwrap(),
        [
            Item::Int(7),
            Item::Str(String::new()),
            Item::from("a str"),
            Item::Int(100),
            Item::Float(1.5),
            Item::Bool(true),
            Item::None,
        ]
    );
    assert_eq!(other.index(&Item::Int(100)).unwrap(), Some(3));
    assert_eq!(other.index(&Item::Int(101)).unwrap(), None);
    l.set(3, 7).unwrap();
    assert_eq!(other.count(&Item::Int(7)).unwrap(), 2);
    // Unicode: capacity is in bytes.
    l.set(0, "ünïcödé").unwrap_err();
    l.set(0, "ünï").unwrap();
    assert_eq!(other.get(0).unwrap(), Item::from("ünï"));
    let empty = ShareableList::new(Vec::<Item>::new()).unwrap();
    assert!(empty.is_empty());
    assert_eq!(empty.to_vec().unwrap(), []);
}

#[test]
fn list_index_and_capacity_errors() {
    let l = ShareableList::new_with_capacities([(Item::from("ab"), 20), (Item::None, 0)]).unwrap();
    assert_eq!(l.slot_capacity(0).unwrap(), 24);
    assert_eq!(l.slot_capacity(1).unwrap(), 8);
    let e = l.get(2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutOfRange);
    assert!(e.to_string().contains("index out of range"), "{e}");
    assert_eq!(l.set(5, 1).unwrap_err().kind(), ErrorKind::OutOfRange);
    assert_eq!(
        l.slot_capacity(2).unwrap_err().kind(),
        ErrorKind::OutOfRange
    );
    let e = l.set(1, "nine char").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LimitExceeded);
    assert!(
        e.to_string()
            .contains("a str of 9 bytes exceeds the slot's capacity of 8 bytes"),
        "{e}"
    );
    l.set(0, vec![1u8; 24]).unwrap();
    assert_eq!(
        l.set(0, vec![1u8; 25]).unwrap_err().kind(),
        ErrorKind::LimitExceeded
    );
    assert_eq!(
        l.get(0).unwrap(),
        Item::Bytes(vec![1; 24]),
        "unchanged by the failed set"
    );
    let e =
        ShareableList::new_with_capacities([(Item::from("too long for eight"), 8)]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

// ---------------------------------------------------------------------------
// Untrusted bytes
// ---------------------------------------------------------------------------

/// Runs every operation on a map; each may fail, none may panic.
fn exercise_map(m: &SharedMap<u64, u64>) {
    let _ = m.len();
    let _ = m.to_vec();
    for k in 0..10u64 {
        let _ = m.get(&k);
        let _ = m.contains_key(&k);
        let _ = m.update(&k, |v| *v += 1);
        let _ = m.insert(k, k);
        let _ = m.remove(&(k / 2));
        let _ = m.get_or_insert(k + 100, 1);
    }
    let _ = m.keys();
    let _ = m.clear();
    let _ = m.len();
}

fn exercise_list(l: &ShareableList) {
    let _ = l.to_vec();
    for i in 0..l.len() + 1 {
        let _ = l.get(i);
        let _ = l.slot_capacity(i);
        let _ = l.set(i, "x");
        let _ = l.get(i);
    }
    let _ = l.index(&Item::Int(3));
    let _ = l.count(&Item::None);
}

fn slot_state() -> impl Strategy<Value = u32> {
    prop_oneof![4 => 0u32..4, 1 => any::<u32>()]
}

fn list_state() -> impl Strategy<Value = u64> {
    let plausible = (0u64..2, 0u64..8, 0u64..40)
        .prop_map(|(live, tag, len)| (0x5C17 << 48) | (live << 40) | (tag << 32) | len);
    prop_oneof![3 => plausible, 1 => any::<u64>()]
}

/// A segment holding a valid header for `kind` with the given parameter
/// and length; `payload` follows the lock (which stays zeroed: glibc's
/// default mutex).
fn forged(
    kind: ObjectKind,
    ty: TypeFingerprint,
    param: u64,
    len: usize,
    payload: &[u8],
) -> Segment {
    let seg = Segment::new(len.max(256)).unwrap();
    let h = Header::new(kind, ty, len as u64, param);
    seg.write_at(0, &h.encode()).unwrap();
    seg.write_at(STATE_OFFSET, &STATE_READY.to_le_bytes())
        .unwrap();
    let room = seg.len() - 192;
    seg.write_at(192, &payload[..payload.len().min(room)])
        .unwrap();
    seg
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    /// A map whose count and slots hold anything: every operation is an
    /// error or a result, never a panic or a hang.
    #[test]
    fn map_with_arbitrary_slots_never_panics(
        len in prop_oneof![0u64..20, any::<u64>()],
        slots in proptest::collection::vec((slot_state(), 0u64..8, any::<[u64; 2]>()), 16),
    ) {
        let m = SharedMap::<u64, u64>::new(8).unwrap();
        let seg = m.segment();
        seg.write_at(192, &len.to_le_bytes()).unwrap();
        for (i, (state, key, vals)) in slots.iter().enumerate() {
            let at = 256 + 32 * i;
            seg.write_at(at, &state.to_le_bytes()).unwrap();
            seg.write_at(at + 8, &key.to_le_bytes()).unwrap();
            seg.write_at(at + 16, &vals[0].to_le_bytes()).unwrap();
            seg.write_at(at + 24, &vals[1].to_le_bytes()).unwrap();
        }
        let reopened = SharedMap::<u64, u64>::open_in(seg, 0).unwrap();
        // An invalid state word is reported (until `clear` overwrites it).
        let invalid = slots.iter().any(|s| s.0 & 0xff > 3);
        prop_assert!(!invalid || m.to_vec().unwrap_err().kind() == ErrorKind::Corrupt);
        exercise_map(&reopened);
    }

    /// A list whose states and buffers hold anything.
    #[test]
    fn list_with_arbitrary_slots_never_panics(
        states in proptest::collection::vec(list_state(), 4),
        data in proptest::collection::vec(any::<u8>(), 4 * 64),
    ) {
        let l = ShareableList::new_with_capacities((0..4).map(|_| (Item::None, 32))).unwrap();
        let seg = l.segment();
        // Table at 192 (4 × 8), states at 224 (4 × 8), data at 256.
        for (i, s) in states.iter().enumerate() {
            seg.write_at(224 + 8 * i, &s.to_le_bytes()).unwrap();
        }
        seg.write_at(256, &data).unwrap();
        exercise_list(&ShareableList::open_in(seg, 0).unwrap());
    }

    /// Forged headers with any parameter and length, over any payload:
    /// opening fails cleanly or yields an object that behaves.
    #[test]
    fn forged_headers_never_panic(
        param in prop_oneof![0u64..64, any::<u64>()],
        len in 128usize..2048,
        caps in proptest::collection::vec(prop_oneof![Just(8u64), Just(16), Just(0), Just(7), any::<u64>()], 0..8),
        payload in proptest::collection::vec(any::<u8>(), 0..1024),
        list in any::<bool>(),
    ) {
        if list {
            let mut bytes: Vec<u8> = caps.iter().flat_map(|c| c.to_le_bytes()).collect();
            bytes.extend(&payload);
            // Sometimes a length that matches the capacities.
            let sum: u64 = caps.iter().fold(0u64, |a, c| a.saturating_add(c.saturating_mul(2)));
            let fit = (192 + 16 * caps.len() as u64).saturating_add(sum);
            let len = if param % 2 == 0 && fit < 4096 { fit.div_ceil(64) as usize * 64 } else { len };
            let param = if param % 3 == 0 { caps.len() as u64 } else { param };
            let seg = forged(ObjectKind::ShareableList, TypeFingerprint::NONE, param, len, &bytes);
            if let Ok(l) = ShareableList::open_in(&seg, 0) {
                exercise_list(&l);
            } else {
                let e = ShareableList::open_in(&seg, 0).unwrap_err();
                prop_assert_eq!(e.kind(), ErrorKind::Corrupt, "{}", e);
            }
        } else {
            let ty = TypeFingerprint::of::<(u64, u64)>();
            // Sometimes a length that matches the capacity.
            let (param, len) = if param % 2 == 0 {
                let cap = (param % 40) as usize;
                (cap as u64, SharedMap::<u64, u64>::size_in_segment(cap).unwrap_or(len))
            } else {
                (param, len)
            };
            let seg = forged(ObjectKind::SharedMap, ty, param, len, &payload);
            match SharedMap::<u64, u64>::open_in(&seg, 0) {
                Ok(m) => exercise_map(&m),
                Err(e) => prop_assert_eq!(e.kind(), ErrorKind::Corrupt, "{}", e),
            }
        }
    }

    /// Arbitrary bytes in a segment are never accepted as a collection.
    #[test]
    fn arbitrary_segments_are_rejected(bytes in proptest::collection::vec(any::<u8>(), 1..1024)) {
        let seg = Segment::new(bytes.len()).unwrap();
        let mut bytes = bytes;
        if bytes.len() >= 12 {
            bytes[STATE_OFFSET..STATE_OFFSET + 4].copy_from_slice(&STATE_READY.to_le_bytes());
        }
        seg.write_at(0, &bytes).unwrap();
        prop_assert!(SharedMap::<u64, u64>::open_in(&seg, 0).is_err());
        prop_assert!(ShareableList::open_in(&seg, 0).is_err());
    }

    /// A handle decoded from arbitrary bytes is an error, never a panic.
    #[test]
    fn arbitrary_handle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let _ = postcard::from_bytes::<SharedMap<u64, u64>>(&bytes);
        let _ = postcard::from_bytes::<ShareableList>(&bytes);
    }

    /// Random operations agree with std's HashMap (tombstones, reuse, and
    /// the clean-up of tombstone runs included).
    #[test]
    fn map_agrees_with_a_model(ops in proptest::collection::vec((0u8..5, 0u16..40, any::<u32>()), 1..300)) {
        let m = SharedMap::<u16, u32>::new(24).unwrap();
        let mut model = HashMap::new();
        for (op, k, v) in ops {
            match op {
                0 | 1 => {
                    let r = m.insert(k, v);
                    if model.contains_key(&k) || model.len() < 24 {
                        prop_assert_eq!(r.unwrap(), model.insert(k, v));
                    } else {
                        prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::LimitExceeded);
                    }
                }
                2 if v % 2 == 0 => prop_assert_eq!(m.remove(&k).unwrap(), model.remove(&k)),
                2 => {
                    let r = m.update_or_insert(k, v, |x| { *x = x.wrapping_add(1); *x });
                    if model.contains_key(&k) || model.len() < 24 {
                        let x = model.entry(k).or_insert(v);
                        *x = x.wrapping_add(1);
                        prop_assert_eq!(r.unwrap(), *x);
                    } else {
                        prop_assert_eq!(r.unwrap_err().kind(), ErrorKind::LimitExceeded);
                    }
                }
                3 => prop_assert_eq!(m.get(&k).unwrap(), model.get(&k).copied()),
                _ => {
                    if v % 50 == 0 {
                        m.clear().unwrap();
                        model.clear();
                    } else {
                        prop_assert_eq!(m.update(&k, |x| *x ^= v).unwrap(), model.get_mut(&k).map(|x| { *x ^= v; }));
                    }
                }
            }
            prop_assert_eq!(m.len().unwrap(), model.len());
        }
        let mut all = m.to_vec().unwrap();
        all.sort_unstable();
        let mut want: Vec<_> = model.into_iter().collect();
        want.sort_unstable();
        prop_assert_eq!(all, want);
    }
}
