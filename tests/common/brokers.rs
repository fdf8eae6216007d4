//! Real brokers for the tests: a NATS server with JetStream and Apache Kafka (one KRaft node,
//! broker and controller, from the jars `integration/test.sh` fetches from Maven Central), each
//! started on free loopback ports, owned by the test, stopped on drop. A missing binary or jar
//! is a failure that says how to install it, never a skip.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nats,
    Kafka,
}

pub struct Broker {
    pub kind: Kind,
    pub port: u16,
    /// Kafka's controller listener.
    controller_port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// The Apache Kafka version the tests run, as `integration/kafka/pom.xml` names it.
pub const KAFKA_VERSION: &str = "4.1.1";

/// The folder of Kafka's jars: `KAUDIT_KAFKA_LIBS`, else where `integration/test.sh` puts them.
pub fn kafka_libs() -> PathBuf {
    let dir = std::env::var_os("KAUDIT_KAFKA_LIBS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
            cache.join(format!("kaudit/kafka-{KAFKA_VERSION}"))
        });
    let has_broker = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("kafka_2.13-"))
        })
        .unwrap_or(false);
    assert!(
        has_broker,
        "Apache Kafka's jars are not in {}; the Kafka tests need them. Run ./integration/test.sh (it fetches them), or: \
         mvn -f integration/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory={}",
        dir.display(),
        dir.display()
    );
    dir
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find(binary: &str, install: &str) -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join(binary)).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin").join(binary));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{binary}` is not installed; the broker tests need it. Run ./integration/test.sh (it installs it), or: {install}")
    })
}

pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

impl Broker {
    pub fn start(kind: Kind) -> Broker {
        let mut b = Broker {
            kind,
            port: free_port(),
            controller_port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        b.spawn();
        b
    }

    fn spawn(&mut self) {
        let port = self.port;
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("broker-{}.log", Instant::now().elapsed().as_nanos())),
        )
        .unwrap();
        let mut cmd = match self.kind {
            Kind::Nats => {
                let mut c = Command::new(find("nats-server", "apt-get install nats-server"));
                c.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                    .arg(self.dir.path().join("js"));
                c
            }
            Kind::Kafka => self.kafka_command(),
        };
        cmd.stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().unwrap());
        assert!(
            wait_for_port(port, Duration::from_secs(90)),
            "{:?} broker did not listen on {port}",
            self.kind
        );
    }

    /// `integration/kafka/broker.sh`: one KRaft node whose data stays in this broker's folder
    /// (formatted the first time; a restart keeps it, as a real broker's restart does).
    fn kafka_command(&self) -> Command {
        kafka_libs();
        find("java", "apt-get install openjdk-17-jre-headless");
        let mut c = Command::new("bash");
        c.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration/kafka/broker.sh"))
            .arg(self.dir.path().join("kafka"))
            .args([self.port.to_string(), self.controller_port.to_string()]);
        c
    }

    /// The address clients use: `nats://127.0.0.1:P` or `127.0.0.1:P`.
    pub fn url(&self) -> String {
        match self.kind {
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
            Kind::Kafka => format!("127.0.0.1:{}", self.port),
        }
    }

    /// Kills the broker (`kill -9`; both keep their data on disk and come back with `restart`).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the broker (it stops answering but keeps its connections and data).
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.thaw_quietly();
        }
        self.kill();
    }
}

impl Broker {
    fn thaw_quietly(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
        }
    }
}

/// A `kaudit` process of the test, killed on drop.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], env: &[(&str, String)], dir: &std::path::Path) -> Proc {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaudit"));
        cmd.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.env("KAUDIT_LOG", "info,kaudit=debug");
        cmd.stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        Proc {
            child: cmd.spawn().unwrap(),
            name: name.to_string(),
            log,
        }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the process stops gracefully (it is waited for in `Drop`).
    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
