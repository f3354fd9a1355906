//! S3 addressing and signing from the environment, shared by `fetch` and
//! `batch`: the variables the AWS tools read (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! default `us-east-1`) and `AWS_ENDPOINT_URL` for an S3-compatible server,
//! which is then addressed path-style. Requests are signed with SigV4 by
//! `rusty-s3`, as presigned URLs.

use std::time::Duration;

use rusty_s3::{Bucket, Credentials, UrlStyle};

/// How long a signed URL stays valid.
pub const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// Why an S3 location cannot be addressed.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// `AWS_ENDPOINT_URL` does not parse.
    #[error("AWS_ENDPOINT_URL is not a valid URL")]
    Endpoint,
    /// The bucket name is not one S3 accepts.
    #[error("bucket '{bucket}': {message}")]
    Bucket { bucket: String, message: String },
}

/// A bucket and the credentials that sign requests to it.
#[derive(Debug, Clone)]
pub struct S3Bucket {
    /// The bucket, addressed at its endpoint.
    pub bucket: Bucket,
    /// The credentials, when the environment has them (unsigned requests otherwise).
    pub credentials: Option<Credentials>,
}

impl S3Bucket {
    /// The bucket `name`, at the endpoint and with the credentials of the environment.
    pub fn from_env(name: &str) -> Result<S3Bucket, S3Error> {
        let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_string());
        let (endpoint, style) = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(endpoint) if !endpoint.is_empty() => (endpoint, UrlStyle::Path),
            _ => (
                format!("https://s3.{region}.amazonaws.com"),
                UrlStyle::VirtualHost,
            ),
        };
        let endpoint = endpoint.parse().map_err(|_| S3Error::Endpoint)?;
        let bucket = Bucket::new(endpoint, style, name.to_string(), region).map_err(|e| {
            S3Error::Bucket {
                bucket: name.to_string(),
                message: e.to_string(),
            }
        })?;
        let credentials = match (
            std::env::var("AWS_ACCESS_KEY_ID"),
            std::env::var("AWS_SECRET_ACCESS_KEY"),
        ) {
            (Ok(key), Ok(secret)) => Some(match std::env::var("AWS_SESSION_TOKEN") {
                Ok(token) => Credentials::new_with_token(key, secret, token),
                Err(_) => Credentials::new(key, secret),
            }),
            _ => None,
        };
        Ok(S3Bucket {
            bucket,
            credentials,
        })
    }
}

/// Splits `s3://bucket/rest` (given without the scheme) into the bucket and
/// the rest, which may be empty.
pub fn split_location(rest: &str) -> Option<(&str, &str)> {
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    (!bucket.is_empty()).then_some((bucket, key))
}

/// S3's answer to a refused request: its error code and message, and what
/// to check.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal<'a> {
    /// S3's error code (`SignatureDoesNotMatch`, `NoSuchBucket`, ...).
    pub code: &'a str,
    /// S3's message, which may be empty.
    pub message: &'a str,
    /// What to check, for the codes that point at the caller's settings.
    pub hint: Option<&'static str>,
}

impl<'a> Refusal<'a> {
    /// Reads an S3 error document (`<Error><Code>..`); `signed` says whether
    /// the refused request carried a signature.
    pub fn read(body: &'a str, signed: bool) -> Option<Refusal<'a>> {
        let element = |name: &str| {
            let start = body.find(&format!("<{name}>"))? + name.len() + 2;
            Some(&body[start..start + body[start..].find(&format!("</{name}>"))?])
        };
        let code = element("Code")?;
        Some(Refusal {
            code,
            message: element("Message").unwrap_or(""),
            hint: hint(code, signed),
        })
    }

    /// Whether the refusal is about the credentials or the signature.
    pub fn is_credentials(&self) -> bool {
        self.hint.is_some() && self.code != "NoSuchBucket"
    }
}

impl std::fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.code)?;
        let notes: Vec<&str> = [self.message, self.hint.unwrap_or_default()]
            .into_iter()
            .filter(|note| !note.is_empty())
            .collect();
        if !notes.is_empty() {
            write!(f, " ({})", notes.join("; "))?;
        }
        Ok(())
    }
}

/// What to check when S3 refuses a request with `code`.
fn hint(code: &str, signed: bool) -> Option<&'static str> {
    Some(match code {
        "AccessDenied" if !signed => {
            "the request was not signed: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        }
        "AccessDenied" => "AWS_ACCESS_KEY_ID may not do this",
        "SignatureDoesNotMatch" => "the signature is wrong: check AWS_SECRET_ACCESS_KEY",
        "InvalidAccessKeyId" | "NotSignedUp" => "the server does not know AWS_ACCESS_KEY_ID",
        "ExpiredToken" | "InvalidToken" | "TokenRefreshRequired" => "check AWS_SESSION_TOKEN",
        "AuthorizationQueryParametersError" | "AuthorizationHeaderMalformed" => "check AWS_REGION",
        "RequestTimeTooSkewed" => "this machine's clock is off",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_read_with_what_to_check() {
        let body = "<Error><Code>SignatureDoesNotMatch</Code><Message></Message></Error>";
        let refusal = Refusal::read(body, true).unwrap();
        assert!(refusal.is_credentials());
        assert_eq!(
            refusal.to_string(),
            "SignatureDoesNotMatch (the signature is wrong: check AWS_SECRET_ACCESS_KEY)"
        );
        let body = "<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>";
        let refusal = Refusal::read(body, true).unwrap();
        assert!(!refusal.is_credentials());
        assert_eq!(refusal.to_string(), "NoSuchBucket (gone)");
        assert_eq!(Refusal::read("<html>", true), None);
    }
}
