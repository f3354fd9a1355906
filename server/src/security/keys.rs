//! API keys, stored as SHA-256 digests in a YAML file that a Secret mounts:
//!
//! ```yaml
//! keys:
//!   - name: team-a            # the client identity in rate limits and audit lines
//!     sha256: 5e88…           # hex SHA-256 of the key
//!     models: [fraud, churn]  # or ["*"] for every model
//! ```
//!
//! Keys are random strings of at least 128 bits, not passwords, so a fast hash
//! is the right tool: nobody can search a 2^128 space from a leaked digest, and a
//! slow password hash would add milliseconds to every request. The presented key
//! is hashed and its digest looked up in a hash map. The lookup's timing depends
//! only on digests, never on key bytes: an attacker could at best learn a few
//! bits of a stored digest, and a key cannot be found from its digest. So the
//! lookup need not run in constant time, and it costs the same for 10 keys as for
//! 10,000.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::principal::{AuthMethod, ModelScope, Principal};

/// Keys shorter than this are refused when presented: they are not random enough.
pub const MIN_KEY_LENGTH: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    models: Vec<String>,
}

/// The parsed key file: digests and the principals they stand for.
#[derive(Debug)]
pub struct KeySet {
    /// Hashed with foldhash: the keys are SHA-256 digests, already uniform.
    by_digest: HashMap<[u8; 32], Arc<Principal>, foldhash::fast::RandomState>,
}

impl KeySet {
    /// Parses the YAML key file, naming the entry at fault in errors.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let file: KeysFile = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut by_digest = HashMap::default();
        for (index, entry) in file.keys.into_iter().enumerate() {
            let at = format!("keys[{index}] ('{}')", entry.name);
            if entry.name.is_empty() {
                return Err(format!("keys[{index}] has an empty name"));
            }
            if !names.insert(entry.name.clone()) {
                return Err(format!("{at}: the name is used twice"));
            }
            let digest: [u8; 32] = hex::decode(entry.sha256.trim())
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| format!("{at}: sha256 must be 64 hex digits"))?;
            if entry.models.is_empty() {
                return Err(format!(
                    "{at}: models is empty; list model names or \"*\" for all"
                ));
            }
            let principal = Principal {
                id: format!("key:{}", entry.name).into(),
                method: AuthMethod::ApiKey,
                models: ModelScope::from_names(entry.models),
            };
            if by_digest.insert(digest, Arc::new(principal)).is_some() {
                return Err(format!("{at}: the same key digest appears twice"));
            }
        }
        Ok(KeySet { by_digest })
    }

    /// The principal whose key this is.
    pub fn lookup(&self, key: &str) -> Option<Arc<Principal>> {
        if key.len() < MIN_KEY_LENGTH {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.by_digest.get(&digest).cloned()
    }

    /// How many keys the file holds.
    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    /// Whether the file holds no keys.
    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

/// The hex SHA-256 digest of a key, as the key file stores it.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "key-a-0123456789abcdef";
    const KEY_B: &str = "key-b-0123456789abcdef";

    fn file() -> String {
        format!(
            "keys:\n  - name: a\n    sha256: {}\n    models: [mlp]\n  - name: b\n    sha256: {}\n    models: ['*']\n",
            digest_hex(KEY_A),
            digest_hex(KEY_B)
        )
    }

    #[test]
    fn finds_the_principal_of_a_key_and_nothing_for_others() {
        let keys = KeySet::parse(&file()).unwrap();
        assert_eq!(keys.len(), 2);
        let a = keys.lookup(KEY_A).unwrap();
        assert_eq!(&*a.id, "key:a");
        assert!(a.authorize("mlp").is_ok());
        assert!(a.authorize("other").is_err());
        assert!(keys.lookup(KEY_B).unwrap().authorize("other").is_ok());
        assert!(keys.lookup("key-c-0123456789abcdef").is_none());
        assert!(keys.lookup("").is_none());
    }

    #[test]
    fn malformed_files_name_the_problem() {
        let cases = [
            ("keys: []\nextra: 1\n", "extra"),
            (
                "keys:\n  - name: a\n    sha256: abc\n    models: [m]\n",
                "keys[0] ('a'): sha256 must be 64 hex digits",
            ),
            (
                &format!(
                    "keys:\n  - name: a\n    sha256: {}\n    models: []\n",
                    digest_hex(KEY_A)
                ),
                "models is empty",
            ),
            (
                &format!(
                    "keys:\n  - name: a\n    sha256: {0}\n    models: [m]\n  - name: a\n    sha256: {1}\n    models: [m]\n",
                    digest_hex(KEY_A),
                    digest_hex(KEY_B)
                ),
                "keys[1] ('a'): the name is used twice",
            ),
        ];
        for (text, expected) in cases {
            let error = KeySet::parse(text).unwrap_err();
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        }
    }
}
