//! Who a caller is once authenticated, and what it may call (per-model
//! authorization).

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use super::error::Denial;

/// How a caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthMethod {
    /// Authentication is off; the identity is the peer address.
    None,
    /// An API key from the key file.
    ApiKey,
    /// A JWT bearer token.
    Jwt,
}

/// The models a caller may call.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelScope {
    /// Every model.
    All,
    /// Only these.
    Only(HashSet<String>),
}

impl ModelScope {
    /// `*` among the names means every model.
    pub fn from_names(names: impl IntoIterator<Item = String>) -> ModelScope {
        let names: HashSet<String> = names.into_iter().collect();
        if names.contains("*") {
            ModelScope::All
        } else {
            ModelScope::Only(names)
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The identity used for rate limits and audit lines: `key:<name>`,
    /// `jwt:<sub>`, or `ip:<address>` when authentication is off.
    pub id: Arc<str>,
    /// How it authenticated.
    pub method: AuthMethod,
    /// What it may call.
    pub models: ModelScope,
}

impl Principal {
    /// The caller when authentication is off: known by its address, allowed everything.
    pub fn anonymous(peer: Option<IpAddr>) -> Arc<Principal> {
        thread_local! {
            /// The last anonymous caller on this thread: requests come from few
            /// addresses, and building the id costs more than the checks.
            static LAST: RefCell<Option<(Option<IpAddr>, Arc<Principal>)>> =
                const { RefCell::new(None) };
        }
        LAST.with_borrow_mut(|last| match last {
            Some((seen, principal)) if *seen == peer => Arc::clone(principal),
            _ => {
                let id = match peer {
                    Some(address) => format!("ip:{address}"),
                    None => "ip:unknown".to_string(),
                };
                let principal = Arc::new(Principal {
                    id: id.into(),
                    method: AuthMethod::None,
                    models: ModelScope::All,
                });
                *last = Some((peer, Arc::clone(&principal)));
                principal
            }
        })
    }

    /// Whether this caller may call `model`.
    pub fn authorize(&self, model: &str) -> Result<(), Denial> {
        match &self.models {
            ModelScope::All => Ok(()),
            ModelScope::Only(names) if names.contains(model) => Ok(()),
            ModelScope::Only(_) => Err(Denial::Forbidden(format!(
                "'{}' is not allowed to call model '{model}'",
                self.id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_allow_listed_models_or_all() {
        let only = Principal {
            id: "key:a".into(),
            method: AuthMethod::ApiKey,
            models: ModelScope::from_names(["m".to_string()]),
        };
        assert!(only.authorize("m").is_ok());
        assert_eq!(
            only.authorize("n"),
            Err(Denial::Forbidden(
                "'key:a' is not allowed to call model 'n'".to_string()
            ))
        );
        assert_eq!(
            ModelScope::from_names(["m".to_string(), "*".to_string()]),
            ModelScope::All
        );
    }
}
