//! Apache Kafka for the tests: one or three brokers in KRaft combined mode (each node is a broker and a
//! controller voter), each a `java` child process on free loopback ports with its storage formatted in a
//! temporary directory. The jars come from `$TAILGATE_KAFKA_LIBS` (`scripts/peers.sh kafka` fetches
//! them with Maven and prints the path).
//!
//! Each broker's output goes to `broker-N.log` in the cluster's directory; when the cluster is dropped
//! without [`KafkaCluster::stop`] (a test failed, by error or by panic) the tail of every log is printed
//! and the directory is kept. A small shell watchdog around each `java` kills it when the test process
//! goes away without dropping the cluster (a test binary killed by a timeout leaves no broker behind).

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that names the directory of Kafka's jars.
pub const LIBS_ENV: &str = "TAILGATE_KAFKA_LIBS";
/// Set (to anything) to skip the tests that need Apache Kafka, explicitly.
pub const SKIP_ENV: &str = "TAILGATE_SKIP_KAFKA";

/// How long a cluster may take to start (three JVMs on a loaded 2-core machine).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Brokers that may run at once in one test binary: tests that need a cluster wait for their share, so
/// the 3-broker failover tests do not run beside each other on a 2-core machine.
static BROKER_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(3);

/// Any 16 bytes in URL-safe base64 without padding; every cluster has its own storage, so one id serves.
const CLUSTER_ID: &str = "dGFpbGdhdGUta2Fma2EtMQ";

/// Runs `java` (the arguments after `$1`) and exits with it; a watcher in the background kills it when
/// the test process (`$1`) is gone.
const WATCHDOG: &str = r#"owner=$1; shift
"$@" &
java=$!
(while kill -0 "$owner" && kill -0 "$java"; do sleep 1; done 2>/dev/null
 kill -0 "$owner" 2>/dev/null || kill -9 "$java" 2>/dev/null) &
wait "$java""#;

struct Broker {
    /// The watchdog shell, leader of a process group that holds `java` too.
    child: Option<Child>,
    node_id: i32,
    port: u16,
    log: PathBuf,
}

/// A running Kafka cluster on loopback; every broker is killed when it is dropped.
pub struct KafkaCluster {
    brokers: Vec<Broker>,
    dir: PathBuf,
    libs: PathBuf,
    /// Set by [`KafkaCluster::stop`]: the test passed, so the logs need not be shown.
    passed: bool,
    _slots: tokio::sync::SemaphorePermit<'static>,
}

impl KafkaCluster {
    /// Starts `brokers` brokers (1, or 3 for the failover tests) and waits until all of them are in the
    /// cluster's metadata. `Ok(None)` only when `TAILGATE_SKIP_KAFKA` asks to skip; without
    /// `TAILGATE_KAFKA_LIBS` this fails with a message naming `scripts/peers.sh`.
    pub async fn start(brokers: usize) -> anyhow::Result<Option<KafkaCluster>> {
        let Some(libs) = std::env::var_os(LIBS_ENV) else {
            anyhow::ensure!(
                std::env::var_os(SKIP_ENV).is_some(),
                "{LIBS_ENV} is not set: the Kafka tests need Apache Kafka's jars. Run \
                 `eval \"$(scripts/peers.sh kafka | grep ^TAILGATE_)\"` (scripts/test.sh does it), \
                 or set {SKIP_ENV}=1 to skip the tests that need a real broker"
            );
            eprintln!("{SKIP_ENV} is set: skipping a test that needs Apache Kafka");
            return Ok(None);
        };
        let libs = PathBuf::from(libs);
        anyhow::ensure!(
            libs.join(format!("kafka_2.13-{}.jar", kafka_version(&libs)?))
                .exists(),
            "{LIBS_ENV}={} holds no Kafka broker jar: re-run scripts/peers.sh kafka",
            libs.display()
        );
        anyhow::ensure!(brokers >= 1, "a Kafka cluster needs at least one broker");
        let slots = BROKER_SLOTS.acquire_many(brokers.min(3) as u32).await?;
        let dir = std::env::temp_dir().join(format!(
            "tailgate-kafka-{}-{}",
            std::process::id(),
            crate::free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let ports: Vec<(u16, u16)> = (0..brokers)
            .map(|_| Ok((crate::reserved_port()?, crate::reserved_port()?)))
            .collect::<anyhow::Result<_>>()?;
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        std::fs::write(dir.join("log4j2.properties"), LOG4J)?;
        let mut cluster = KafkaCluster {
            brokers: Vec::new(),
            dir,
            libs,
            passed: false,
            _slots: slots,
        };
        // Format every node's storage (in parallel: each is a JVM start), then start them all: the
        // controllers need a majority of the voters up to elect a leader.
        let mut formats = Vec::new();
        for (i, (port, controller)) in ports.iter().enumerate() {
            let node_id = i as i32 + 1;
            let props = cluster.dir.join(format!("server-{node_id}.properties"));
            std::fs::write(
                &props,
                server_properties(node_id, *port, *controller, &voters, brokers, &cluster.dir),
            )?;
            let log = cluster.dir.join(format!("broker-{node_id}.log"));
            let out = std::fs::File::create(&log)?;
            let format = cluster
                .java(&["kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
                .arg(&props)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()?;
            formats.push((node_id, format));
            cluster.brokers.push(Broker {
                child: None,
                node_id,
                port: *port,
                log,
            });
        }
        for (node_id, mut format) in formats {
            let status = tokio::task::spawn_blocking(move || format.wait()).await??;
            anyhow::ensure!(
                status.success(),
                "formatting the storage of Kafka broker {node_id} failed ({status}){}",
                cluster.logs()
            );
        }
        for i in 0..cluster.brokers.len() {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(brokers).await?;
        Ok(Some(cluster))
    }

    /// `java` with the test JVM settings and Kafka's class path.
    fn java(&self, args: &[&str]) -> Command {
        let mut c = Command::new("java");
        c.args(JVM_FLAGS)
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .args(args);
        c
    }

    /// Starts broker `i` (index into the cluster, not its node id) under the watchdog.
    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let b = &self.brokers[i];
        let props = self.dir.join(format!("server-{}.properties", b.node_id));
        let java = self.java(&["kafka.Kafka"]);
        let log = std::fs::OpenOptions::new().append(true).open(&b.log)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("kafka-watchdog")
            .arg(std::process::id().to_string())
            .arg(java.get_program())
            .args(java.get_args())
            .arg(&props)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group, so a kill reaches the shell and the JVM together.
            .process_group(0)
            .spawn()?;
        self.brokers[i].child = Some(child);
        Ok(())
    }

    async fn wait_ready(&mut self, expected: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let bootstrap = self.bootstrap();
        loop {
            let b = bootstrap.clone();
            let seen = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
                let c: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &b)
                    .set("log_level", "0")
                    .create()?;
                Ok(c.fetch_metadata(None, Duration::from_secs(2))?
                    .brokers()
                    .len())
            })
            .await?;
            if matches!(seen, Ok(n) if n >= expected) {
                return Ok(());
            }
            for i in 0..self.brokers.len() {
                anyhow::ensure!(
                    !self.exited(i),
                    "Kafka broker {} exited while starting{}",
                    self.brokers[i].node_id,
                    self.logs()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "Kafka ({expected} brokers) not ready after {START_TIMEOUT:?} (last: {seen:?}){}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// True when broker `i`'s shell (which exits with its `java`) is gone.
    fn exited(&mut self, i: usize) -> bool {
        self.brokers[i]
            .child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// The bootstrap list, `127.0.0.1:P1,127.0.0.1:P2,...`, of every broker (killed ones included: a
    /// client skips those it cannot reach).
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many brokers the cluster was started with.
    pub fn size(&self) -> usize {
        self.brokers.len()
    }

    /// Creates `topic` with `partitions` partitions, replicated on every broker (at most 3) with
    /// `min.insync.replicas` one less than that (so an acknowledged message survives one broker), and
    /// waits until every partition has a leader.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let replication = self.brokers.len().min(3) as i32;
        let min_isr = (replication - 1).max(1).to_string();
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication))
            .set("min.insync.replicas", &min_isr);
        let results = admin
            .create_topics(
                [&new],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            )
            .await?;
        for r in results {
            if let Err((t, e)) = r {
                anyhow::bail!("creating Kafka topic {t} failed: {e}{}", self.logs());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let leaders = self.leaders(topic).await;
            if let Ok(l) = &leaders
                && l.len() == partitions as usize
                && l.iter().all(Option::is_some)
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "topic {topic}: not every partition has a leader after 60 s ({leaders:?}){}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The leader of every partition of `topic`, as an index into this cluster (`None`: no leader now).
    pub async fn leaders(&self, topic: &str) -> anyhow::Result<Vec<Option<usize>>> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_string();
        let ids: Vec<i32> = self.brokers.iter().map(|b| b.node_id).collect();
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("log_level", "0")
                .create()?;
            let md = c.fetch_metadata(Some(&topic), Duration::from_secs(5))?;
            let t = md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .ok_or_else(|| anyhow::anyhow!("topic {topic} is not in the metadata"))?;
            if let Some(e) = t.error() {
                anyhow::bail!("topic {topic}: {e:?}");
            }
            let mut partitions: Vec<_> = t.partitions().iter().collect();
            partitions.sort_by_key(|p| p.id());
            Ok(partitions
                .iter()
                .map(|p| ids.iter().position(|id| *id == p.leader()))
                .collect())
        })
        .await?
    }

    /// The broker (index) that leads partition `partition` of `topic`.
    pub async fn leader(&self, topic: &str, partition: i32) -> anyhow::Result<usize> {
        self.leaders(topic)
            .await?
            .get(partition as usize)
            .copied()
            .flatten()
            .ok_or_else(|| anyhow::anyhow!("partition {topic}/{partition} has no leader"))
    }

    /// Kills broker `i` with SIGKILL (no controlled shutdown) and waits until it is gone.
    pub fn kill_broker(&mut self, i: usize) -> anyhow::Result<()> {
        let b = &mut self.brokers[i];
        let mut child = b
            .child
            .take()
            .ok_or_else(|| anyhow::anyhow!("Kafka broker {} is not running", b.node_id))?;
        kill_group(&mut child);
        Ok(())
    }

    /// The last `lines` lines of every broker's log, as a block to append to an error message.
    pub fn logs(&self) -> String {
        let mut out = format!("\n--- Kafka logs in {} ---", self.dir.display());
        for b in &self.brokers {
            out.push_str(&format!(
                "\n--- broker {} (tail of {}) ---\n{}",
                b.node_id,
                b.log.display(),
                tail(&b.log, 40)
            ));
        }
        out
    }

    /// Stops every broker and removes the cluster's directory: the test passed.
    pub fn stop(mut self) {
        self.passed = true;
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for b in &mut self.brokers {
            if let Some(mut c) = b.child.take() {
                kill_group(&mut c);
            }
        }
        if self.passed {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("the test failed; {}", self.logs());
        }
    }
}

/// SIGKILL to the watchdog's process group (the shell and `java`), then reaps the shell.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The Kafka version of the jars in `libs` (from `kafka-clients-<version>.jar`).
fn kafka_version(libs: &Path) -> anyhow::Result<String> {
    for e in std::fs::read_dir(libs)
        .map_err(|e| anyhow::anyhow!("{LIBS_ENV}={}: {e}", libs.display()))?
    {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name
            .strip_prefix("kafka-clients-")
            .and_then(|n| n.strip_suffix(".jar"))
        {
            return Ok(v.to_string());
        }
    }
    anyhow::bail!(
        "{LIBS_ENV}={} holds no kafka-clients jar: re-run scripts/peers.sh kafka",
        libs.display()
    )
}

/// A small heap (three brokers fit beside the test build), the serial collector and the C1 compiler only
/// (a broker under test load needs start-up time more than peak speed; C2 compiles would take the
/// cores the tests need).
const JVM_FLAGS: &[&str] = &[
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:ActiveProcessorCount=2",
    "-Djava.awt.headless=true",
];

/// Broker logs at INFO (a failing test prints their tail), the chattiest loggers at WARN.
const LOG4J: &str = "status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
logger.state.name = state.change.logger
logger.state.level = warn
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
logger.utils.name = org.apache.kafka.common.utils.AppInfoParser
logger.utils.level = warn
";

/// One node's `server.properties`: broker and controller on loopback, replicated internal topics on a
/// multi-broker cluster (so the group coordinator survives a broker), and short failure detection so a
/// killed broker is fenced and its partitions re-led within seconds.
fn server_properties(
    node_id: i32,
    port: u16,
    controller: u16,
    voters: &str,
    brokers: usize,
    dir: &Path,
) -> String {
    let rf = brokers.min(3);
    let min_isr = (rf - 1).max(1);
    format!(
        "process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={logs}
auto.create.topics.enable=false
num.partitions=1
default.replication.factor={rf}
offsets.topic.replication.factor={rf}
offsets.topic.num.partitions=4
transaction.state.log.replication.factor={rf}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={rf}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
log.cleaner.threads=1
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=4000
replica.lag.time.max.ms=10000
",
        logs = dir.join(format!("data-{node_id}")).display(),
    )
}
