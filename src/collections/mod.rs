//! Server-less shared-memory containers: [`SharedMap`] and [`ShareableList`].
//!
//! Python shares a `dict` or a `list` between processes through a
//! `Manager` server; ipckit can do that too, but these two containers need
//! no server at all. Each lives in **one** shared-memory segment, guarded by
//! ipckit's robust process-shared lock, and every process that maps the
//! segment reads and writes it directly.
//!
//! | Python | ipckit |
//! |---|---|
//! | `Manager().dict()` of fixed-size keys and values | [`SharedMap`]`<K, V>` (fixed capacity) |
//! | `shared_memory.ShareableList([1, 2.0, "x", b"y", None])` | [`ShareableList`] |
//!
//! ## A short tour
//!
//! A [`SharedMap<K, V>`] is a hash map of [`ShmSafe`](crate::ShmSafe) keys
//! and values whose capacity is fixed when it is created. Like every ipckit
//! object it can be named (`create`, `open`, `open_or_create`), anonymous
//! (`new`), or embedded in a segment you lay out (`create_in`, `open_in`),
//! and its handle is a serde value you can pass to a child process.
//!
//! ```
//! use ipckit::collections::{Item, ShareableList, SharedMap};
//! # fn main() -> ipckit::Result<()> {
//! let scores: SharedMap<u32, [f64; 2]> = SharedMap::new(100)?; // room for 100 entries
//! scores.insert(7, [1.0, 2.0])?;
//! scores.update(&7, |v| v[1] += 1.0)?;                        // under the lock
//! assert_eq!(scores.get(&7)?, Some([1.0, 3.0]));
//! assert_eq!(scores.remove(&7)?, Some([1.0, 3.0]));
//!
//! let list = ShareableList::new([Item::from(1), "howdy".into(), Item::None])?;
//! list.set(1, "hi")?;                      // fits in the slot's 8 bytes
//! list.set(2, 2.5)?;                       // a slot may change type
//! assert_eq!(list.get(1)?, Item::from("hi"));
//! assert!(list.set(1, "a string longer than eight bytes").is_err());
//! # Ok(()) }
//! ```
//!
//! ## Crash consistency
//!
//! A process may be killed (SIGKILL) at any instruction, also while it holds
//! a container's lock. Both containers are built so that this never loses or
//! tears a committed entry: every change that others
//! can observe is committed by **one** store of a slot's state word, after
//! the new bytes were written somewhere no reader looks yet (a free slot, or
//! the inactive one of a slot's two value buffers). A process killed before
//! that store leaves the old state; one killed after it leaves the new one.
//!
//! So where a [`sync::Mutex`](crate::sync::Mutex) reports a dead holder as
//! [`OwnerDied`](crate::ErrorKind::OwnerDied) and asks you to repair the
//! data, these containers repair themselves: the next process to take the
//! lock recounts the map's entries (its only advisory field) by a scan,
//! tidies up after a removal the dead holder left half-way (a key a
//! backward shift had copied but not yet cleared from its old slot, holes
//! not yet closed; see [`SharedMap`]'s tombstone reclamation), marks the
//! lock consistent, and its operation succeeds.
//!
//! ## Untrusted bytes
//!
//! The segment is memory that other processes write. Opening checks the
//! header (kind, key and value types, sizes); every state word read later is
//! checked too, and an impossible one is a [`Corrupt`](crate::ErrorKind::Corrupt)
//! error, never a panic or undefined behaviour.

mod reclaim;
mod shareable_list;
mod shared_map;

pub use shareable_list::{Item, ShareableList};
pub use shared_map::SharedMap;

use std::hash::{Hash, Hasher};

use crate::layout::fnv1a;
use crate::sync::raw::{Locked, RawGuard, RawMutex};

/// 64-bit FNV-1a over whatever `Hash::hash` feeds it.
///
/// A [`SharedMap`] places a key by its hash, so every process must compute
/// the same hash for the same key: std's `RandomState` is seeded per
/// process and cannot be used.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FnvHasher(u64);

impl Default for FnvHasher {
    fn default() -> Self {
        FnvHasher(fnv1a(b""))
    }
}

impl Hasher for FnvHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = crate::layout::fnv1a_continue(self.0, bytes);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The deterministic hash of a key.
pub(crate) fn hash_key<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = FnvHasher::default();
    key.hash(&mut h);
    h.finish()
}

/// MurmurHash3's `fmix64` finaliser. FNV-1a's low bits depend only on the
/// low bits of the input bytes (multiplication carries upwards only), and a
/// power-of-two table indexes by the low bits, so the hash is mixed first.
pub(crate) const fn mix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// Holds a container's raw lock for one operation; unlocks on drop (also
/// when a user closure or a key's `Eq` panics, which poisons the lock: the
/// next operation then runs the same self-repair as after a holder's
/// death). `!Send`: glibc tracks the owner of a robust mutex per thread.
pub(crate) struct Held<'a>(RawGuard<'a>);

impl<'a> Held<'a> {
    /// Takes `raw`; returns the guard and whether a previous holder died
    /// (or panicked).
    pub(crate) fn lock(raw: &'a RawMutex) -> crate::Result<(Held<'a>, bool)> {
        let Locked { owner_died } = raw.lock(None)?;
        // SAFETY: this thread has just taken `raw`.
        Ok((Held(unsafe { RawGuard::new(raw) }), owner_died))
    }

    /// Declares the protected data consistent again (after a repair).
    pub(crate) fn mark_consistent(&self) {
        self.0.mark_consistent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_layout_hash() {
        let mut h = FnvHasher::default();
        h.write(b"hello");
        assert_eq!(h.finish(), fnv1a(b"hello"));
        // Deterministic: the same key hashes the same in every process.
        assert_eq!(hash_key(&42u64), hash_key(&42u64));
        assert_ne!(hash_key(&42u64), hash_key(&43u64));
    }

    #[test]
    fn mixing_spreads_low_bits() {
        // Even keys below 128: raw FNV-1a gives every one the same low bit.
        let raw: std::collections::HashSet<u64> =
            (0..64u64).map(|k| hash_key(&(2 * k)) & 1).collect();
        assert_eq!(raw.len(), 1, "the weakness mix64 is there for");
        let mixed: std::collections::HashSet<u64> =
            (0..64u64).map(|k| mix64(hash_key(&(2 * k))) & 15).collect();
        assert!(mixed.len() >= 12, "{mixed:?}");
    }
}
