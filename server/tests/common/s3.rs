//! A real S3 server for the tests: s3s-fs (pinned and installed by `make deps`,
//! see e2e/s3/deps.sh) serving a fresh temporary folder on a free loopback port,
//! with its own random credentials. It verifies AWS Signature Version 4 (the
//! `Authorization` header and presigned URLs) and refuses unsigned requests, so a
//! test that passes against it proves that the requests were signed correctly.
//!
//! ```ignore
//! let s3 = common::s3::S3Server::start();
//! s3.create_bucket("models").await;
//! s3.put("models", "fraud/3/model.onnx", bytes).await;
//! Command::new(server_binary()).envs(s3.env()).args(["fetch", ...]);
//! assert_eq!(s3.list("predictions", "run-1/").await, ["run-1/part-00000-00000.csv"]);
//! ```
//!
//! The helpers sign every request as `sluice-server` does (presigned URLs from
//! rusty-s3) and panic with the server's answer when it is not a success.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The region the credentials are scoped to (s3s-fs accepts any).
pub const REGION: &str = "us-east-1";

/// How long the helpers' presigned URLs stay valid.
const EXPIRY: Duration = Duration::from_secs(600);

/// The s3s-fs binary: `SLUICE_S3_BIN` when set, else where `make deps` installs it.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_S3_BIN") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("SLUICE_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/sluice"),
        PathBuf::from,
    );
    cache.join("s3s-fs/bin/s3s-fs")
}

/// A running s3s-fs, killed (and its folder removed) when dropped.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`, what `AWS_ENDPOINT_URL` gets.
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    dir: PathBuf,
    client: reqwest::Client,
}

impl S3Server {
    /// Starts s3s-fs on an empty folder and waits until it listens.
    pub fn start() -> S3Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let binary = binary();
        assert!(
            binary.exists(),
            "the test S3 server {} is missing: run `make deps` (or e2e/s3/deps.sh, which installs just it)",
            binary.display()
        );
        let n = STARTED.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sluice-s3-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let secret_key = hex::encode(Sha256::digest(format!(
            "{}-{n}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        )))[..40]
            .to_string();
        let access_key = format!("sluice-test-{n}");
        let log = dir.join("s3s-fs.log");
        // Port 0: the server picks a free port and logs it, so nothing can take it
        // between choosing and binding.
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(dir.join("data"))
            .env("RUST_LOG", "s3s_fs=info,s3s=warn")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("s3s-fs.err")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = S3Server {
            child,
            endpoint: String::new(),
            access_key,
            secret_key,
            dir,
            client: reqwest::Client::new(),
        };
        server.endpoint = server.wait_listening();
        server
    }

    /// The endpoint from the line s3s-fs logs once its socket listens.
    fn wait_listening(&mut self) -> String {
        const READY: &str = "server is running at ";
        let started = Instant::now();
        loop {
            if let Some(at) = self.log().find(READY) {
                let rest = &self.log()[at + READY.len()..];
                return rest.split_whitespace().next().unwrap().to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("s3s-fs exited ({status}) before listening:\n{}", self.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "s3s-fs did not listen within 30 s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What s3s-fs logged so far (stdout, then stderr).
    pub fn log(&self) -> String {
        let read = |name| std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        read("s3s-fs.log") + &read("s3s-fs.err")
    }

    /// The folder the buckets live in (`<bucket>/<key>`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The environment `sluice-server fetch` and `batch` read: endpoint,
    /// credentials and region.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", self.access_key.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.clone()),
            ("AWS_REGION", REGION.to_string()),
        ]
    }

    /// The server's credentials for rusty-s3.
    pub fn credentials(&self) -> rusty_s3::Credentials {
        rusty_s3::Credentials::new(&self.access_key, &self.secret_key)
    }

    /// `bucket` on this server, path-style (as `sluice-server` addresses it).
    pub fn bucket(&self, bucket: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(
            self.endpoint.parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            bucket.to_string(),
            REGION,
        )
        .unwrap()
    }

    /// Sends `request` and returns its status and body; panics when it cannot be sent.
    async fn send(&self, request: reqwest::RequestBuilder) -> (u16, Vec<u8>) {
        let response = request.send().await.expect("request to s3s-fs sent");
        let status = response.status().as_u16();
        (status, response.bytes().await.unwrap().to_vec())
    }

    /// Panics with `what`, the status and the server's answer unless `status` is 2xx.
    fn check(&self, what: &str, (status, body): (u16, Vec<u8>)) -> Vec<u8> {
        assert!(
            (200..300).contains(&status),
            "S3 {what}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        );
        body
    }

    /// CreateBucket.
    pub async fn create_bucket(&self, bucket: &str) {
        let bucket_ = self.bucket(bucket);
        let credentials = self.credentials();
        let url = rusty_s3::S3Action::sign(&bucket_.create_bucket(&credentials), EXPIRY);
        let answer = self.send(self.client.put(url)).await;
        self.check(&format!("CreateBucket {bucket}"), answer);
    }

    /// PutObject: writes `bytes` as `bucket/key` in one request.
    pub async fn put(&self, bucket: &str, key: &str, bytes: impl Into<Vec<u8>>) {
        let bucket_ = self.bucket(bucket);
        let credentials = self.credentials();
        let url = rusty_s3::S3Action::sign(&bucket_.put_object(Some(&credentials), key), EXPIRY);
        let answer = self.send(self.client.put(url).body(bytes.into())).await;
        self.check(&format!("PutObject {bucket}/{key}"), answer);
    }

    /// GetObject: the object's bytes, or `None` when there is no such key.
    pub async fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let answer = self.send(self.client.get(self.get_url(bucket, key))).await;
        if answer.0 == 404 {
            return None;
        }
        Some(self.check(&format!("GetObject {bucket}/{key}"), answer))
    }

    /// A presigned GetObject URL for `bucket/key`, like the one `sluice-server
    /// fetch` makes.
    pub fn get_url(&self, bucket: &str, key: &str) -> String {
        let bucket = self.bucket(bucket);
        let credentials = self.credentials();
        rusty_s3::S3Action::sign(&bucket.get_object(Some(&credentials), key), EXPIRY).to_string()
    }

    /// GetObject as UTF-8 text; panics when the object is missing.
    pub async fn get_text(&self, bucket: &str, key: &str) -> String {
        let bytes = self
            .get(bucket, key)
            .await
            .unwrap_or_else(|| panic!("S3 object {bucket}/{key} is missing"));
        String::from_utf8(bytes).unwrap()
    }

    /// HeadObject: the object's size, or `None` when there is no such key.
    pub async fn head(&self, bucket: &str, key: &str) -> Option<u64> {
        let bucket_ = self.bucket(bucket);
        let credentials = self.credentials();
        let url = rusty_s3::S3Action::sign(&bucket_.head_object(Some(&credentials), key), EXPIRY);
        let response = self.client.head(url).send().await.unwrap();
        match response.status().as_u16() {
            404 => None,
            // Not content_length(): reqwest gives 0 for a HEAD's empty body.
            200 => Some(
                response.headers()[reqwest::header::CONTENT_LENGTH]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap(),
            ),
            status => panic!("S3 HeadObject {bucket}/{key}: HTTP {status}"),
        }
    }

    /// DeleteObject (a missing key is no error, as in S3).
    pub async fn delete(&self, bucket: &str, key: &str) {
        let bucket_ = self.bucket(bucket);
        let credentials = self.credentials();
        let url = rusty_s3::S3Action::sign(&bucket_.delete_object(Some(&credentials), key), EXPIRY);
        let answer = self.send(self.client.delete(url)).await;
        self.check(&format!("DeleteObject {bucket}/{key}"), answer);
    }

    /// Every key under `prefix` in `bucket`, sorted, through as many
    /// ListObjectsV2 pages as it takes.
    pub async fn list(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let (page, next) = self.list_page(bucket, prefix, 1000, token.as_deref()).await;
            keys.extend(page);
            match next {
                Some(next) => token = Some(next),
                None => return keys,
            }
        }
    }

    /// One ListObjectsV2 page of at most `max_keys` keys under `prefix`, after
    /// `continuation` (a previous page's token); returns the keys and the next
    /// page's token while the listing is truncated.
    pub async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        max_keys: usize,
        continuation: Option<&str>,
    ) -> (Vec<String>, Option<String>) {
        let bucket_ = self.bucket(bucket);
        let max_keys = max_keys.to_string();
        // Sorted by name, as rusty_s3::signing::sign requires.
        let mut query = Vec::new();
        if let Some(token) = continuation {
            query.push(("continuation-token", token));
        }
        query.extend([
            ("list-type", "2"),
            ("max-keys", max_keys.as_str()),
            ("prefix", prefix),
        ]);
        let url = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            rusty_s3::Method::Get,
            bucket_.base_url().clone(),
            &self.access_key,
            &self.secret_key,
            None,
            REGION,
            EXPIRY.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        );
        let answer = self.send(self.client.get(url)).await;
        let body = self.check(&format!("ListObjectsV2 {bucket}/{prefix}"), answer);
        parse_list(&String::from_utf8(body).unwrap())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The keys and the next continuation token (when truncated) of a
/// ListObjectsV2 answer: `<Contents><Key>k</Key>...</Contents>...`.
fn parse_list(xml: &str) -> (Vec<String>, Option<String>) {
    let keys = xml
        .split("<Contents>")
        .skip(1)
        .map(|contents| element(contents, "Key").expect("<Contents> without <Key>"))
        .collect();
    let truncated = element(xml, "IsTruncated").is_some_and(|value| value == "true");
    let next = element(xml, "NextContinuationToken").filter(|_| truncated);
    (keys, next)
}

/// The text of the first `<name>` element in `xml`, unescaped.
fn element(xml: &str, name: &str) -> Option<String> {
    let start = xml.find(&format!("<{name}>"))? + name.len() + 2;
    let end = start + xml[start..].find(&format!("</{name}>"))?;
    Some(unescape(&xml[start..end]))
}

/// XML's predefined entities and character references.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';').expect("unterminated XML entity") + at;
        let entity = &rest[at + 1..end];
        let decoded = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = match entity.strip_prefix("#x") {
                    Some(hex) => u32::from_str_radix(hex, 16),
                    None => entity.trim_start_matches('#').parse(),
                };
                char::from_u32(code.expect("XML character reference")).unwrap()
            }
        };
        out.push(decoded);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
