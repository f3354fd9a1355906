//! Verified bearer tokens, remembered by their SHA-256 until they expire, with a
//! bound on how many are kept.
//!
//! Each entry lives until its own expiry (the token's `exp` plus the leeway).
//! When the cache is full, inserting first drops what has expired and then, if
//! it is still full, the entry that would expire soonest: the cache never
//! empties all at once, so a burst of new tokens costs the clients whose tokens
//! were about to lapse anyway one signature check each, not everyone.
//!
//! The entries are spread over shards by the digest's first byte (digests are
//! uniform), each behind its own mutex, so that concurrent lookups seldom meet.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

/// Shards the entries are spread over.
const SHARDS: usize = 16;

/// A token's SHA-256.
pub type Digest = [u8; 32];

/// A bounded map from token digests to what they stand for, each entry
/// holding until its expiry (Unix seconds).
pub struct TokenCache<V> {
    shards: Vec<Mutex<Shard<V>>>,
    per_shard: usize,
}

struct Shard<V> {
    entries: HashMap<Digest, (V, u64), foldhash::fast::RandomState>,
    /// The same entries ordered by expiry, soonest first.
    by_expiry: BTreeSet<(u64, Digest)>,
}

impl<V: Clone> TokenCache<V> {
    /// A cache of at most `capacity` entries (at least one per shard).
    pub fn new(capacity: usize) -> TokenCache<V> {
        TokenCache {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: HashMap::default(),
                        by_expiry: BTreeSet::new(),
                    })
                })
                .collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// The value remembered for `digest` and its expiry, unless it expired
    /// before `now`.
    pub fn get(&self, digest: &Digest, now: u64) -> Option<(V, u64)> {
        let shard = self.shard(digest);
        let (value, expires) = shard.entries.get(digest)?;
        (now <= *expires).then(|| (value.clone(), *expires))
    }

    /// Remembers `value` for `digest` until `expires`, making room as the
    /// module documentation describes.
    pub fn insert(&self, digest: Digest, value: V, expires: u64, now: u64) {
        let mut shard = self.shard(&digest);
        if let Some((_, old)) = shard.entries.remove(&digest) {
            shard.by_expiry.remove(&(old, digest));
        }
        while let Some(&(soonest, _)) = shard.by_expiry.first()
            && (soonest < now || shard.entries.len() >= self.per_shard)
        {
            let (_, evicted) = shard.by_expiry.pop_first().expect("a first entry");
            shard.entries.remove(&evicted);
        }
        shard.entries.insert(digest, (value, expires));
        shard.by_expiry.insert((expires, digest));
    }

    /// Forgets everything (when the signing keys change).
    pub fn clear(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.entries.clear();
            shard.by_expiry.clear();
        }
    }

    /// How many entries are kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).entries.len()).sum()
    }

    fn shard(&self, digest: &Digest) -> MutexGuard<'_, Shard<V>> {
        lock(&self.shards[usize::from(digest[0]) % SHARDS])
    }
}

/// A shard's lock; a panic while holding it leaves consistent maps behind
/// (each insert or removal finishes before the next begins), so a poisoned
/// lock is taken over.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A digest that lands in shard 0, numbered by its other bytes.
    fn digest(number: u32) -> Digest {
        let mut digest = [0; 32];
        digest[1..5].copy_from_slice(&number.to_le_bytes());
        digest
    }

    #[test]
    fn entries_hold_until_their_own_expiry() {
        let cache = TokenCache::new(64);
        cache.insert(digest(1), "a", 100, 0);
        cache.insert(digest(2), "b", 200, 0);
        assert_eq!(cache.get(&digest(1), 100), Some(("a", 100)));
        assert_eq!(cache.get(&digest(1), 101), None);
        assert_eq!(cache.get(&digest(2), 101), Some(("b", 200)));
        assert_eq!(cache.get(&digest(3), 0), None);
    }

    #[test]
    fn a_full_cache_drops_the_expired_then_the_soonest_to_expire_never_everything() {
        // 16 shards of 4: every digest here lands in shard 0, which holds 4.
        let cache = TokenCache::new(64);
        for number in 0..4 {
            cache.insert(digest(number), number, 1000 + u64::from(number), 0);
        }
        // Full: the entry expiring soonest (0) makes room, the others stay.
        cache.insert(digest(10), 10, 5000, 0);
        assert_eq!(cache.get(&digest(0), 0), None);
        for number in [1, 2, 3, 10] {
            assert!(cache.get(&digest(number), 0).is_some(), "{number}");
        }
        assert_eq!(cache.len(), 4);
        // At time 1003, 1 and 2 have expired: both go, 3 and 10 stay.
        cache.insert(digest(11), 11, 6000, 1003);
        assert_eq!(cache.len(), 3);
        for number in [3, 10, 11] {
            assert!(cache.get(&digest(number), 1003).is_some(), "{number}");
        }
        // Many more tokens than fit: the cache stays at its bound and keeps
        // the latest-expiring entries.
        for number in 100..1100 {
            cache.insert(digest(number), number, 10_000 + u64::from(number), 1003);
            assert!(cache.len() <= 4);
        }
        assert_eq!(cache.len(), 4);
        assert!(cache.get(&digest(1099), 1003).is_some());
    }

    #[test]
    fn reinserting_a_token_replaces_its_expiry_and_clear_forgets_all() {
        let cache = TokenCache::new(16);
        cache.insert(digest(1), 'x', 10, 0);
        cache.insert(digest(1), 'x', 20, 0);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&digest(1), 15), Some(('x', 20)));
        cache.clear();
        assert_eq!(cache.len(), 0);
    }
}
