//! Authentication: reading a request's credentials and finding who they
//! belong to, among the API keys or as a JWT.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::error::{Denial, SecurityError};
use super::jwt::{JwtOptions, JwtVerifier, now_seconds};
use super::keys::KeySet;
use super::principal::Principal;
use super::recent::{self, Presented};
use super::watch::WatchedFiles;

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
        Credentials::from_values(header("authorization"), header(API_KEY_HEADER))
    }

    /// The credentials in an `Authorization` value (a bearer token) and an
    /// `X-API-Key` value. Header values are ASCII, so ASCII whitespace is trimmed.
    pub fn from_values(
        authorization: Option<&'a str>,
        api_key: Option<&'a str>,
    ) -> Credentials<'a> {
        let bearer = authorization.and_then(|value| {
            let (scheme, token) = value.trim_ascii().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then_some(token.trim_ascii())
        });
        Credentials {
            bearer,
            api_key: api_key.map(str::trim_ascii),
            client_certificate: false,
        }
    }
}

/// The header that carries an API key.
pub const API_KEY_HEADER: &str = "x-api-key";

const MISSING: &str = "authentication required: send 'Authorization: Bearer <API key or JWT>' or 'X-API-Key: <API key>'";

/// API keys (reloaded when their file changes) and JWT validation.
pub struct Authenticator {
    keys: Option<(WatchedFiles, ArcSwap<KeySet>)>,
    jwt: Option<JwtVerifier>,
    /// This authenticator's current generation of keys and JWKS: what each
    /// thread remembers of a credential holds only within it ([`recent`]).
    generation: AtomicU64,
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
        Ok(Some(Authenticator {
            keys,
            jwt,
            generation: AtomicU64::new(recent::next_generation()),
        }))
    }

    /// Who the credentials belong to: an `X-API-Key` is looked up among the
    /// keys; a bearer token is verified as a JWT when JWT is configured and it
    /// has the three parts of one, and looked up as an API key otherwise.
    pub fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Arc<Principal>, Denial> {
        let (credential, presented) = match (credentials.api_key, credentials.bearer) {
            (Some(key), _) => (key, Presented::ApiKeyHeader),
            (None, Some(token)) => (token, Presented::Bearer),
            (None, None) => return Err(Denial::Unauthenticated(MISSING.to_string())),
        };
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(principal) = recent::recall(generation, presented, credential, now_seconds) {
            return Ok(principal);
        }
        let (principal, expires) = match &self.jwt {
            Some(jwt) if presented == Presented::Bearer && has_three_parts(credential) => {
                let (principal, expires) = jwt.verify(credential)?;
                (principal, Some(expires))
            }
            _ => (self.by_key(credential)?, None),
        };
        recent::remember(generation, presented, credential, &principal, expires);
        Ok(principal)
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

    /// Picks up a changed key file or JWKS; keeps the old ones if the new are
    /// broken. A change starts a new generation, so no thread goes on
    /// accepting a credential that the new keys no longer cover.
    pub async fn reload(&self) {
        let mut changed = false;
        if let Some((watched, keys)) = &self.keys
            && let Some(contents) = watched.changed()
        {
            match parse_keys(watched.path(), &contents[0]) {
                Ok(new) => {
                    tracing::info!(path = %watched.path().display(), keys = new.len(), "API keys reloaded");
                    keys.store(Arc::new(new));
                    changed = true;
                }
                Err(error) => tracing::warn!(%error, "keeping the previous API keys"),
            }
        }
        if let Some(jwt) = &self.jwt {
            changed |= jwt.reload().await;
        }
        if changed {
            self.generation
                .store(recent::next_generation(), Ordering::Release);
        }
    }
}

/// Whether `token` has the three dot-separated parts of a JWT.
fn has_three_parts(token: &str) -> bool {
    token.split('.').count() == 3
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

    /// A key this thread has just verified, and so remembers, is refused once a
    /// reload removes it: the reload starts a new generation.
    #[tokio::test(flavor = "current_thread")]
    async fn a_remembered_key_is_refused_after_a_reload_removes_it() {
        let (old, new) = ("key-old-0123456789abcdef", "key-new-0123456789abcdef");
        let file = |name: &str, key: &str| {
            format!(
                "keys:\n  - name: {name}\n    sha256: {}\n    models: ['*']\n",
                crate::security::keys::digest_hex(key)
            )
        };
        let path = std::env::temp_dir().join(format!("sluice-auth-{}.yaml", std::process::id()));
        std::fs::write(&path, file("old", old)).unwrap();
        let authenticator = Authenticator::load(Some(&path), None)
            .await
            .unwrap()
            .unwrap();
        let with_key = |key| Credentials {
            api_key: Some(key),
            ..Credentials::default()
        };
        for _ in 0..2 {
            let principal = authenticator.authenticate(&with_key(old)).unwrap();
            assert_eq!(&*principal.id, "key:old");
        }
        std::fs::write(&path, file("new", new)).unwrap();
        authenticator.reload().await;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            authenticator.authenticate(&with_key(old)),
            Err(Denial::Unauthenticated("invalid API key".to_string()))
        );
        assert_eq!(
            &*authenticator.authenticate(&with_key(new)).unwrap().id,
            "key:new"
        );
    }

    #[test]
    fn tokens_with_three_parts_are_taken_for_jwts() {
        assert!(has_three_parts("a.b.c"));
        assert!(has_three_parts(".."));
        assert!(!has_three_parts("a.b"));
        assert!(!has_three_parts("a.b.c.d"));
        assert!(!has_three_parts("sk-0123456789abcdef"));
    }
}
