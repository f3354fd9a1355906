//! Authentication (who is calling) and per-model authorization (what it may call).

use std::cell::RefCell;
use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use super::jwt::{JwtOptions, JwtVerifier};
use super::keys::KeySet;
use super::watch::WatchedFiles;
use super::{Denial, SecurityError};

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

/// The credentials a request carries.
#[derive(Debug, Default, Clone, Copy)]
pub struct Credentials<'a> {
    /// `Authorization: Bearer <token>`: an API key or a JWT.
    pub bearer: Option<&'a str>,
    /// `X-API-Key: <key>`.
    pub api_key: Option<&'a str>,
    /// Whether the TLS connection presented a client certificate that verified.
    pub client_certificate: bool,
}

impl<'a> Credentials<'a> {
    /// Reads the `authorization` and `x-api-key` headers (or gRPC metadata).
    pub fn from_headers(header: impl Fn(&str) -> Option<&'a str>) -> Credentials<'a> {
        let bearer = header("authorization").and_then(|value| {
            let (scheme, token) = value.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim())
        });
        Credentials {
            bearer,
            api_key: header("x-api-key").map(str::trim),
            client_certificate: false,
        }
    }
}

const MISSING: &str = "authentication required: send 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <API key>'";

/// API keys (reloaded when their file changes) and JWT validation.
pub struct Authenticator {
    keys: Option<(WatchedFiles, ArcSwap<KeySet>)>,
    jwt: Option<JwtVerifier>,
}

impl Authenticator {
    /// Loads what is configured; `None` when neither keys nor JWT are.
    pub async fn load(
        keys_file: Option<&Path>,
        jwt: Option<&JwtOptions>,
    ) -> Result<Option<Authenticator>, SecurityError> {
        if keys_file.is_none() && jwt.is_none() {
            return Ok(None);
        }
        let keys = match keys_file {
            Some(path) => {
                let (watched, contents) = WatchedFiles::read(vec![path.to_path_buf()])?;
                let keys = parse_keys(path, &contents[0])?;
                tracing::info!(path = %path.display(), keys = keys.len(), "API keys loaded");
                Some((watched, ArcSwap::from_pointee(keys)))
            }
            None => None,
        };
        let jwt = match jwt {
            Some(options) => Some(JwtVerifier::load(options.clone()).await?),
            None => None,
        };
        Ok(Some(Authenticator { keys, jwt }))
    }

    /// Who the credentials belong to.
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Arc<Principal>, Denial> {
        if let Some(key) = credentials.api_key {
            return self.by_key(key);
        }
        let Some(token) = credentials.bearer else {
            return Err(Denial::Unauthenticated(MISSING.to_string()));
        };
        match &self.jwt {
            Some(jwt) if token.bytes().filter(|b| *b == b'.').count() == 2 => jwt.verify(token),
            _ => self.by_key(token),
        }
    }

    fn by_key(&self, key: &str) -> Result<Arc<Principal>, Denial> {
        let Some((_, keys)) = &self.keys else {
            return Err(Denial::Unauthenticated(
                "API keys are not accepted here; send a JWT bearer token".to_string(),
            ));
        };
        keys.load()
            .lookup(key)
            .ok_or_else(|| Denial::Unauthenticated("invalid API key".to_string()))
    }

    /// Picks up a changed key file or JWKS; keeps the old ones if the new are broken.
    pub async fn reload(&self) {
        if let Some((watched, keys)) = &self.keys
            && let Some(contents) = watched.changed()
        {
            match parse_keys(watched.path(), &contents[0]) {
                Ok(new) => {
                    tracing::info!(path = %watched.path().display(), keys = new.len(), "API keys reloaded");
                    keys.store(Arc::new(new));
                }
                Err(error) => tracing::warn!(%error, "keeping the previous API keys"),
            }
        }
        if let Some(jwt) = &self.jwt {
            jwt.reload().await;
        }
    }
}

fn parse_keys(path: &Path, contents: &[u8]) -> Result<KeySet, SecurityError> {
    let error = |message: String| SecurityError::Keys {
        path: path.to_path_buf(),
        message,
    };
    let text = std::str::from_utf8(contents).map_err(|e| error(e.to_string()))?;
    KeySet::parse(text).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_bearer_or_api_key_headers() {
        let headers = |pairs: &'static [(&'static str, &'static str)]| {
            Credentials::from_headers(move |name| {
                pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
            })
        };
        let c = headers(&[("authorization", "Bearer  abc ")]);
        assert_eq!((c.bearer, c.api_key), (Some("abc"), None));
        let c = headers(&[("authorization", "bearer xyz")]);
        assert_eq!(c.bearer, Some("xyz"));
        let c = headers(&[("authorization", "Basic abc")]);
        assert_eq!(c.bearer, None);
        let c = headers(&[("x-api-key", "k")]);
        assert_eq!(c.api_key, Some("k"));
    }

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
