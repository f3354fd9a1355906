//! `sluice-server fetch`: downloads a model (or another file beside it, such as a
//! reference profile) for an init container, verifies its SHA-256 digest and
//! writes it as `DEST/model.onnx` (or `DEST/<file name>`), atomically. Nothing is
//! written unless the whole file arrived and (when a digest is given) matches.
//!
//! Sources: `file://` paths, `http://` and `https://` URLs, and `s3://bucket/key`
//! through the S3 API (credentials from `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`; region from
//! `AWS_REGION`, default `us-east-1`; endpoint from `AWS_ENDPOINT_URL`, default AWS).
//! A `pvc://` URI is mounted by the operator and fetched as the `file://` path.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// The name a model gets inside the destination folder by default.
pub const MODEL_FILE: &str = "model.onnx";

/// Why a model could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("unsupported storage URI '{0}': use file://, http://, https:// or s3://")]
    UnsupportedScheme(String),
    #[error("invalid storage URI '{uri}': {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("invalid sha256 '{0}': expected 64 hexadecimal characters")]
    InvalidDigest(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("download of {uri} failed: {reason}")]
    Download { uri: String, reason: String },
    #[error("sha256 mismatch for {uri}: expected {expected}, got {actual}; nothing was written")]
    DigestMismatch {
        uri: String,
        expected: String,
        actual: String,
    },
}

/// What was fetched.
#[derive(Debug)]
pub struct Fetched {
    /// Where the model now is.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its SHA-256 digest, lowercase hexadecimal.
    pub sha256: String,
}

/// A file being written beside its final place, renamed into it only once
/// complete and verified; removed if dropped before that.
struct PartialFile {
    temporary: PathBuf,
    final_path: PathBuf,
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
}

impl PartialFile {
    fn create(dest: &Path, file_name: &str) -> Result<PartialFile, FetchError> {
        let write_error = |source| FetchError::Write {
            path: dest.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dest).map_err(write_error)?;
        let temporary = dest.join(format!(".{file_name}.partial"));
        let file = std::fs::File::create(&temporary).map_err(write_error)?;
        Ok(PartialFile {
            temporary,
            final_path: dest.join(file_name),
            file,
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), FetchError> {
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        self.file
            .write_all(chunk)
            .map_err(|source| FetchError::Write {
                path: self.temporary.display().to_string(),
                source,
            })
    }

    fn finish(mut self, uri: &str, expected: Option<&str>) -> Result<Fetched, FetchError> {
        let actual = hex::encode(self.hasher.clone().finalize());
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(FetchError::DigestMismatch {
                uri: uri.to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        let final_path = self.final_path.clone();
        let write_error = |source| FetchError::Write {
            path: final_path.display().to_string(),
            source,
        };
        self.file.sync_all().map_err(write_error)?;
        std::fs::rename(&self.temporary, &final_path).map_err(write_error)?;
        self.temporary = PathBuf::new();
        Ok(Fetched {
            path: final_path,
            bytes: self.bytes,
            sha256: actual,
        })
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.temporary.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

fn normalize_digest(digest: Option<&str>) -> Result<Option<String>, FetchError> {
    let Some(digest) = digest else {
        return Ok(None);
    };
    let hex = digest
        .strip_prefix("sha256:")
        .unwrap_or(digest)
        .to_ascii_lowercase();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(hex))
    } else {
        Err(FetchError::InvalidDigest(digest.to_string()))
    }
}

/// Where and how to fetch.
pub struct FetchRequest<'a> {
    /// The source URI.
    pub uri: &'a str,
    /// The destination folder.
    pub dest: &'a Path,
    /// The file name inside it.
    pub file_name: &'a str,
    /// The expected digest, if any.
    pub sha256: Option<&'a str>,
    /// Download timeout.
    pub timeout: Duration,
}

/// Fetches `uri` into `dest/file_name`, checking `sha256` when given.
pub async fn fetch(request: FetchRequest<'_>) -> Result<Fetched, FetchError> {
    let FetchRequest {
        uri,
        dest,
        file_name,
        sha256,
        timeout,
    } = request;
    if file_name.is_empty() || file_name.contains('/') || file_name.starts_with('.') {
        return Err(FetchError::InvalidUri {
            uri: uri.to_string(),
            reason: format!("'{file_name}' is not a plain file name"),
        });
    }
    let expected = normalize_digest(sha256)?;
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| FetchError::UnsupportedScheme(uri.to_string()))?;
    let mut partial = PartialFile::create(dest, file_name)?;
    match scheme {
        "file" => copy_file(Path::new(rest), &mut partial)?,
        "http" | "https" => download(uri, uri, &mut partial, timeout, false).await?,
        "s3" => {
            let url = s3_object_url(uri, rest)?;
            let signed = url.contains("X-Amz-Signature=");
            download(uri, &url, &mut partial, timeout, signed).await?
        }
        _ => return Err(FetchError::UnsupportedScheme(uri.to_string())),
    }
    partial.finish(uri, expected.as_deref())
}

fn copy_file(source: &Path, partial: &mut PartialFile) -> Result<(), FetchError> {
    let read_error = |error| FetchError::Read {
        path: source.display().to_string(),
        source: error,
    };
    let mut file = std::fs::File::open(source).map_err(read_error)?;
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer).map_err(read_error)?;
        if read == 0 {
            return Ok(());
        }
        partial.write(&buffer[..read])?;
    }
}

/// Downloads `url` into `partial`; an S3 error document in a refusal is
/// read, with what to check (`signed`: the request carried a signature).
async fn download(
    uri: &str,
    url: &str,
    partial: &mut PartialFile,
    timeout: Duration,
    signed: bool,
) -> Result<(), FetchError> {
    let failed = |reason: String| FetchError::Download {
        uri: uri.to_string(),
        reason,
    };
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let mut response = client
        .get(url)
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let mut reason = format!("HTTP {status}: ");
        match crate::s3::Refusal::read(&body, signed) {
            Some(refusal) => reason += &refusal.to_string(),
            None => reason.extend(body.chars().take(200)),
        }
        return Err(failed(reason));
    }
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(e.to_string()))? {
        partial.write(&chunk)?;
    }
    Ok(())
}

/// A presigned (or, without credentials, plain) URL for `s3://bucket/key`.
fn s3_object_url(uri: &str, rest: &str) -> Result<String, FetchError> {
    let invalid = |reason: String| FetchError::InvalidUri {
        uri: uri.to_string(),
        reason,
    };
    let (bucket_name, key) = crate::s3::split_location(rest)
        .filter(|(_, key)| !key.is_empty())
        .ok_or_else(|| invalid("expected s3://bucket/key".into()))?;
    let s3 = crate::s3::S3Bucket::from_env(bucket_name).map_err(|e| invalid(e.to_string()))?;
    let action = rusty_s3::actions::GetObject::new(&s3.bucket, s3.credentials.as_ref(), key);
    Ok(rusty_s3::actions::S3Action::sign(&action, crate::s3::SIGNED_FOR).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_normalized_and_checked() {
        let hex = "AB".repeat(32);
        assert_eq!(normalize_digest(Some(&hex)).unwrap(), Some("ab".repeat(32)));
        let prefixed = format!("sha256:{}", "0".repeat(64));
        assert_eq!(
            normalize_digest(Some(&prefixed)).unwrap(),
            Some("0".repeat(64))
        );
        assert!(normalize_digest(Some("abc")).is_err());
        assert!(normalize_digest(Some(&"g".repeat(64))).is_err());
    }

    #[test]
    fn s3_uris_need_a_bucket_and_a_key() {
        assert!(s3_object_url("s3://bucket", "bucket").is_err());
        assert!(s3_object_url("s3:///key", "/key").is_err());
    }
}
