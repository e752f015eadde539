//! Finding a live device by (PCI segment, devid) without a heap.
//!
//! The writer refuses a second live device with the same key. Without help
//! it can only scan the device chain, which makes preserving `n` devices in
//! arbitrary order cost O(n²). So the lookup is a trait: [`NoIndex`] (the
//! default) answers "don't know" and the writer scans, except when the new
//! key is above every key it has ever written (devices preserved in
//! ascending order, as enumeration does, cost O(1) each); [`SliceIndex`] is
//! an open-addressing hash table in storage the caller supplies (two slots
//! per device keeps probes short), O(1) per operation in any order.

use super::WriteError;
use super::types::DeviceKey;
use crate::PhysAddr;

/// What an index knows about a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// A live device with this key has its record here.
    Live(PhysAddr),
    /// No live device has this key.
    Absent,
    /// The index does not know; the writer scans the image.
    Unknown,
}

/// An index of the live devices, kept up to date by the writer.
pub trait DeviceIndex {
    /// Where the live device with `key` is, if the index knows.
    fn lookup(&self, key: DeviceKey) -> Lookup;
    /// Records a new live device. May fail only with
    /// [`WriteError::IndexFull`], and then must leave the index unchanged;
    /// the writer inserts before it writes anything, so the image is
    /// unchanged too.
    fn insert(&mut self, key: DeviceKey, device: PhysAddr) -> Result<(), WriteError>;
    /// Forgets a device that was unpreserved.
    fn remove(&mut self, key: DeviceKey);
}

impl<X: DeviceIndex + ?Sized> DeviceIndex for &mut X {
    fn lookup(&self, key: DeviceKey) -> Lookup {
        (**self).lookup(key)
    }
    fn insert(&mut self, key: DeviceKey, device: PhysAddr) -> Result<(), WriteError> {
        (**self).insert(key, device)
    }
    fn remove(&mut self, key: DeviceKey) {
        (**self).remove(key)
    }
}

/// No index: duplicates are found by scanning (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoIndex;

impl DeviceIndex for NoIndex {
    fn lookup(&self, _key: DeviceKey) -> Lookup {
        Lookup::Unknown
    }
    fn insert(&mut self, _key: DeviceKey, _device: PhysAddr) -> Result<(), WriteError> {
        Ok(())
    }
    fn remove(&mut self, _key: DeviceKey) {}
}

/// One slot of a [`SliceIndex`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IndexSlot {
    key: u64,
    /// The device record's address; 0 marks an empty slot (no record is at 0).
    device: u64,
}

impl IndexSlot {
    /// An empty slot, to fill storage with (`[IndexSlot::empty(); N]`).
    pub const fn empty() -> Self {
        IndexSlot { key: 0, device: 0 }
    }
}

/// A linear-probing hash table of live devices in caller-supplied slots.
/// It holds at most `slots.len() - 1` devices; give it about twice as many
/// slots as devices. Deletion shifts entries back, so no tombstones build up
/// under preserve/unpreserve churn.
#[derive(Debug)]
pub struct SliceIndex<'a> {
    slots: &'a mut [IndexSlot],
    len: usize,
}

impl<'a> SliceIndex<'a> {
    /// An empty index over `slots` (which it clears).
    pub fn new(slots: &'a mut [IndexSlot]) -> Self {
        slots.fill(IndexSlot::empty());
        SliceIndex { slots, len: 0 }
    }

    /// The index `slots` already hold, with `len` devices: what an index
    /// [`new`](Self::new) made and then filled holds. The C boundary
    /// (`src/ffi`) keeps the storage as a raw pointer between calls, so no
    /// reference to caller memory outlives a call, and resumes the index
    /// for each call.
    #[cfg(feature = "ffi")]
    pub(crate) fn resume(slots: &'a mut [IndexSlot], len: usize) -> Self {
        SliceIndex { slots, len }
    }

    /// How many devices it can hold.
    pub fn capacity(&self) -> usize {
        self.slots.len().saturating_sub(1)
    }

    /// How many devices it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot a key hashes to (Fibonacci hashing, scaled to the length).
    fn home(&self, key: u64) -> usize {
        let h = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let n = u64::try_from(self.slots.len()).unwrap_or(u64::MAX);
        let scaled = (u128::from(h).wrapping_mul(u128::from(n))) >> 64;
        usize::try_from(scaled).unwrap_or(0)
    }

    fn next(&self, i: usize) -> usize {
        match i.checked_add(1) {
            Some(j) if j < self.slots.len() => j,
            _ => 0,
        }
    }

    /// The slot holding `key`, if any.
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(i)?;
            if slot.device == 0 {
                return None;
            }
            if slot.key == key {
                return Some(i);
            }
            i = self.next(i);
        }
        None
    }
}

impl DeviceIndex for SliceIndex<'_> {
    fn lookup(&self, key: DeviceKey) -> Lookup {
        match self.find(key.get()).and_then(|i| self.slots.get(i)) {
            Some(slot) => Lookup::Live(PhysAddr::new(slot.device)),
            None => Lookup::Absent,
        }
    }

    fn insert(&mut self, key: DeviceKey, device: PhysAddr) -> Result<(), WriteError> {
        let full = WriteError::IndexFull {
            capacity: self.capacity(),
        };
        if self.len >= self.capacity() || device.is_null() {
            return Err(full);
        }
        let mut i = self.home(key.get());
        for _ in 0..self.slots.len() {
            let next = self.next(i);
            let slot = self.slots.get_mut(i).ok_or(full)?;
            if slot.device == 0 || slot.key == key.get() {
                if slot.device == 0 {
                    self.len = self.len.saturating_add(1);
                }
                *slot = IndexSlot {
                    key: key.get(),
                    device: device.get(),
                };
                return Ok(());
            }
            i = next;
        }
        Err(full)
    }

    fn remove(&mut self, key: DeviceKey) {
        let Some(mut hole) = self.find(key.get()) else {
            return;
        };
        // Backward-shift deletion: move later entries of the probe run into
        // the hole unless their home lies cyclically in (hole, j].
        let mut j = hole;
        for _ in 0..self.slots.len() {
            j = self.next(j);
            let Some(&entry) = self.slots.get(j) else {
                break;
            };
            if entry.device == 0 {
                break;
            }
            let k = self.home(entry.key);
            let stays = if hole <= j {
                hole < k && k <= j
            } else {
                hole < k || k <= j
            };
            if !stays {
                if let Some(h) = self.slots.get_mut(hole) {
                    *h = entry;
                }
                hole = j;
            }
        }
        if let Some(h) = self.slots.get_mut(hole) {
            *h = IndexSlot::empty();
        }
        self.len = self.len.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> DeviceKey {
        DeviceKey::new(i % 3, i)
    }

    #[test]
    fn slice_index_finds_what_was_inserted_and_forgets_what_was_removed() {
        let mut slots = [IndexSlot::empty(); 17];
        let mut ix = SliceIndex::new(&mut slots);
        for i in 0..16 {
            ix.insert(key(i), PhysAddr::new(0x1010 + u64::from(i)))
                .expect("room");
        }
        assert_eq!(
            ix.insert(key(99), PhysAddr::new(0x9999)),
            Err(WriteError::IndexFull { capacity: 16 })
        );
        for i in (0..16).step_by(2) {
            ix.remove(key(i));
        }
        for i in 0..16 {
            let want = if i % 2 == 0 {
                Lookup::Absent
            } else {
                Lookup::Live(PhysAddr::new(0x1010 + u64::from(i)))
            };
            assert_eq!(ix.lookup(key(i)), want, "key {i}");
        }
        assert_eq!(ix.len(), 8);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            if cfg!(miri) { 4 } else { 256 }
        ))]
        #[test]
        fn slice_index_agrees_with_a_set_under_churn(
            ops in proptest::collection::vec((proptest::bool::ANY, 0u32..24), 0..200),
            extra in 1usize..8,
        ) {
            let mut slots = [IndexSlot::empty(); 32];
            let n = 24 + extra;
            let mut ix = SliceIndex::new(&mut slots[..n]);
            let mut model = [false; 24];
            for (add, k) in ops {
                let m = model.get_mut(usize::try_from(k).expect("small")).expect("k < 24");
                if add {
                    ix.insert(key(k), PhysAddr::new(0x1000 + u64::from(k))).expect("room");
                    *m = true;
                } else {
                    ix.remove(key(k));
                    *m = false;
                }
            }
            for (k, live) in (0u32..).zip(model) {
                let want = if live {
                    Lookup::Live(PhysAddr::new(0x1000 + u64::from(k)))
                } else {
                    Lookup::Absent
                };
                proptest::prop_assert_eq!(ix.lookup(key(k)), want);
            }
            proptest::prop_assert_eq!(ix.len(), model.iter().filter(|l| **l).count());
        }
    }
}
