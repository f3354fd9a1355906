//! The test Kafka broker (tests/common/kafka.rs) is a real one and survives what
//! the Kafka tests put it through: it answers the Kafka protocol once `start`
//! returns, `create_topic` makes the partitions asked for, and after a controlled
//! stop or a crash `start_again` brings the same broker back on the same port
//! with its topics, each partition led by it again.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::kafka::KafkaBroker;

/// One request (header v1: api key, version, correlation id, client id) and
/// its response's body after the correlation id, which must match.
fn call(bootstrap: &str, api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(bootstrap).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = Vec::new();
    request.extend(api_key.to_be_bytes());
    request.extend(version.to_be_bytes());
    request.extend(7i32.to_be_bytes());
    request.extend(4i16.to_be_bytes());
    request.extend(b"test");
    request.extend(body);
    stream
        .write_all(&(request.len() as i32).to_be_bytes())
        .unwrap();
    stream.write_all(&request).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    assert_eq!(response[..4], 7i32.to_be_bytes(), "correlation id");
    response.split_off(4)
}

/// A cursor over a response's big-endian fields.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    fn string(&mut self) -> Option<String> {
        let len = self.i16();
        (len >= 0).then(|| String::from_utf8(self.take(len as usize).to_vec()).unwrap())
    }
}

/// ApiVersions v0's error code: 0 from a Kafka broker that serves requests.
fn api_versions_error(bootstrap: &str) -> i16 {
    Fields(&call(bootstrap, 18, 0, &[])).i16()
}

/// Metadata v4 for `topic`: the topic's error code and its partitions'
/// (index, leader), sorted.
fn partitions(bootstrap: &str, topic: &str) -> (i16, Vec<(i32, i32)>) {
    let mut body = Vec::new();
    body.extend(1i32.to_be_bytes());
    body.extend((topic.len() as i16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.push(0); // allow_auto_topic_creation
    let response = call(bootstrap, 3, 4, &body);
    let mut fields = Fields(&response);
    fields.i32(); // throttle_time_ms
    for _ in 0..fields.i32() {
        fields.i32(); // node_id
        fields.string(); // host
        fields.i32(); // port
        fields.string(); // rack
    }
    fields.string(); // cluster_id
    fields.i32(); // controller_id
    assert_eq!(fields.i32(), 1, "one topic in the answer");
    let error = fields.i16();
    assert_eq!(fields.string().as_deref(), Some(topic));
    fields.take(1); // is_internal
    let mut partitions = Vec::new();
    for _ in 0..fields.i32() {
        fields.i16(); // error_code
        let index = fields.i32();
        let leader = fields.i32();
        for _ in 0..2 {
            // replica_nodes, isr_nodes
            let n = fields.i32();
            fields.take(4 * n as usize);
        }
        partitions.push((index, leader));
    }
    partitions.sort();
    (error, partitions)
}

#[test]
fn broker_serves_topics_across_a_stop_and_a_crash() {
    let mut kafka = KafkaBroker::start();
    let bootstrap = kafka.bootstrap();
    assert!(bootstrap.starts_with("127.0.0.1:"), "{bootstrap}");
    assert_eq!(api_versions_error(&bootstrap), 0);
    // No topic is created on first use: UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(partitions(&bootstrap, "orders"), (3, vec![]));
    kafka.create_topic("orders", 4);
    let led = vec![(0, 1), (1, 1), (2, 1), (3, 1)];
    assert_eq!(partitions(&bootstrap, "orders"), (0, led.clone()));

    kafka.stop();
    assert!(!kafka.running());
    // The partitions' logs are in the log directory the restart reuses.
    assert!(kafka.data().join("orders-3").is_dir());
    assert!(
        TcpStream::connect(&bootstrap).is_err(),
        "stopped, yet listening"
    );
    kafka.start_again();
    assert_eq!(kafka.bootstrap(), bootstrap);
    assert_eq!(api_versions_error(&bootstrap), 0);
    assert_eq!(partitions(&bootstrap, "orders"), (0, led.clone()));

    kafka.kill();
    kafka.start_again();
    assert_eq!(partitions(&bootstrap, "orders"), (0, led));
    assert_eq!(kafka.log().matches("Kafka Server started").count(), 3);
}
