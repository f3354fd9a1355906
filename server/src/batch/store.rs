//! Where a batch job's files live: a local folder (or one file) or an S3
//! prefix. Inputs are listed and read as streams; outputs are published
//! whole: a local file is written under a hidden temporary name in the same
//! folder and renamed, an S3 object is sent in one PUT once its file is
//! complete, so a reader never sees half a part.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusty_s3::S3Action;
use rusty_s3::actions::{GetObject, ListObjectsV2, PutObject};

use crate::s3::{Refusal, S3Bucket, SIGNED_FOR, split_location};

use super::{BatchError, Format};

/// One input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its name, as output rows and messages give it: the path or key below
    /// the input location (the file's own name for a single file).
    pub name: String,
    /// Where it is: a local path, or an S3 key.
    pub location: String,
}

/// A local folder or an S3 prefix.
pub enum Store {
    /// A local path (a folder, or for an input a single file).
    Local(PathBuf),
    /// An S3 bucket and a prefix within it.
    S3 {
        /// The bucket and its credentials.
        bucket: Box<S3Bucket>,
        /// The key prefix, without a trailing `/`.
        prefix: String,
        /// The HTTP client (connections kept open between requests).
        client: reqwest::blocking::Client,
        /// A local folder for parts before their upload.
        staging: PathBuf,
    },
}

impl Store {
    /// The store `uri` names: `s3://bucket/prefix`, `file://path` or a path.
    pub fn parse(uri: &str) -> Result<Store, BatchError> {
        let usage = |message: &str| BatchError::Usage(format!("{uri}: {message}"));
        if let Some(rest) = uri.strip_prefix("s3://") {
            let (bucket, prefix) = split_location(rest).ok_or_else(|| usage("no bucket"))?;
            let bucket = S3Bucket::from_env(bucket).map_err(|e| usage(&e.to_string()))?;
            let client = reqwest::blocking::Client::builder()
                .timeout(std::time::Duration::from_secs(600))
                .build()
                .map_err(|e| usage(&e.to_string()))?;
            let staging = std::env::temp_dir().join(format!("sluice-batch-{}", std::process::id()));
            return Ok(Store::S3 {
                bucket: Box::new(bucket),
                prefix: prefix.trim_end_matches('/').to_string(),
                client,
                staging,
            });
        }
        let path = uri.strip_prefix("file://").unwrap_or(uri);
        if path.is_empty() || (uri.contains("://") && !uri.starts_with("file://")) {
            return Err(usage("unsupported location: use a path, file:// or s3://"));
        }
        Ok(Store::Local(PathBuf::from(path)))
    }

    /// The location as the user wrote it, for messages and the summary.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(path) => path.display().to_string(),
            Store::S3 { bucket, prefix, .. } => {
                format!("s3://{}/{prefix}", bucket.bucket.name())
            }
        }
    }

    /// The input files, sorted by name: the one file, or every file below the
    /// folder or prefix in `format` (from the names when `None`). Names
    /// starting with `_` or `.` are skipped at every level (`_SUCCESS`, a
    /// manifest, a temporary file).
    pub fn list(&self, format: Option<Format>) -> Result<(Vec<Object>, Format), BatchError> {
        let mut objects = match self {
            Store::Local(path) => list_local(path)?,
            Store::S3 { .. } => self.list_s3()?,
        };
        objects.retain(|o| !o.name.split('/').any(|p| p.starts_with(['_', '.'])));
        let format = match format {
            Some(format) => format,
            None => objects
                .iter()
                .find_map(|o| Format::from_name(&o.name))
                .ok_or_else(|| {
                    BatchError::Input(format!(
                        "{}: no .csv, .jsonl, .parquet or .npy file; name the format with --format",
                        self.describe()
                    ))
                })?,
        };
        let single = objects.len() == 1 && matches!(self, Store::Local(p) if p.is_file());
        if !single {
            objects.retain(|o| Format::from_name(&o.name) == Some(format));
        }
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        if objects.is_empty() {
            return Err(BatchError::Input(format!(
                "{}: no .{} file to read",
                self.describe(),
                format.extension()
            )));
        }
        Ok((objects, format))
    }

    fn list_s3(&self) -> Result<Vec<Object>, BatchError> {
        let Store::S3 {
            bucket,
            prefix,
            client,
            ..
        } = self
        else {
            unreachable!("list_s3 on a local store")
        };
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut action = ListObjectsV2::new(&bucket.bucket, bucket.credentials.as_ref());
            if !prefix.is_empty() {
                action.with_prefix(prefix.as_str());
            }
            if let Some(token) = &token {
                action.with_continuation_token(token.as_str());
            }
            let url = action.sign(SIGNED_FOR);
            let body = send(client.get(url), &self.describe())?
                .text()
                .map_err(|e| BatchError::Input(format!("{}: {e}", self.describe())))?;
            let listing = ListObjectsV2::parse_response(&body).map_err(|e| {
                BatchError::Input(format!("{}: unreadable listing: {e}", self.describe()))
            })?;
            for content in listing.contents {
                // `s3://b/data` is the object `data` or the objects under `data/`.
                let name = if content.key == *prefix {
                    content
                        .key
                        .rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .to_string()
                } else if prefix.is_empty() {
                    content.key.clone()
                } else if let Some(name) = content.key.strip_prefix(&format!("{prefix}/")) {
                    name.to_string()
                } else {
                    continue;
                };
                if !name.is_empty() && !content.key.ends_with('/') {
                    objects.push(Object {
                        name,
                        location: content.key,
                    });
                }
            }
            match listing.next_continuation_token {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }

    /// A stream of one input file's bytes.
    pub fn open(&self, object: &Object) -> Result<Box<dyn Read + Send>, BatchError> {
        match self {
            Store::Local(_) => {
                let file = std::fs::File::open(&object.location)
                    .map_err(|e| BatchError::Input(format!("{}: {e}", object.location)))?;
                Ok(Box::new(file))
            }
            Store::S3 { bucket, client, .. } => {
                let action = GetObject::new(
                    &bucket.bucket,
                    bucket.credentials.as_ref(),
                    &object.location,
                );
                let shown = format!("s3://{}/{}", bucket.bucket.name(), object.location);
                Ok(Box::new(send(client.get(action.sign(SIGNED_FOR)), &shown)?))
            }
        }
    }

    /// One input file as a local file (Parquet needs to seek): the file
    /// itself, or a download into `scratch`.
    pub fn local_copy(&self, object: &Object, scratch: &Path) -> Result<PathBuf, BatchError> {
        if let Store::Local(_) = self {
            return Ok(PathBuf::from(&object.location));
        }
        let failed = |e: std::io::Error| BatchError::Input(format!("{}: {e}", object.name));
        std::fs::create_dir_all(scratch).map_err(failed)?;
        let path = scratch.join("input.download");
        let mut file = std::fs::File::create(&path).map_err(failed)?;
        std::io::copy(&mut self.open(object)?, &mut file).map_err(failed)?;
        Ok(path)
    }

    /// Reads the output file `name`, or `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, BatchError> {
        match self {
            Store::Local(root) => match std::fs::read(root.join(name)) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(BatchError::Output(format!(
                    "{}: {e}",
                    root.join(name).display()
                ))),
            },
            Store::S3 {
                bucket,
                prefix,
                client,
                ..
            } => {
                let key = join_key(prefix, name);
                let action = GetObject::new(&bucket.bucket, bucket.credentials.as_ref(), &key);
                let shown = format!("s3://{}/{key}", bucket.bucket.name());
                let response = client
                    .get(action.sign(SIGNED_FOR))
                    .send()
                    .map_err(|e| BatchError::Output(format!("{shown}: {e}")))?;
                if response.status() == reqwest::StatusCode::NOT_FOUND {
                    let body = response.text().unwrap_or_default();
                    if Refusal::read(&body, true).is_some_and(|r| r.code == "NoSuchBucket") {
                        return Err(BatchError::Output(format!(
                            "{shown}: the bucket does not exist (NoSuchBucket)"
                        )));
                    }
                    return Ok(None);
                }
                let mut response = check(response, &shown).map_err(as_output)?;
                let mut bytes = Vec::new();
                response
                    .read_to_end(&mut bytes)
                    .map_err(|e| BatchError::Output(format!("{shown}: {e}")))?;
                Ok(Some(bytes))
            }
        }
    }

    /// A local path to write the output file `name` into before
    /// [`Store::publish`] makes it visible.
    pub fn staging_path(&self, name: &str) -> Result<PathBuf, BatchError> {
        let (folder, file) = match self {
            Store::Local(root) => {
                let path = root.join(name);
                let folder = path.parent().unwrap_or(root).to_path_buf();
                let file = path.file_name().unwrap_or_default().to_string_lossy();
                (folder, format!(".{file}.tmp"))
            }
            Store::S3 { staging, .. } => (staging.clone(), name.replace('/', "%2F")),
        };
        std::fs::create_dir_all(&folder)
            .map_err(|e| BatchError::Output(format!("{}: {e}", folder.display())))?;
        Ok(folder.join(file))
    }

    /// Makes the staged file `staged` visible as the output file `name`, in
    /// one step.
    pub fn publish(&self, staged: &Path, name: &str) -> Result<(), BatchError> {
        match self {
            Store::Local(root) => std::fs::rename(staged, root.join(name))
                .map_err(|e| BatchError::Output(format!("{}: {e}", root.join(name).display()))),
            Store::S3 {
                bucket,
                prefix,
                client,
                ..
            } => {
                let key = join_key(prefix, name);
                let shown = format!("s3://{}/{key}", bucket.bucket.name());
                let file = std::fs::File::open(staged)
                    .map_err(|e| BatchError::Output(format!("{}: {e}", staged.display())))?;
                let length = file
                    .metadata()
                    .map_err(|e| BatchError::Output(format!("{}: {e}", staged.display())))?
                    .len();
                let action = PutObject::new(&bucket.bucket, bucket.credentials.as_ref(), &key);
                let request = client
                    .put(action.sign(SIGNED_FOR))
                    .body(reqwest::blocking::Body::sized(file, length));
                send(request, &shown).map_err(as_output)?;
                std::fs::remove_file(staged)
                    .map_err(|e| BatchError::Output(format!("{}: {e}", staged.display())))
            }
        }
    }

    /// Writes `bytes` as the output file `name`, published in one step.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), BatchError> {
        let staged = self.staging_path(name)?;
        std::fs::write(&staged, bytes)
            .map_err(|e| BatchError::Output(format!("{}: {e}", staged.display())))?;
        self.publish(&staged, name)
    }
}

/// Every file below `path` (or `path` itself), named relative to it.
fn list_local(path: &Path) -> Result<Vec<Object>, BatchError> {
    let unreadable =
        |p: &Path, e: std::io::Error| BatchError::Input(format!("{}: {e}", p.display()));
    let metadata = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
    if metadata.is_file() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        return Ok(vec![Object {
            name: name.into_owned(),
            location: path.display().to_string(),
        }]);
    }
    let mut objects = Vec::new();
    let mut folders = vec![path.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| unreadable(&folder, e))? {
            let entry = entry.map_err(|e| unreadable(&folder, e))?;
            let file_type = entry
                .file_type()
                .map_err(|e| unreadable(&entry.path(), e))?;
            if file_type.is_dir() {
                folders.push(entry.path());
            } else {
                let name = entry
                    .path()
                    .strip_prefix(path)
                    .unwrap_or(&entry.path())
                    .to_owned();
                objects.push(Object {
                    name: name.to_string_lossy().into_owned(),
                    location: entry.path().display().to_string(),
                });
            }
        }
    }
    Ok(objects)
}

fn join_key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Sends `request`, turning a refusal into an error that names `shown` and
/// S3's own code (a bad signature or key into [`BatchError::Credentials`]).
fn send(
    request: reqwest::blocking::RequestBuilder,
    shown: &str,
) -> Result<reqwest::blocking::Response, BatchError> {
    let response = request
        .send()
        .map_err(|e| BatchError::Input(format!("{shown}: {e}")))?;
    check(response, shown)
}

fn check(
    response: reqwest::blocking::Response,
    shown: &str,
) -> Result<reqwest::blocking::Response, BatchError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let signed = response
        .url()
        .query()
        .is_some_and(|q| q.contains("X-Amz-Signature="));
    let body = response.text().unwrap_or_default();
    let Some(refusal) = Refusal::read(&body, signed) else {
        let excerpt: String = body.chars().take(200).collect();
        return Err(BatchError::Input(format!(
            "{shown}: HTTP {status}: {excerpt}"
        )));
    };
    let text = format!("{shown}: HTTP {status}: {refusal}");
    Err(if refusal.code == "NoSuchBucket" {
        BatchError::Input(format!(
            "{shown}: the bucket does not exist (HTTP {status} NoSuchBucket)"
        ))
    } else if refusal.is_credentials() {
        BatchError::Credentials(text)
    } else {
        BatchError::Input(text)
    })
}

/// An input-side error met while writing output, labelled as output.
fn as_output(error: BatchError) -> BatchError {
    match error {
        BatchError::Input(message) => BatchError::Output(message),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse_as_paths_or_s3_prefixes() {
        assert!(
            matches!(Store::parse("/data/in").unwrap(), Store::Local(p) if p == Path::new("/data/in"))
        );
        assert!(
            matches!(Store::parse("file:///data/in").unwrap(), Store::Local(p) if p == Path::new("/data/in"))
        );
        let Store::S3 { prefix, .. } = Store::parse("s3://data/new/").unwrap() else {
            panic!("not s3")
        };
        assert_eq!(prefix, "new");
        assert!(Store::parse("ftp://x/y").is_err());
        assert!(Store::parse("s3://").is_err());
    }

    #[test]
    fn a_folder_lists_its_files_and_skips_hidden_and_underscored_ones() {
        let dir = std::env::temp_dir().join(format!("sluice-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("day=2/_tmp")).unwrap();
        for name in [
            "b.csv",
            "a.csv",
            "day=2/c.csv",
            "day=2/_tmp/x.csv",
            ".a.csv.tmp",
            "_SUCCESS",
            "notes.txt",
        ] {
            std::fs::write(dir.join(name), "x\n").unwrap();
        }
        let (objects, format) = Store::Local(dir.clone()).list(None).unwrap();
        assert_eq!(format, Format::Csv);
        let names: Vec<_> = objects.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a.csv", "b.csv", "day=2/c.csv"]);
        let error = Store::Local(dir.clone())
            .list(Some(Format::Npy))
            .unwrap_err();
        assert!(error.to_string().contains("no .npy file"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
