//! JWT bearer tokens, checked against a JWKS read from a file (reloaded when it
//! changes) or fetched from a URL (refreshed periodically). Tokens must be signed
//! with an asymmetric algorithm by a key in the set, carry `exp`, `iss`, `aud` and
//! `sub`, match the configured issuer and audience, and not be expired. The
//! models a token may call come from a claim (default `models`): an array of
//! names or a space-separated string, `*` for every model.
//!
//! Verified tokens are remembered by their SHA-256 until they expire, so a client
//! reusing its token pays for one signature check, not one per request.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use super::error::{Denial, SecurityError};
use super::principal::{AuthMethod, ModelScope, Principal};
use super::token_cache::TokenCache;
use super::watch::WatchedFiles;

/// The most verified tokens remembered (see [`TokenCache`] for what makes room).
const CACHE_LIMIT: usize = 100_000;

/// Where the JWKS comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    /// A file, e.g. from a mounted ConfigMap or Secret.
    File(PathBuf),
    /// An HTTP(S) URL, e.g. the identity provider's `jwks_uri`.
    Url(String),
}

/// How tokens are validated.
#[derive(Debug, Clone, PartialEq)]
pub struct JwtOptions {
    /// The required `iss`.
    pub issuer: String,
    /// The required `aud` (one of the token's audiences).
    pub audience: String,
    /// The signing keys.
    pub jwks: JwksSource,
    /// The claim listing the models a token may call.
    pub models_claim: String,
    /// How often a JWKS URL is fetched again.
    pub refresh: Duration,
    /// Allowed clock skew on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
}

struct SigningKey {
    kid: Option<String>,
    algorithm: Option<Algorithm>,
    key: DecodingKey,
}

/// The usable keys of one JWKS.
struct Keys(Vec<SigningKey>);

impl Keys {
    fn parse(text: &[u8], source_name: &str) -> Result<Keys, SecurityError> {
        let error = |message: String| SecurityError::Jwks {
            source_name: source_name.to_string(),
            message,
        };
        let set: JwkSet =
            serde_json::from_slice(text).map_err(|e| error(format!("not a JWKS: {e}")))?;
        let keys = set
            .keys
            .iter()
            .enumerate()
            .map(|(index, jwk)| {
                if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
                    return Err(error(format!(
                        "keys[{index}] is a symmetric key; only public keys (RSA, EC, OKP) are accepted"
                    )));
                }
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| error(format!("keys[{index}]: {e}")))?;
                let algorithm = jwk
                    .common
                    .key_algorithm
                    .map(|alg| alg.to_string().parse::<Algorithm>())
                    .transpose()
                    .map_err(|e| error(format!("keys[{index}]: {e}")))?;
                Ok(SigningKey {
                    kid: jwk.common.key_id.clone(),
                    algorithm,
                    key,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(error("the key set is empty".to_string()));
        }
        Ok(Keys(keys))
    }

    fn find(&self, kid: Option<&str>) -> Result<&SigningKey, Denial> {
        match kid {
            Some(kid) => self
                .0
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or_else(|| invalid(format!("no key with kid '{kid}' in the JWKS"))),
            None if self.0.len() == 1 => Ok(&self.0[0]),
            None => Err(invalid(
                "the token has no 'kid' and the JWKS has several keys".to_string(),
            )),
        }
    }
}

fn invalid(reason: String) -> Denial {
    Denial::Unauthenticated(format!("invalid bearer token: {reason}"))
}

enum Source {
    File(WatchedFiles),
    Url {
        url: String,
        client: reqwest::Client,
        fetched: Mutex<Instant>,
    },
}

/// Validates JWT bearer tokens.
pub struct JwtVerifier {
    options: JwtOptions,
    source: Source,
    keys: ArcSwap<Keys>,
    /// Verified tokens by their SHA-256, until they expire.
    cache: TokenCache<Arc<Principal>>,
}

impl JwtVerifier {
    /// Reads or fetches the JWKS.
    pub async fn load(options: JwtOptions) -> Result<JwtVerifier, SecurityError> {
        let (source, keys) = match &options.jwks {
            JwksSource::File(path) => {
                let (watched, contents) = WatchedFiles::read(vec![path.clone()])?;
                let keys = Keys::parse(&contents[0], &path.display().to_string())?;
                (Source::File(watched), keys)
            }
            JwksSource::Url(url) => {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .build()
                    .map_err(|e| SecurityError::Jwks {
                        source_name: url.clone(),
                        message: e.to_string(),
                    })?;
                let keys = fetch(&client, url).await?;
                let fetched = Mutex::new(Instant::now());
                let url = url.clone();
                (
                    Source::Url {
                        url,
                        client,
                        fetched,
                    },
                    keys,
                )
            }
        };
        tracing::info!(keys = keys.0.len(), source = ?options.jwks, "JWKS loaded");
        Ok(JwtVerifier {
            options,
            source,
            keys: ArcSwap::from_pointee(keys),
            cache: TokenCache::new(CACHE_LIMIT),
        })
    }

    /// Picks up a changed JWKS file, or fetches the URL again when it is due;
    /// keeps the previous keys if the new ones are unusable. Says whether the
    /// keys changed.
    pub async fn reload(&self) -> bool {
        let keys = match &self.source {
            Source::File(watched) => match watched.changed() {
                Some(contents) => Keys::parse(&contents[0], &watched.path().display().to_string()),
                None => return false,
            },
            Source::Url {
                url,
                client,
                fetched,
            } => {
                {
                    let mut fetched = fetched.lock().unwrap_or_else(|e| e.into_inner());
                    if fetched.elapsed() < self.options.refresh {
                        return false;
                    }
                    *fetched = Instant::now();
                }
                fetch(client, url).await
            }
        };
        match keys {
            Ok(keys) => {
                tracing::info!(keys = keys.0.len(), "JWKS reloaded");
                self.keys.store(Arc::new(keys));
                self.cache.clear();
                true
            }
            Err(error) => {
                tracing::warn!(%error, "keeping the previous JWKS");
                false
            }
        }
    }

    /// The principal a valid token stands for, and the Unix second after which
    /// the token no longer holds (its `exp` plus the leeway).
    pub fn verify(&self, token: &str) -> Result<(Arc<Principal>, u64), Denial> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_seconds();
        if let Some(cached) = self.cache.get(&digest, now) {
            return Ok(cached);
        }
        let (principal, exp) = self.verify_signature_and_claims(token)?;
        let expires = exp.saturating_add(self.options.leeway_seconds);
        self.cache
            .insert(digest, Arc::clone(&principal), expires, now);
        Ok((principal, expires))
    }

    fn verify_signature_and_claims(&self, token: &str) -> Result<(Arc<Principal>, u64), Denial> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted; tokens must be signed with a key from the JWKS",
                header.alg
            )));
        }
        let keys = self.keys.load();
        let key = keys.find(header.kid.as_deref())?;
        if let Some(algorithm) = key.algorithm
            && algorithm != header.alg
        {
            return Err(invalid(format!(
                "the token says {:?} but its key is for {algorithm:?}",
                header.alg
            )));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.options.issuer]);
        validation.set_audience(&[&self.options.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.options.leeway_seconds;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key.key,
            &validation,
        )
        .map_err(|e| invalid(describe(&e, &self.options)))?;
        let claims = data.claims;
        let sub = claims
            .get("sub")
            .and_then(|v| v.as_str())
            .ok_or_else(|| invalid("'sub' must be a string".to_string()))?;
        let exp = claims.get("exp").and_then(|v| v.as_u64()).unwrap_or(0);
        let models = model_scope(claims.get(&self.options.models_claim));
        let principal = Principal {
            id: format!("jwt:{sub}").into(),
            method: AuthMethod::Jwt,
            models,
        };
        Ok((Arc::new(principal), exp))
    }
}

/// The models a token's claim allows: none when the claim is absent.
fn model_scope(claim: Option<&serde_json::Value>) -> ModelScope {
    let names: Vec<String> = match claim {
        Some(serde_json::Value::String(text)) => {
            text.split_whitespace().map(str::to_string).collect()
        }
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    ModelScope::from_names(names)
}

/// A message for a validation failure that says which check failed.
fn describe(error: &jsonwebtoken::errors::Error, options: &JwtOptions) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match error.kind() {
        ErrorKind::ExpiredSignature => "the token has expired".to_string(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_string(),
        ErrorKind::InvalidIssuer => format!("the issuer is not '{}'", options.issuer),
        ErrorKind::InvalidAudience => {
            format!("the audience does not include '{}'", options.audience)
        }
        ErrorKind::InvalidSignature => "the signature does not verify".to_string(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the '{claim}' claim is missing"),
        _ => error.to_string(),
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Keys, SecurityError> {
    let error = |message: String| SecurityError::Jwks {
        source_name: url.to_string(),
        message,
    };
    let response = client
        .get(url)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| error(e.to_string()))?;
    let body = response.bytes().await.map_err(|e| error(e.to_string()))?;
    Keys::parse(&body, url)
}

/// The time in Unix seconds.
pub fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_models_claim_is_an_array_or_a_space_separated_string() {
        let only = |names: &[&str]| ModelScope::Only(names.iter().map(|n| n.to_string()).collect());
        assert_eq!(model_scope(Some(&json!(["a", "b"]))), only(&["a", "b"]));
        assert_eq!(model_scope(Some(&json!("a b"))), only(&["a", "b"]));
        assert_eq!(model_scope(Some(&json!("*"))), ModelScope::All);
        assert_eq!(model_scope(None), only(&[]));
        assert_eq!(model_scope(Some(&json!(3))), only(&[]));
    }

    #[test]
    fn symmetric_or_empty_key_sets_are_refused() {
        let oct = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#;
        let error = Keys::parse(oct, "f").err().unwrap().to_string();
        assert!(error.contains("symmetric"), "{error}");
        let error = Keys::parse(br#"{"keys":[]}"#, "f")
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("empty"), "{error}");
        let error = Keys::parse(b"nope", "f").err().unwrap().to_string();
        assert!(error.contains("not a JWKS"), "{error}");
    }
}
