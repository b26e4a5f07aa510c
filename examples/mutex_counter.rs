//! N processes increment one shared counter: first without a lock, which
//! loses updates, then through `Value`'s lock, which is exact. Last, a child
//! panics half-way through an update under a `Mutex`: the parent's next
//! lock is told (`OwnerDied`, as if the child had been killed), repairs the
//! data and marks it consistent.
//!
//! ```text
//! cargo run --release --example mutex_counter
//! ```

use ipckit::process::Process;
use ipckit::sync::{LockError, Mutex};
use ipckit::{Segment, Value};

const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 200_000;

/// Read, add one, write back — three steps another process can interleave with.
fn unlocked((counter, n): (Segment, u64)) {
    for _ in 0..n {
        let mut bytes = [0u8; 8];
        counter.read_at(0, &mut bytes).unwrap();
        let v = u64::from_ne_bytes(bytes) + 1;
        counter.write_at(0, &v.to_ne_bytes()).unwrap();
    }
}

/// The same under the value's lock.
fn locked((counter, n): (Value<u64>, u64)) {
    for _ in 0..n {
        counter.update(|v| *v += 1).unwrap();
    }
}

const TOTAL: u64 = 100;

/// Moves units from account 0 to account 1, one per lock — and hits a bug
/// half-way through the third move, leaving the accounts out of balance.
fn transfer_with_a_bug(accounts: Mutex<[u64; 2]>) {
    for i in 0..3 {
        let mut a = accounts.lock().unwrap();
        a[0] -= 1;
        if i == 2 {
            panic!("bug half-way through a transfer");
        }
        a[1] += 1;
    }
}

fn main() -> ipckit::Result<()> {
    ipckit::init();
    let expected = PROCESSES * INCREMENTS;

    let raw = Segment::new(8)?;
    let children = (0..PROCESSES)
        .map(|_| Process::spawn(unlocked, (raw.clone(), INCREMENTS)))
        .collect::<ipckit::Result<Vec<_>>>()?;
    for c in children {
        c.join()?;
    }
    let mut bytes = [0u8; 8];
    raw.read_at(0, &mut bytes)?;
    let total = u64::from_ne_bytes(bytes);
    println!(
        "without a lock: {total} of {expected} increments survived ({} lost)",
        expected - total
    );

    let value = Value::new(0u64)?;
    let children = (0..PROCESSES)
        .map(|_| Process::spawn(locked, (value.clone(), INCREMENTS)))
        .collect::<ipckit::Result<Vec<_>>>()?;
    for c in children {
        c.join()?;
    }
    let total = value.get()?;
    println!("with Value's lock: {total} of {expected} increments (exact)");
    assert_eq!(total, expected);

    let accounts = Mutex::new([TOTAL, 0u64])?;
    let err = Process::spawn(transfer_with_a_bug, accounts.clone())?
        .join()
        .unwrap_err();
    println!("the child failed: {err}");
    let mut a = match accounts.lock() {
        Err(LockError::OwnerDied(mut a)) => {
            println!(
                "the next lock reports it: accounts {:?} sum to {}, not {TOTAL}",
                *a,
                a[0] + a[1]
            );
            a[1] = TOTAL - a[0]; // finish the half-done transfer
            a.mark_consistent();
            a
        }
        Ok(_) => panic!("a holder that panicked must poison the lock"),
        Err(e) => return Err(e.into()),
    };
    assert_eq!(a[0] + a[1], TOTAL);
    a[0] -= 1;
    a[1] += 1;
    println!("repaired and marked consistent: accounts {:?}", *a);
    Ok(())
}
