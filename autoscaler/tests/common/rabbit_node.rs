//! A RabbitMQ node of the test's own, on ports of its own, that the test may stop, start
//! and starve of memory without touching the system broker at 127.0.0.1:5672, which other
//! tests use. Stopped (`rabbitmqctl stop`) on drop.
//!
//! The node runs from the installed package (`rabbitmq-server`, which as root starts it as
//! the `rabbitmq` user, so that it shares the Erlang cookie `rabbitmqctl` uses), with its
//! own node name, AMQP and distribution ports, database, logs, config file (the system's
//! `/etc/rabbitmq/rabbitmq.conf` binds 5672) and no plugins. Measured on the 2-core test
//! machine: about 4 s from `rabbitmq-server -detached` to `rabbitmqctl wait` returning;
//! `stop_app` 0.7 s, `start_app` 1.3 s.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// How long a node may take to boot on a loaded CI machine.
const BOOT_PATIENCE: Duration = Duration::from_secs(60);

/// One client connection as `rabbitmqctl list_connections` shows it.
#[derive(Debug, Clone)]
pub struct BrokerConnection {
    pub name: String,
    pub state: String,
    pub connected_at: SystemTime,
}

pub struct RabbitNode {
    /// `<name>@localhost`.
    pub node: String,
    pub port: u16,
    dir: tempfile::TempDir,
    started: bool,
}

impl RabbitNode {
    /// Starts a node and waits until it accepts AMQP connections.
    pub fn start() -> RabbitNode {
        let mut node = RabbitNode::reserve();
        node.boot();
        node
    }

    /// A node with its name, ports and directories chosen, not started: its port refuses
    /// connections until [`RabbitNode::boot`].
    pub fn reserve() -> RabbitNode {
        let id = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let dir = tempfile::Builder::new()
            .prefix("autoscaler-rabbit-")
            .tempdir()
            .expect("a directory for the node");
        let port = free_port();
        let node = RabbitNode {
            node: format!("autoscaler-test-{id}@localhost"),
            port,
            dir,
            started: false,
        };
        for sub in ["mnesia", "log"] {
            std::fs::create_dir(node.path(sub)).expect("node directory");
        }
        std::fs::write(node.path("enabled_plugins"), "").expect("plugins file");
        std::fs::write(
            node.path("rabbitmq.conf"),
            format!("listeners.tcp.local = 127.0.0.1:{port}\n"),
        )
        .expect("node config");
        give_to_rabbitmq(node.dir.path());
        node
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Boots the node (after [`RabbitNode::reserve`]) and waits until it accepts AMQP
    /// connections; returns when its port opened, by the wall clock the broker's
    /// `connected_at` uses.
    pub fn boot(&mut self) -> SystemTime {
        let dist_port = free_port();
        let status = Command::new("rabbitmq-server")
            .arg("-detached")
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", dist_port.to_string())
            .env("RABBITMQ_MNESIA_BASE", self.path("mnesia"))
            .env("RABBITMQ_LOG_BASE", self.path("log"))
            .env("RABBITMQ_PID_FILE", self.path("pid"))
            .env(
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                self.path("enabled_plugins"),
            )
            .env("RABBITMQ_CONFIG_FILE", self.path("rabbitmq.conf"))
            .env("ERL_CRASH_DUMP", self.path("log/erl_crash.dump"))
            .status()
            .expect("run rabbitmq-server (install rabbitmq-server)");
        assert!(status.success(), "rabbitmq-server -detached: {status}");
        self.started = true;
        // -detached returns at once; the port opens when the node is ready for clients.
        self.wait_listening(true, BOOT_PATIENCE);
        let open = SystemTime::now();
        let pid_file = self.path("pid");
        let out = self.ctl(&[
            "wait",
            pid_file.to_str().expect("UTF-8 path"),
            "--timeout",
            &BOOT_PATIENCE.as_secs().to_string(),
        ]);
        assert!(
            out.status.success(),
            "node {} did not start: {}\n{}",
            self.node,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        open
    }

    /// `rabbit://guest:guest@127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("rabbit://guest:guest@127.0.0.1:{}/", self.port)
    }

    /// `rabbitmqctl -n <node> ARGS...`, whatever its outcome.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-q", "-n", &self.node])
            .args(args)
            .output()
            .expect("run rabbitmqctl")
    }

    /// `rabbitmqctl -n <node> ARGS...`, which must succeed; its standard output.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "rabbitmqctl -n {} {args:?}: {}",
            self.node,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `stop_app`: the broker closes every connection (`CONNECTION_FORCED`) and its port
    /// refuses new ones; the Erlang node stays up.
    pub fn stop_app(&self) {
        self.ctl_ok(&["stop_app"]);
        self.wait_listening(false, Duration::from_secs(10));
    }

    /// `start_app`; returns when the broker accepts connections again (the instant the
    /// "time back after the broker returned" figures count from), by the wall clock the
    /// broker's `connected_at` uses.
    pub fn start_app(&self) -> SystemTime {
        // The port opens before `rabbitmqctl start_app` returns, and clients may connect
        // in between: watch the port while the command runs.
        let node = self.node.clone();
        let command = std::thread::spawn(move || {
            Command::new("rabbitmqctl")
                .args(["-q", "-n", &node, "start_app"])
                .output()
        });
        self.wait_listening(true, BOOT_PATIENCE);
        let back = SystemTime::now();
        let out = command
            .join()
            .expect("rabbitmqctl thread")
            .expect("run rabbitmqctl");
        assert!(
            out.status.success(),
            "rabbitmqctl start_app: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        back
    }

    fn wait_listening(&self, listening: bool, patience: Duration) {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + patience;
        while TcpStream::connect_timeout(&address, Duration::from_secs(1)).is_ok() != listening {
            assert!(
                Instant::now() < deadline,
                "node {}: port {} not {} within {patience:?}\n{}",
                self.node,
                self.port,
                if listening { "listening" } else { "closed" },
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every client connection: its `connection_name`, state (`running`, `blocking`,
    /// `blocked`, ...) and when it was opened; sorted by name.
    pub fn connections(&self) -> Vec<BrokerConnection> {
        let out = self.ctl_ok(&[
            "list_connections",
            "state",
            "connected_at",
            "client_properties",
        ]);
        let mut connections: Vec<BrokerConnection> = out
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let state = fields.next()?.to_owned();
                let millis: u64 = fields.next()?.parse().ok()?;
                // `{"connection_name",longstr,<<"NAME">>}` in the client properties.
                let rest = &line[line.find("\"connection_name\"")? + 17..];
                let start = rest.find('"')? + 1;
                let end = start + rest[start..].find('"')?;
                Some(BrokerConnection {
                    name: rest[start..end].to_owned(),
                    state,
                    connected_at: UNIX_EPOCH + Duration::from_millis(millis),
                })
            })
            .collect();
        connections.sort_by(|a, b| a.name.cmp(&b.name));
        connections
    }

    /// The `connection_name` of every client connection, sorted.
    pub fn connection_names(&self) -> Vec<String> {
        self.connections().into_iter().map(|c| c.name).collect()
    }

    /// Raises (`true`) or clears the node's memory alarm: with a watermark of almost 0 the
    /// node is always over it, so it blocks every connection that publishes.
    pub fn memory_alarm(&self, on: bool) {
        let watermark = if on { "0.0000001" } else { "0.4" };
        self.ctl_ok(&["set_vm_memory_high_watermark", watermark]);
    }

    /// The node's log, for failure messages.
    pub fn log(&self) -> String {
        let path = self.path("log").join(format!("{}.log", self.node));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- {} (tail) ---\n{}", path.display(), tail.join("\n"))
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        if !self.started {
            return;
        }
        let out = self.ctl(&["stop"]);
        if !out.status.success() {
            // The node did not answer: stop its Erlang VM by the PID it wrote, which is
            // this test's node and nobody else's.
            if let Ok(pid) = std::fs::read_to_string(self.path("pid")) {
                let _ = Command::new("kill")
                    .args(["-KILL", "--", pid.trim()])
                    .status();
            }
        }
    }
}

/// A TCP port nobody listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Run as root, `rabbitmq-server` starts the node as the `rabbitmq` user, which must own
/// the node's files.
fn give_to_rabbitmq(dir: &Path) {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let status = Command::new("chown")
            .args(["-R", "rabbitmq:rabbitmq"])
            .arg(dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown -R rabbitmq {}", dir.display());
    }
}
