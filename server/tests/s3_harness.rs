//! The test S3 server (tests/common/s3.rs, s3s-fs) refuses what S3 refuses: a
//! request signed with a wrong secret, a tampered or expired presigned URL, a body
//! that is not the one signed, an unsigned request. So the S3 tests that pass
//! against it (fetch, batch) prove that `sluice-server` signs its requests. Also
//! checks the helpers the tests use: buckets, objects, listing with continuation.

mod common;

use std::time::Duration;

use common::s3::{REGION, S3Server};
use rusty_s3::S3Action;
use sha2::{Digest, Sha256};

/// Status and body of a GET of `url`.
async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn objects_round_trip_and_list_with_continuation() {
    let s3 = S3Server::start();
    s3.create_bucket("data").await;
    let keys = [
        "run/a/part-00000.csv",
        "run/a/part-00001.csv",
        "run/a/sub/part-00002.csv",
        "run/a/with space & ampersand+plus.csv",
        "run/a/ünïcode.csv",
        "run/b/other.csv",
        "top.csv",
    ];
    for (i, key) in keys.iter().enumerate() {
        s3.put("data", key, format!("row {i}\n")).await;
    }
    assert_eq!(s3.get_text("data", "run/a/ünïcode.csv").await, "row 4\n");
    assert_eq!(s3.head("data", "top.csv").await, Some(6));
    assert_eq!(s3.get("data", "run/a/none.csv").await, None);
    assert_eq!(s3.head("data", "run/a/none.csv").await, None);

    let under_a: Vec<String> = keys[..5].iter().map(|k| k.to_string()).collect();
    assert_eq!(s3.list("data", "run/a/").await, under_a);
    assert_eq!(s3.list("data", "").await.len(), keys.len());
    assert!(s3.list("data", "nothing/").await.is_empty());
    // Two keys a page: three pages, each after the last one's token.
    let (page, token) = s3.list_page("data", "run/a/", 2, None).await;
    assert_eq!(page, under_a[..2]);
    let (page, token) = s3.list_page("data", "run/a/", 2, token.as_deref()).await;
    assert_eq!(page, under_a[2..4]);
    let (page, token) = s3.list_page("data", "run/a/", 2, token.as_deref()).await;
    assert_eq!((page.as_slice(), token), (&under_a[4..], None));

    s3.put("data", "top.csv", "replaced").await;
    assert_eq!(s3.get_text("data", "top.csv").await, "replaced");
    s3.delete("data", "top.csv").await;
    s3.delete("data", "top.csv").await;
    assert_eq!(s3.get("data", "top.csv").await, None);
    assert_eq!(s3.list("data", "top").await, Vec::<String>::new());
    assert!(s3.root().join("data/run/a/part-00000.csv").is_file());
}

#[tokio::test]
async fn presigned_urls_are_verified() {
    let s3 = S3Server::start();
    s3.create_bucket("models").await;
    s3.put("models", "fraud/3/model.onnx", "weights").await;
    let bucket = s3.bucket("models");
    let url = s3.get_url("models", "fraud/3/model.onnx");
    assert_eq!(get(&url).await, (200, "weights".to_string()));

    let wrong = rusty_s3::Credentials::new(&s3.access_key, format!("{}x", s3.secret_key));
    let unknown = rusty_s3::Credentials::new("nobody", &s3.secret_key);
    let signed_with = |credentials: &rusty_s3::Credentials| {
        bucket
            .get_object(Some(credentials), "fraud/3/model.onnx")
            .sign(Duration::from_secs(60))
            .to_string()
    };
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let expired = bucket
        .get_object(Some(&s3.credentials()), "fraud/3/model.onnx")
        .sign_with_time(Duration::from_secs(60), &an_hour_ago)
        .to_string();
    let last = url.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let unsigned = bucket.object_url("fraud/3/model.onnx").to_string();
    for (what, url, reason) in [
        ("wrong secret", signed_with(&wrong), "SignatureDoesNotMatch"),
        ("unknown access key", signed_with(&unknown), "NotSignedUp"),
        ("signature changed", flipped, "SignatureDoesNotMatch"),
        (
            "key changed",
            url.replace("fraud/3", "fraud/4"),
            "SignatureDoesNotMatch",
        ),
        (
            "expiry lengthened",
            url.replace("X-Amz-Expires=600", "X-Amz-Expires=6000"),
            "SignatureDoesNotMatch",
        ),
        ("expired", expired, "Request has expired"),
        ("unsigned", unsigned, "Signature is required"),
    ] {
        let (status, body) = get(&url).await;
        assert_eq!(status, 403, "{what}: {body}");
        assert!(body.contains(reason), "{what}: {body}");
    }

    // A presigned PUT is bound to its key too.
    let put = bucket
        .put_object(Some(&s3.credentials()), "fraud/4/model.onnx")
        .sign(Duration::from_secs(60))
        .to_string();
    let client = reqwest::Client::new();
    let elsewhere = put.replace("fraud/4", "fraud/5");
    let status = client.put(&elsewhere).body("x").send().await.unwrap();
    assert_eq!(status.status(), 403);
    assert_eq!(s3.head("models", "fraud/5/model.onnx").await, None);
    let status = client.put(&put).body("x").send().await.unwrap();
    assert_eq!(status.status(), 200);
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

/// A request signed in its `Authorization` header (AWS Signature Version 4, as
/// the AWS SDKs sign), for `path` on `s3` with `body`, whose signed payload
/// hash is that of `signed_body`.
fn header_signed(
    s3: &S3Server,
    method: reqwest::Method,
    path: &str,
    secret: &str,
    body: &'static str,
    signed_body: &str,
) -> reqwest::RequestBuilder {
    let host = s3.endpoint.trim_start_matches("http://");
    let now = jiff::Timestamp::now();
    let (date, day) = (
        now.strftime("%Y%m%dT%H%M%SZ").to_string(),
        now.strftime("%Y%m%d").to_string(),
    );
    let payload = hex::encode(Sha256::digest(signed_body));
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!(
        "{method}\n{path}\n\nhost:{host}\nx-amz-content-sha256:{payload}\nx-amz-date:{date}\n\n{signed_headers}\n{payload}"
    );
    let scope = format!("{day}/{REGION}/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(&canonical))
    );
    let mut key = hmac(format!("AWS4{secret}").as_bytes(), day.as_bytes());
    for part in [REGION, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, to_sign.as_bytes()));
    reqwest::Client::new()
        .request(method, format!("{}{path}", s3.endpoint))
        .header("x-amz-date", date)
        .header("x-amz-content-sha256", payload)
        .header(
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
                s3.access_key
            ),
        )
        .body(body)
}

#[tokio::test]
async fn header_signatures_and_signed_bodies_are_verified() {
    let s3 = S3Server::start();
    s3.create_bucket("models").await;
    let (right, wrong) = (s3.secret_key.clone(), format!("{}x", s3.secret_key));
    let put = |secret: &str, body, signed_body| {
        header_signed(
            &s3,
            reqwest::Method::PUT,
            "/models/header.txt",
            secret,
            body,
            signed_body,
        )
        .send()
    };
    let response = put(&wrong, "text", "text").await.unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("SignatureDoesNotMatch")
    );
    // S3 answers 400 XAmzContentSHA256Mismatch; s3s-fs notices while storing the
    // body and answers 500, but stores nothing either.
    let response = put(&right, "tampered", "text").await.unwrap();
    let status = response.status();
    let body = response.text().await.unwrap();
    eprintln!("tampered body: HTTP {status}: {body}");
    assert!(!status.is_success(), "{status}: {body}");
    assert_eq!(s3.head("models", "header.txt").await, None);

    let response = put(&right, "text", "text").await.unwrap();
    assert_eq!(response.status(), 200);
    let get = |secret: &str| {
        header_signed(
            &s3,
            reqwest::Method::GET,
            "/models/header.txt",
            secret,
            "",
            "",
        )
        .send()
    };
    let response = get(&right).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "text");
    assert_eq!(get(&wrong).await.unwrap().status(), 403);
}
