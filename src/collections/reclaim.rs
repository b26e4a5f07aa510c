//! Tombstone reclamation for the table of a [`SharedMap`](super::SharedMap):
//! backward-shift deletion and the repair after a holder's death.
//!
//! Both are written against an abstract [`Table`], whose every mutating
//! method is exactly one committed store, so they are pure code (no shared
//! memory, no syscalls): the unit tests below run them on a model table —
//! under Miri too — and crash them after every single store. The algorithm,
//! its commit points and its crash argument are described in the module
//! docs of `shared_map.rs` ("Tombstone reclamation"); the proof obligations
//! sit next to the code here.
//!
//! Terms: a key at slot `j` whose home slot is `h` has the *probe path*
//! `h, h+1, …, j-1` (cyclically; empty if `j == h`). The table's invariant,
//! on which every lookup relies, is that no probe path holds an `EMPTY`
//! slot. A *hole* is a `TOMBSTONE` slot.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;

use crate::error::Result;

/// One slot as reclamation sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cell<K> {
    Empty,
    Tombstone,
    Live(K),
}

/// The table operations reclamation is written against. `slots()` is a
/// power of two. Each mutating method is **one** committed store (the
/// bytes it writes before that store sit where no lookup reads them), so a
/// process killed inside any of them leaves the slot's old or new state.
pub(super) trait Table {
    type Key: Eq + Hash;
    fn slots(&self) -> usize;
    fn cell(&self, i: usize) -> Result<Cell<Self::Key>>;
    /// The home slot of `k`.
    fn home(&self, k: &Self::Key) -> usize;
    /// Writes the key and the current value of `LIVE` slot `from` into
    /// `TOMBSTONE` slot `to`, then commits `to` as `LIVE`. `from` is not
    /// changed: until [`bury`](Table::bury)`(from)`, the key is in both.
    fn copy(&self, from: usize, to: usize) -> Result<()>;
    /// Commits `LIVE` slot `i` as `TOMBSTONE`.
    fn bury(&self, i: usize) -> Result<()>;
    /// Commits `TOMBSTONE` slot `i` as `EMPTY`.
    fn vacate(&self, i: usize) -> Result<()>;
}

/// How many holes one [`backshift`] keeps track of. One is all a table
/// kept by this module ever needs (each move fills a hole and makes one);
/// more are met only after crashes or in tables written by older versions,
/// and a tombstone met when the list is full simply stays a tombstone.
const MAX_HOLES: usize = 16;

/// The holes seen by a [`backshift`] scan, as offsets from its start slot,
/// in ascending order (the scan pushes them as it meets them).
#[derive(Debug)]
struct Holes {
    offs: [usize; MAX_HOLES],
    len: usize,
}

impl Holes {
    /// The start slot (offset 0) is the first hole.
    #[inline]
    fn new() -> Holes {
        Holes {
            offs: [0; MAX_HOLES],
            len: 1,
        }
    }

    /// Adds the hole at `off` (larger than every listed offset), if there
    /// is room.
    #[inline]
    fn push(&mut self, off: usize) {
        debug_assert!(self.offsets().last().is_none_or(|&l| l < off));
        if self.len < MAX_HOLES {
            self.offs[self.len] = off;
            self.len += 1;
        }
    }

    /// Removes and returns the first hole at offset `lo` or after.
    #[inline]
    fn take_from(&mut self, lo: usize) -> Option<usize> {
        let i = self.offsets().iter().position(|&q| q >= lo)?;
        let q = self.offs[i];
        self.offs.copy_within(i + 1..self.len, i);
        self.len -= 1;
        Some(q)
    }

    #[inline]
    fn offsets(&self) -> &[usize] {
        &self.offs[..self.len]
    }
}

/// Closes the hole at `start` (a `TOMBSTONE`) by backward-shift deletion:
/// Knuth's algorithm R (TAOCP vol. 3, §6.4), generalised to a table that
/// may hold other tombstones.
///
/// The scan walks forward from `start` to the next `EMPTY` slot, listing
/// holes as it meets them (`start`, tombstones, slots vacated by moves). A
/// key at slot `j` whose probe path holds a listed hole moves to the first
/// such hole `q`: [`copy`](Table::copy) to `q` (committed `LIVE`; the key
/// is now in two slots, with the same value), then [`bury`](Table::bury)
/// `j`, which becomes a listed hole. Its new path is a prefix of its old
/// one, so it holds no `EMPTY` slot. Holes stay tombstones during the scan,
/// so the invariant holds after every store.
///
/// At the `EMPTY` slot `e`, no probe path crosses a listed hole `q`, so each
/// becomes `EMPTY` (one store each, in any order):
/// - a key outside `start..e` whose path held `q` would hold `e` too;
/// - a key at `j` in `start..e` that stayed: `q` was listed when `j` was
///   scanned (holes are listed in scan order and never come back once
///   filled), and a listed hole on its path would have made it move;
/// - a key moved to `q'`: it took the *first* listed hole on its path, so
///   no listed hole lies between its home and `q'`, and none is listed
///   later there (the scan only lists slots after `j`).
///
/// No user code runs between a `copy` and its `bury` (homes are computed
/// before), so a panicking `K::hash` leaves holes, never a duplicate.
///
/// Returns whether an `EMPTY` slot ended the scan. A table with no `EMPTY`
/// slot at all (written by an older version, or forged) has no such end:
/// the scan then covers the whole table and [`vacate_uncrossed`] decides
/// which holes can go; `false` is returned.
pub(super) fn backshift<T: Table>(t: &T, start: usize) -> Result<bool> {
    let n = t.slots();
    let mask = n - 1;
    let at = |off: usize| start.wrapping_add(off) & mask;
    let mut holes = Holes::new();
    for off in 1..n {
        let j = at(off);
        match t.cell(j)? {
            Cell::Empty => {
                for &q in holes.offsets() {
                    t.vacate(at(q))?;
                }
                return Ok(true);
            }
            Cell::Tombstone => holes.push(off),
            Cell::Live(k) => {
                // The path is home..j. A home at an offset past `off` lies
                // before `start`: the path enters the scan at `start`.
                let home = t.home(&k).wrapping_sub(start) & mask;
                let entry = if home > off { 0 } else { home };
                if let Some(q) = holes.take_from(entry) {
                    t.copy(j, at(q))?;
                    // A death here leaves the key in slots `q` and `j`:
                    // lookups find `q` first; `repair` buries `j`.
                    t.bury(j)?;
                    holes.push(off);
                }
            }
        }
    }
    vacate_uncrossed(t)?;
    Ok(false)
}

/// Makes `EMPTY` every `TOMBSTONE` that lies on no key's probe path, in
/// two backward laps over the table. `reach` counts how many more slots,
/// going backwards, the paths of the keys passed so far still cover; a
/// path is shorter than the table, so after one lap every key that can
/// cover a slot has been passed, and the second lap decides.
fn vacate_uncrossed<T: Table>(t: &T) -> Result<()> {
    let n = t.slots();
    let mask = n - 1;
    let mut reach = 0usize;
    for step in 0..2 * n {
        let p = mask - (step & mask);
        let cell = t.cell(p)?;
        if step >= n && reach == 0 && cell == Cell::Tombstone {
            t.vacate(p)?;
        }
        let disp = match &cell {
            Cell::Live(k) => p.wrapping_sub(t.home(k)) & mask,
            _ => 0,
        };
        reach = reach.saturating_sub(1).max(disp);
    }
    Ok(())
}

/// Repairs a table whose last writer died at any store of any operation
/// (this module's or the map's), and returns its number of keys.
///
/// 1. A move cut short between its `copy` and its `bury` left one key in
///    two slots with the same value. Lookups find the copy nearer its
///    home; the other one is buried (one store). (A forged table may hold a
///    key more often: all but the nearest copy are buried.)
/// 2. Every hole (left by a cut-short remove or move, or by older
///    versions) is closed by [`backshift`].
/// 3. The keys are counted.
///
/// Each step is made of the same single-store transitions as the map's own
/// operations, so a repair killed half-way is finished by the next one.
/// Step 1 holds one entry per key in process memory (at most the table's
/// slot count).
pub(super) fn repair<T: Table>(t: &T) -> Result<usize> {
    let n = t.slots();
    let mask = n - 1;
    let mut nearest: HashMap<T::Key, (usize, usize)> = HashMap::new();
    for i in 0..n {
        if let Cell::Live(k) = t.cell(i)? {
            let disp = i.wrapping_sub(t.home(&k)) & mask;
            match nearest.entry(k) {
                Entry::Vacant(e) => {
                    e.insert((i, disp));
                }
                Entry::Occupied(mut e) => {
                    let (other, other_disp) = *e.get();
                    if disp < other_disp {
                        t.bury(other)?;
                        e.insert((i, disp));
                    } else {
                        t.bury(i)?;
                    }
                }
            }
        }
    }
    drop(nearest);
    // Without an EMPTY slot a backshift costs three passes over the whole
    // table; after two such, leave the remaining holes to later removes.
    let mut full_scans = 0;
    for i in 0..n {
        if t.cell(i)? == Cell::Tombstone && !backshift(t, i)? {
            full_scans += 1;
            if full_scans == 2 {
                break;
            }
        }
    }
    let mut live = 0;
    for i in 0..n {
        if let Cell::Live(_) = t.cell(i)? {
            live += 1;
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    //! A model table: slots in a `RefCell<Vec>`, homes from a per-test
    //! table, and a store budget: the store that would exceed it fails
    //! instead (the process "dies" just before it), so every test can crash
    //! an algorithm at each of its stores and look at what it left.

    use std::cell::{Cell as StdCell, RefCell};
    use std::collections::HashMap;

    use super::*;
    use crate::error::{Error, ErrorKind};

    type Key = u8;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum S {
        Empty,
        Tomb,
        Live(Key, u32),
    }

    struct Model {
        slots: RefCell<Vec<S>>,
        /// `homes[k]`: the home slot of key `k`.
        homes: Vec<usize>,
        /// Stores left before the "crash"; `usize::MAX`: never.
        budget: StdCell<usize>,
    }

    impl Model {
        fn new(n: usize, homes: Vec<usize>) -> Model {
            Model {
                slots: RefCell::new(vec![S::Empty; n]),
                homes,
                budget: StdCell::new(usize::MAX),
            }
        }

        fn store(&self, i: usize, s: S) -> Result<()> {
            let b = self.budget.get();
            if b == 0 {
                return Err(Error::new(ErrorKind::ProcessDied, "crashed"));
            }
            self.budget.set(b.saturating_sub(1));
            self.slots.borrow_mut()[i] = s;
            Ok(())
        }

        fn get(&self, i: usize) -> S {
            self.slots.borrow()[i]
        }

        fn mask(&self) -> usize {
            self.slots.borrow().len() - 1
        }

        /// A lookup as `SharedMap::find` does it: the first copy on the
        /// key's path; `Err(slot)` is where an insert would go.
        fn find(&self, k: Key) -> std::result::Result<(usize, u32), Option<usize>> {
            let mut free = None;
            for step in 0..=self.mask() {
                let i = (self.homes[k as usize] + step) & self.mask();
                match self.get(i) {
                    S::Empty => return Err(free.or(Some(i))),
                    S::Tomb => {
                        free.get_or_insert(i);
                    }
                    S::Live(k2, v) if k2 == k => return Ok((i, v)),
                    S::Live(..) => {}
                }
            }
            Err(free)
        }

        fn insert(&self, k: Key, v: u32) -> Result<()> {
            match self.find(k) {
                Ok((i, _)) => self.store(i, S::Live(k, v)),
                Err(Some(i)) => self.store(i, S::Live(k, v)),
                Err(None) => panic!("model table full"),
            }
        }

        /// `SharedMap::remove`: bury, then close the hole.
        fn remove(&self, k: Key) -> Result<bool> {
            let Ok((i, _)) = self.find(k) else {
                return Ok(false);
            };
            self.bury(i)?;
            backshift(self, i)?;
            Ok(true)
        }

        fn count(&self, want: S) -> usize {
            self.slots.borrow().iter().filter(|s| **s == want).count()
        }

        fn live(&self) -> usize {
            let s = self.slots.borrow();
            s.iter().filter(|s| matches!(s, S::Live(..))).count()
        }

        /// Every key of `want` is found with its value, every other key of
        /// the key space is not, and no path holds an EMPTY slot.
        fn check(&self, want: &HashMap<Key, u32>) {
            for k in 0..self.homes.len() as Key {
                let got = self.find(k).ok().map(|(_, v)| v);
                assert_eq!(got, want.get(&k).copied(), "key {k} in {:?}", self.slots);
            }
            let n = self.mask() + 1;
            for j in 0..n {
                if let S::Live(k, _) = self.get(j) {
                    let mut i = self.homes[k as usize];
                    while i != j {
                        assert_ne!(self.get(i), S::Empty, "path of {k} broken");
                        i = (i + 1) & self.mask();
                    }
                }
            }
        }
    }

    impl Table for Model {
        type Key = Key;

        fn slots(&self) -> usize {
            self.mask() + 1
        }

        fn cell(&self, i: usize) -> Result<Cell<Key>> {
            Ok(match self.get(i) {
                S::Empty => Cell::Empty,
                S::Tomb => Cell::Tombstone,
                S::Live(k, _) => Cell::Live(k),
            })
        }

        fn home(&self, k: &Key) -> usize {
            self.homes[*k as usize]
        }

        fn copy(&self, from: usize, to: usize) -> Result<()> {
            assert_eq!(self.get(to), S::Tomb, "copy into a non-hole");
            let S::Live(k, v) = self.get(from) else {
                panic!("copy from a non-key");
            };
            self.store(to, S::Live(k, v))
        }

        fn bury(&self, i: usize) -> Result<()> {
            assert!(matches!(self.get(i), S::Live(..)), "bury a non-key");
            self.store(i, S::Tomb)
        }

        fn vacate(&self, i: usize) -> Result<()> {
            assert_eq!(self.get(i), S::Tomb, "vacate a non-hole");
            self.store(i, S::Empty)
        }
    }

    /// xorshift64: the tests' randomness, fixed seeds.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Homes for `keys` keys in `n` slots: some crowded into a few slots
    /// (long clusters), the rest anywhere (wrap-around included).
    fn homes(rng: &mut Rng, keys: usize, n: usize) -> Vec<usize> {
        let crowd = rng.below(n);
        (0..keys)
            .map(|_| {
                if rng.below(3) == 0 {
                    (crowd + rng.below(3)) % n
                } else {
                    rng.below(n)
                }
            })
            .collect()
    }

    const N: usize = 16;
    /// Keys in the model's key space; at most `LIMIT` present at once
    /// (SharedMap's load factor of 3/4).
    const KEYS: usize = 40;
    const LIMIT: usize = N * 3 / 4;
    const ROUNDS: usize = if cfg!(miri) { 3 } else { 40 };
    const OPS: usize = if cfg!(miri) { 60 } else { 400 };
    /// Each crash round replays one remove and its repair after every store.
    const CRASH_ROUNDS: usize = if cfg!(miri) { 1 } else { 40 };

    /// A random operation on model table and reference map alike.
    fn random_op(rng: &mut Rng, t: &Model, want: &mut HashMap<Key, u32>) {
        let k = rng.below(KEYS) as Key;
        let v = rng.next() as u32;
        if rng.below(2) == 0 && (want.contains_key(&k) || want.len() < LIMIT) {
            t.insert(k, v).unwrap();
            want.insert(k, v);
        } else {
            assert_eq!(t.remove(k).unwrap(), want.remove(&k).is_some());
        }
    }

    #[test]
    fn holes_take_the_first_at_or_after() {
        let mut h = Holes::new();
        h.push(3);
        h.push(5);
        assert_eq!(h.take_from(1), Some(3));
        assert_eq!(h.offsets(), &[0, 5]);
        assert_eq!(h.take_from(6), None);
        assert_eq!(h.take_from(0), Some(0));
        h.push(9);
        assert_eq!(h.offsets(), &[5, 9]);
        for off in 10..10 + MAX_HOLES {
            h.push(off);
        }
        assert_eq!(h.offsets().len(), MAX_HOLES, "a full list drops new holes");
        assert_eq!(h.take_from(9), Some(9));
    }

    #[test]
    fn removals_leave_no_tombstone_and_lookups_stay_right() {
        for seed in 1..=ROUNDS as u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let t = Model::new(N, homes(&mut rng, KEYS, N));
            let mut want = HashMap::new();
            for _ in 0..OPS {
                random_op(&mut rng, &t, &mut want);
                assert_eq!(t.count(S::Tomb), 0, "{:?}", t.slots);
                assert_eq!(t.live(), want.len());
            }
            t.check(&want);
        }
    }

    #[test]
    fn a_remove_killed_at_any_store_is_repaired() {
        for seed in 1..=CRASH_ROUNDS as u64 {
            let mut rng = Rng(seed.wrapping_mul(0xd1b5_4a32_d192_ed03));
            let homes = homes(&mut rng, KEYS, N);
            // A table near the load limit, and a key to remove.
            let base = Model::new(N, homes.clone());
            let mut want = HashMap::new();
            for _ in 0..OPS / 4 {
                random_op(&mut rng, &base, &mut want);
            }
            while want.len() < LIMIT {
                random_op(&mut rng, &base, &mut want);
            }
            let victim = *want.keys().nth(rng.below(want.len())).unwrap();
            let mut after = want.clone();
            after.remove(&victim);
            for budget in 0.. {
                let t = Model::new(N, homes.clone());
                *t.slots.borrow_mut() = base.slots.borrow().clone();
                t.budget.set(budget);
                if t.remove(victim).is_ok() {
                    t.check(&after);
                    break;
                }
                // Killed before store `budget`: lookups are already right
                // (the victim gone once its bury is committed)...
                t.check(if budget == 0 { &want } else { &after });
                // ...and a repair, itself killed anywhere, then finished,
                // leaves one copy per key, no holes, the right count.
                let left = t.slots.borrow().clone();
                for cut in [0, 1, 2, usize::MAX] {
                    *t.slots.borrow_mut() = left.clone();
                    t.budget.set(cut);
                    if repair(&t).is_err() {
                        t.budget.set(usize::MAX);
                        repair(&t).unwrap();
                    }
                    let live = repair(&t).unwrap();
                    let sure = if budget == 0 { &want } else { &after };
                    assert_eq!(live, sure.len());
                    assert_eq!(t.count(S::Tomb), 0, "{:?}", t.slots);
                    t.check(sure);
                }
            }
        }
    }

    #[test]
    fn repair_closes_the_tombstones_of_older_versions() {
        // Older versions removed by marking only: many holes per cluster,
        // which is where the choice of the *first* hole matters.
        for seed in 1..=ROUNDS as u64 {
            let mut rng = Rng(seed.wrapping_mul(0x94d0_49bb_1331_11eb));
            let t = Model::new(N, homes(&mut rng, KEYS, N));
            let mut want = HashMap::new();
            for _ in 0..OPS {
                let k = rng.below(KEYS) as Key;
                if rng.below(2) == 0 && (want.contains_key(&k) || want.len() < LIMIT) {
                    let v = rng.next() as u32;
                    t.insert(k, v).unwrap();
                    want.insert(k, v);
                } else if let Ok((i, _)) = t.find(k) {
                    t.bury(i).unwrap();
                    want.remove(&k);
                }
            }
            t.check(&want);
            let had_empty = t.count(S::Empty) > 0;
            assert_eq!(repair(&t).unwrap(), want.len());
            t.check(&want);
            if had_empty {
                assert_eq!(t.count(S::Tomb), 0, "{:?}", t.slots);
            }
        }
    }

    #[test]
    fn repair_keeps_the_nearest_copy_of_a_duplicate() {
        // Key 0 (home 1) at 1 and 3, key 1 (home 1) at 2: the state after
        // `copy(3, 1)` of a move whose `bury(3)` never happened.
        let t = Model::new(8, vec![1, 1]);
        *t.slots.borrow_mut() = vec![
            S::Empty,
            S::Live(0, 7),
            S::Live(1, 8),
            S::Live(0, 7),
            S::Empty,
            S::Empty,
            S::Empty,
            S::Empty,
        ];
        assert_eq!(repair(&t).unwrap(), 2);
        assert_eq!(t.get(1), S::Live(0, 7));
        assert_eq!(t.get(2), S::Live(1, 8));
        assert_eq!(t.count(S::Empty), 6);
        t.check(&HashMap::from([(0, 7), (1, 8)]));
    }

    #[test]
    fn tables_without_an_empty_slot_are_opened_up() {
        // Written by an older version: tombstones everywhere, no EMPTY.
        // Key k has home 2k; key 0 at 1 wraps (path 0), key 3 at 0 wraps
        // (path 6, 7).
        let t = Model::new(8, vec![0, 2, 4, 6]);
        *t.slots.borrow_mut() = vec![
            S::Live(3, 30),
            S::Live(0, 0),
            S::Tomb,
            S::Tomb,
            S::Live(2, 20),
            S::Tomb,
            S::Tomb,
            S::Tomb,
        ];
        let want = HashMap::from([(0, 0), (2, 20), (3, 30)]);
        t.check(&want);
        assert!(!backshift(&t, 2).unwrap(), "no EMPTY ended the scan");
        t.check(&want);
        assert_eq!(t.count(S::Tomb), 0, "{:?}", t.slots);
        // Every key back home.
        assert_eq!(t.get(0), S::Live(0, 0));
        assert_eq!(t.get(4), S::Live(2, 20));
        assert_eq!(t.get(6), S::Live(3, 30));
    }

    #[test]
    fn only_uncrossed_tombstones_are_vacated() {
        for seed in 1..=ROUNDS as u64 {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            let n = 8;
            let homes: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            // Keys placed anywhere, tombstones in between, no EMPTY: every
            // displacement is a valid probe path.
            let t = Model::new(n, homes);
            let mut want = HashMap::new();
            let mut keys: Vec<Key> = (0..n as Key).collect();
            for i in 0..n {
                if rng.below(2) == 0 {
                    let k = keys.swap_remove(rng.below(keys.len()));
                    t.slots.borrow_mut()[i] = S::Live(k, i as u32);
                    want.insert(k, i as u32);
                } else {
                    t.slots.borrow_mut()[i] = S::Tomb;
                }
            }
            let crossed = |i: usize| {
                (0..n).any(|j| match t.get(j) {
                    S::Live(k, _) => {
                        let h = t.homes[k as usize];
                        (i.wrapping_sub(h) & (n - 1)) < (j.wrapping_sub(h) & (n - 1))
                    }
                    _ => false,
                })
            };
            let expect: Vec<bool> = (0..n).map(|i| t.get(i) == S::Tomb && !crossed(i)).collect();
            let before = t.slots.borrow().clone();
            vacate_uncrossed(&t).unwrap();
            for (i, vacated) in expect.into_iter().enumerate() {
                assert_eq!(t.get(i) == S::Empty, vacated, "slot {i} of {before:?}");
            }
            t.check(&want);
        }
    }
}
