//! The credential each thread verified last. Clients keep their connections
//! open and send the same API key or token with every request, so a worker
//! thread mostly sees one credential again and again; remembering it skips the
//! SHA-256, the key-set or token-cache lookup and the memory they touch.
//!
//! A presented credential is compared with the remembered one in constant time:
//! the remembered one is a valid secret, and an early-exit comparison would let
//! its bytes be guessed one at a time from response timing. An entry holds only
//! for the generation of credentials it was verified under (see
//! [`next_generation`]), and a token's entry only until the token expires.

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::principal::Principal;

/// The header a credential came in. The same text may mean different things in
/// each (a bearer token can be a JWT or an API key, an `X-API-Key` is always a
/// key), and given the header, what it means depends on the text alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented {
    /// `X-API-Key`.
    ApiKeyHeader,
    /// `Authorization: Bearer`.
    Bearer,
}

struct Entry {
    generation: u64,
    presented: Presented,
    credential: String,
    principal: Arc<Principal>,
    /// Unix seconds after which the entry no longer holds, for tokens.
    expires: Option<u64>,
}

thread_local! {
    static LAST: RefCell<Option<Entry>> = const { RefCell::new(None) };
}

/// A generation no authenticator in this process has used: an authenticator
/// takes a new one whenever its keys or JWKS change, which invalidates what
/// every thread remembers of it.
pub fn next_generation() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The principal of `credential` if this thread verified exactly it last, in
/// `generation`, and it has not expired by `now` (Unix seconds, read only for
/// entries that expire).
pub fn recall(
    generation: u64,
    presented: Presented,
    credential: &str,
    now: impl FnOnce() -> u64,
) -> Option<Arc<Principal>> {
    LAST.with_borrow(|last| {
        let entry = last.as_ref()?;
        let same = entry.generation == generation
            && entry.presented == presented
            && constant_time_eq::constant_time_eq(
                entry.credential.as_bytes(),
                credential.as_bytes(),
            );
        let live = same && entry.expires.is_none_or(|expires| now() <= expires);
        live.then(|| Arc::clone(&entry.principal))
    })
}

/// Remembers a credential this thread has just verified.
pub fn remember(
    generation: u64,
    presented: Presented,
    credential: &str,
    principal: &Arc<Principal>,
    expires: Option<u64>,
) {
    LAST.with_borrow_mut(|last| match last {
        Some(entry) => {
            entry.generation = generation;
            entry.presented = presented;
            entry.credential.clear();
            entry.credential.push_str(credential);
            entry.principal = Arc::clone(principal);
            entry.expires = expires;
        }
        None => {
            *last = Some(Entry {
                generation,
                presented,
                credential: credential.to_string(),
                principal: Arc::clone(principal),
                expires,
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::principal::{AuthMethod, ModelScope};

    fn principal(id: &str) -> Arc<Principal> {
        Arc::new(Principal {
            id: id.into(),
            method: AuthMethod::ApiKey,
            models: ModelScope::All,
        })
    }

    #[test]
    fn only_the_same_credential_generation_and_kind_is_recalled() {
        let (generation, other) = (next_generation(), next_generation());
        let a = principal("key:a");
        remember(generation, Presented::ApiKeyHeader, "secret-a", &a, None);
        let recalled = recall(generation, Presented::ApiKeyHeader, "secret-a", || 0).unwrap();
        assert!(Arc::ptr_eq(&recalled, &a));
        for (generation, presented, credential) in [
            (generation, Presented::ApiKeyHeader, "secret-b"),
            (generation, Presented::ApiKeyHeader, "secret-a2"),
            (generation, Presented::ApiKeyHeader, "secret"),
            (generation, Presented::Bearer, "secret-a"),
            (other, Presented::ApiKeyHeader, "secret-a"),
        ] {
            assert!(
                recall(generation, presented, credential, || 0).is_none(),
                "{generation} {presented:?} {credential}"
            );
        }
    }

    #[test]
    fn tokens_are_recalled_until_they_expire() {
        let generation = next_generation();
        remember(
            generation,
            Presented::Bearer,
            "a.b.c",
            &principal("jwt:x"),
            Some(100),
        );
        assert!(recall(generation, Presented::Bearer, "a.b.c", || 100).is_some());
        assert!(recall(generation, Presented::Bearer, "a.b.c", || 101).is_none());
    }

    #[test]
    fn each_thread_remembers_its_own() {
        let generation = next_generation();
        remember(
            generation,
            Presented::ApiKeyHeader,
            "mine",
            &principal("key:m"),
            None,
        );
        std::thread::spawn(move || {
            assert!(recall(generation, Presented::ApiKeyHeader, "mine", || 0).is_none());
        })
        .join()
        .unwrap();
        assert!(recall(generation, Presented::ApiKeyHeader, "mine", || 0).is_some());
    }
}
