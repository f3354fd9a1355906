//! A real Kafka broker for the tests: Apache Kafka 4.4 (the jars `make deps`
//! installs, see e2e/kafka/deps.sh) in KRaft mode, broker and controller in one
//! JVM, on a fresh temporary log directory and free loopback ports. It is the
//! broker production runs, so a test that passes against it proves what a mock
//! would assume: partitions, consumer group offsets, transactions (the internal
//! topics have replication factor 1, so they work on one node), a restart.
//!
//! ```ignore
//! let mut kafka = common::kafka::KafkaBroker::start();
//! kafka.create_topic("requests", 4);
//! Command::new(server_binary()).args(["stream", "--brokers", &kafka.bootstrap(), ...]);
//! kafka.stop(); // SIGTERM: a controlled shutdown (kill() is a crash)
//! kafka.start_again(); // the same log directory and ports: a broker restart
//! ```
//!
//! Topics are not created on first use (auto.create.topics.enable=false, as in
//! e2e/kafka/kafka.sh): a test creates its own with `create_topic`. Each broker
//! takes 3 to 6 s to start on 2 cores and about 180 MB of memory, so a test file
//! shares one where it can. Needs Java 17 or newer (`java` on PATH, or JAVA_HOME).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::OwnedMessage;
use rdkafka::{Offset, TopicPartitionList};

/// How long a start may take before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a SIGTERM may take before the broker is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The line KafkaRaftServer logs once the broker is registered, unfenced and
/// its listeners accept requests.
const READY: &str = "Kafka Server started";

/// The folder of Kafka's jars: `SLUICE_KAFKA_LIBS` when set, else where `make
/// deps` copies them.
pub fn libs() -> PathBuf {
    if let Some(path) = std::env::var_os("SLUICE_KAFKA_LIBS") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("SLUICE_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/sluice"),
        PathBuf::from,
    );
    cache.join("kafka-4.4.0/libs")
}

/// `java`: JAVA_HOME's when set, else the one on PATH.
fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME").map_or_else(
        || PathBuf::from("java"),
        |home| PathBuf::from(home).join("bin/java"),
    )
}

/// A Kafka broker (and its KRaft controller) on loopback, killed (and its log
/// directory removed) when dropped.
pub struct KafkaBroker {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    controller_port: u16,
    /// Where this start's lines begin in the log.
    log_from: usize,
}

impl KafkaBroker {
    /// Formats a fresh log directory and starts a broker on it; returns once it
    /// accepts requests (panics with its log after 60 s).
    pub fn start() -> KafkaBroker {
        let libs = libs();
        assert!(
            libs.join("kafka_2.13-4.4.0.jar").exists(),
            "the test Kafka broker's jars are missing from {}: run `make deps` (or e2e/kafka/deps.sh, which installs just them)",
            libs.display()
        );
        let dir = super::scratch_dir("kafka");
        // Two free ports, held together so that they differ. Kafka binds them
        // itself later: another process could take one in between, unlikely
        // enough on a test machine.
        let (port, controller_port) = {
            let a = TcpListener::bind("127.0.0.1:0").unwrap();
            let b = TcpListener::bind("127.0.0.1:0").unwrap();
            (
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            )
        };
        let mut broker = KafkaBroker {
            child: None,
            dir,
            port,
            controller_port,
            log_from: 0,
        };
        let started = Instant::now();
        broker.write_config();
        broker.format();
        eprintln!(
            "Kafka log directory formatted in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        broker.start_again();
        broker
    }

    /// `127.0.0.1:PORT`, what clients bootstrap from (`--brokers`,
    /// `KAFKA_BOOTSTRAP_SERVERS`).
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's log directory (topics' partitions, `meta.properties`).
    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Everything the broker logged so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default()
    }

    /// Whether the broker process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// Starts the broker again on the same log directory and ports (a restart
    /// after `stop` or `kill`; stops it first if it still runs) and waits until
    /// it accepts requests. Topics, committed offsets and transactions stay.
    pub fn start_again(&mut self) {
        self.stop();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))
            .unwrap();
        self.log_from = log.metadata().unwrap().len() as usize;
        let child = self
            .java("256m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (Kafka needs Java 17 or newer)",
                    java().display()
                )
            });
        self.child = Some(child);
        self.wait_ready();
    }

    /// Stops the broker as an operator would: SIGTERM (a controlled shutdown,
    /// usually under a second), SIGKILL after 30 s. Its data stays for
    /// `start_again`.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let started = Instant::now();
        if child.try_wait().unwrap().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            while child.try_wait().unwrap().is_none() {
                if started.elapsed() > STOP_TIMEOUT {
                    eprintln!("the Kafka broker ignored SIGTERM for 30 s; killing it");
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.wait();
        eprintln!(
            "Kafka broker stopped in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    /// Kills the broker (SIGKILL: a crash, no controlled shutdown). Its data
    /// stays for `start_again`, which then recovers the logs and takes about
    /// 10 s longer than after `stop`: the controller refuses the new broker's
    /// registration while the dead one's session lasts (broker.session.timeout.ms,
    /// 9 s, Kafka's default, as in production).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Creates `topic` with `partitions` partitions (replication factor 1) with
    /// Kafka's TopicCommand (a JVM of its own, about 2 s); panics when it fails.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        let output = self
            .java("128m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("tools-log4j2.properties").display()
            ))
            .arg("org.apache.kafka.tools.TopicCommand")
            .args(["--bootstrap-server", &self.bootstrap(), "--create"])
            .args(["--topic", topic, "--partitions", &partitions.to_string()])
            .args(["--replication-factor", "1"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "creating topic {topic}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A JVM on Kafka's jars with a `heap`-sized heap; C1 only and the serial
    /// collector, which start faster and take less memory and CPU on small
    /// machines.
    fn java(&self, heap: &str) -> Command {
        let mut command = Command::new(java());
        command
            .arg(format!("-Xmx{heap}"))
            .args(["-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
            .arg("-Djava.awt.headless=true")
            .arg("-cp")
            .arg(libs().join("*"));
        command
    }

    /// The broker's settings (those of e2e/kafka/kafka.sh, on loopback) and
    /// Log4j's: the broker logs INFO to its log, the tools warnings and errors.
    fn write_config(&self) {
        let settings = format!(
            "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
num.recovery.threads.per.data.dir=1
log.cleaner.dedupe.buffer.size=4194304
",
            port = self.port,
            controller = self.controller_port,
            data = self.data().display(),
        );
        std::fs::write(self.dir.join("server.properties"), settings).unwrap();
        let log4j = |level: &str, target: &str| {
            format!(
                "status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = {target}
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = {level}
rootLogger.appenderRef.out.ref = out
"
            )
        };
        std::fs::write(
            self.dir.join("log4j2.properties"),
            log4j("INFO", "SYSTEM_OUT"),
        )
        .unwrap();
        std::fs::write(
            self.dir.join("tools-log4j2.properties"),
            log4j("WARN", "SYSTEM_ERR"),
        )
        .unwrap();
    }

    /// Formats the log directory (kafka-storage format) with a random cluster ID.
    fn format(&self) {
        let output = self
            .java("128m")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("tools-log4j2.properties").display()
            ))
            .args(["kafka.tools.StorageTool", "format"])
            .arg(format!("--cluster-id={}", cluster_id()))
            .arg("--config")
            .arg(self.dir.join("server.properties"))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (Kafka needs Java 17 or newer)",
                    java().display()
                )
            });
        assert!(
            output.status.success(),
            "formatting {}: {}\n{}",
            self.data().display(),
            output.status,
            String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Waits for this start's READY line and a connection to the listener.
    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let log = self.log();
            if log.get(self.log_from..).is_some_and(|l| l.contains(READY))
                && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                eprintln!(
                    "Kafka broker ready at {} in {:.1} s",
                    self.bootstrap(),
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                panic!(
                    "the Kafka broker exited ({status}) before it was ready; its log ends with:\n{}",
                    self.tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                panic!(
                    "the Kafka broker was not ready within {} s; its log ends with:\n{}",
                    START_TIMEOUT.as_secs(),
                    self.tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 40 lines of this start's log.
    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.get(self.log_from..).unwrap_or(&log).lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Reads every partition of `topic` (it has `partitions`) from its start,
/// committed records only, until `enough(records read)` holds, then for
/// `settle` more, so that a late extra record shows; panics when `limit`
/// passes first.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    enough: impl Fn(usize) -> bool,
    limit: Duration,
    settle: Duration,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let started = Instant::now();
    let mut satisfied: Option<Instant> = None;
    let mut records = Vec::new();
    loop {
        if satisfied.is_some_and(|at| at.elapsed() >= settle) {
            return records;
        }
        assert!(
            started.elapsed() < limit,
            "{topic}: only {} records after {limit:?}",
            records.len()
        );
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            records.push(message.detach());
        }
        if satisfied.is_none() && enough(records.len()) {
            satisfied = Some(Instant::now());
        }
    }
}

/// A random cluster ID as `kafka-storage random-uuid` makes one: 16 random
/// bytes in unpadded base64url (the first byte's top bit cleared, so that it
/// never starts with '-').
fn cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .unwrap();
    bytes[0] &= 0x7f;
    let mut id = String::new();
    for chunk in bytes.chunks(3) {
        let mut group = [0u8; 3];
        group[..chunk.len()].copy_from_slice(chunk);
        let bits = u32::from_be_bytes([0, group[0], group[1], group[2]]);
        for i in 0..=chunk.len() {
            id.push(ALPHABET[(bits >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    id
}
