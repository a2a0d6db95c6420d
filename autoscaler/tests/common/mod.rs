//! Shared fixtures for the black-box tests: a private corner of the real RabbitMQ (own
//! exchange, queues, notification topic, optionally an own virtual host) and the real
//! binaries started as child processes.
//!
//! The broker is `AUTOSCALER_TEST_TRANSPORT_URL`, default `rabbit://guest:guest@127.0.0.1:5672/`;
//! tests that stop or starve the broker run a node of their own (`rabbit_node`).

#![allow(dead_code)] // Each test binary uses its own part of these helpers.

pub mod load;
pub mod nova;
pub mod rabbit_node;
pub mod second;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use std::sync::atomic::{AtomicU64, Ordering};

use autoscaler::{
    conf::agent::create_key_file,
    messaging::{
        envelope, link,
        signing::{new_secret, MessageSecrets},
        LinkConfig, NotificationMessage, Payload, TransportUrl,
    },
};
use futures_lite::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, ExchangeDeleteOptions, QueueDeleteOptions},
    types::FieldTable,
    Connection,
};

/// A template whose VMs are the test image `ok` (a process that idles; no agent), so the
/// conductor's orchestration runs for real without Tomcat or Apache.
pub const SHOP_TEMPLATE: &str = "[template]\nname = shop\nimage = ok\nsplitter_image = ok\nmin_vms = 1\nmax_vms = 4\ntarget_response_time = 0.2\n";

/// The test images (`autoscaler/tests/images`).
pub fn test_images() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/images")
}

pub fn broker_url() -> String {
    std::env::var("AUTOSCALER_TEST_TRANSPORT_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".into())
}

/// The test broker as the CLI names it in errors: scheme, user, host and port; no password.
pub fn redacted_broker_url() -> String {
    let url: TransportUrl = broker_url().parse().expect("test transport_url");
    format!("{}://{}/", url.scheme, url.hosts[0])
}

fn rand_byte() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

/// One test's private setting: config file, state dir, exchange, topic, host name.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub exchange: String,
    pub topic: String,
    pub host: String,
    pub transport_url: String,
    /// Set when the fixture made its own virtual host (deleted on drop).
    pub vhost: Option<String>,
    /// A /28 of its own for the local cloud's VMs.
    pub address_pool: String,
    /// `[local] images_path`: the test images unless a test wants the real ones.
    pub images_path: PathBuf,
    /// The agents' broker login, a user of the test's own ([`AgentUser`]); `None` on a
    /// broker node of the test's own, whose agents use the service's login.
    pub agent: Option<AgentUser>,
    /// `[agent] transport_url`: the agent user at the fixture's broker hosts, unless a
    /// test points the agents elsewhere ([`Fixture::agent_url_for`]).
    pub agent_transport_url: String,
    children: Vec<Child>,
}

/// A broker user made for one test's agents with exactly the permissions
/// doc/security.md gives (`rabbitmqctl` on the system broker), deleted on drop.
pub struct AgentUser {
    pub name: String,
    pub password: String,
    pub vhost: String,
}

impl AgentUser {
    /// Creates the user with the agents' permissions on `exchange` in `vhost`.
    pub fn create(vhost: &str, exchange: &str) -> AgentUser {
        let user = AgentUser {
            name: unique("autoscaler-agent"),
            password: uuid::Uuid::new_v4().simple().to_string(),
            vhost: vhost.to_owned(),
        };
        rabbitmqctl(&["add_user", &user.name, &user.password]);
        let exchange_re = exchange.replace('.', "\\.");
        let (write, read) = (
            format!("^{exchange_re}$"),
            format!("^{exchange_re}\\.splitter\\."),
        );
        // The two settings are independent: in parallel (rabbitmqctl takes most of a
        // second to start).
        let topic = {
            let (vhost, name, exchange) =
                (vhost.to_owned(), user.name.clone(), exchange.to_owned());
            std::thread::spawn(move || {
                rabbitmqctl(&[
                    "set_topic_permissions",
                    "-p",
                    &vhost,
                    &name,
                    &exchange,
                    "^(heartbeat|metrics|pool-ack)\\.",
                    "^$",
                ]);
            })
        };
        rabbitmqctl(&[
            "set_permissions",
            "-p",
            vhost,
            &user.name,
            "^$",
            &write,
            &read,
        ]);
        topic.join().expect("set_topic_permissions");
        user
    }

    /// `url` (a transport URL) with this user's login at each of its hosts.
    pub fn url_at(&self, url: &str) -> String {
        let url: TransportUrl = url.parse().expect("a transport_url");
        let hosts: Vec<String> = (url.hosts.iter())
            .map(|h| format!("{}:{}@{}:{}", self.name, self.password, h.hostname, h.port))
            .collect();
        let vhost = if self.vhost == "/" {
            ""
        } else {
            self.vhost.as_str()
        };
        format!("{}://{}/{vhost}", url.scheme, hosts.join(","))
    }
}

impl Drop for AgentUser {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["delete_user", &self.name])
            .output();
    }
}

impl Fixture {
    pub fn new() -> Fixture {
        Self::with_url(broker_url(), None)
    }

    /// A fixture on a virtual host of its own, for tests that close every connection.
    pub fn with_own_vhost() -> Fixture {
        let vhost = unique("autoscaler-test");
        rabbitmqctl(&["add_vhost", &vhost]);
        rabbitmqctl(&["set_permissions", "-p", &vhost, "guest", ".*", ".*", ".*"]);
        let base = broker_url();
        let url = format!("{}/{vhost}", base.trim_end_matches('/'));
        Self::with_url(url, Some(vhost))
    }

    /// On the system broker (or a proxy to it): the agents get a user of their own.
    pub fn with_url(transport_url: String, vhost: Option<String>) -> Fixture {
        let exchange = unique("autoscaler-test");
        let agent = AgentUser::create(vhost.as_deref().unwrap_or("/"), &exchange);
        let agent_url = agent.url_at(&transport_url);
        Self::build(transport_url, vhost, exchange, Some(agent), agent_url)
    }

    /// On a broker node of the test's own (`rabbit_node`), which may not be up yet: its
    /// agents use the service's login, with `[agent] allow_service_credentials = true`
    /// (what these tests test is the broker's restarts, not its permissions).
    pub fn on_own_node(transport_url: String) -> Fixture {
        let exchange = unique("autoscaler-test");
        let agent_url = transport_url.clone();
        Self::build(transport_url, None, exchange, None, agent_url)
    }

    /// `url`'s hosts with the agent user's login (the service's on an own node).
    pub fn agent_url_for(&self, url: &str) -> String {
        match &self.agent {
            Some(agent) => agent.url_at(url),
            None => url.to_owned(),
        }
    }

    fn build(
        transport_url: String,
        vhost: Option<String>,
        exchange: String,
        agent: Option<AgentUser>,
        agent_transport_url: String,
    ) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary directory");
        // Run as root, the conductor runs its VMs as `[local] vm_user` (nobody), which
        // must reach their directories under state/: traversable, not listable.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .expect("temporary directory's mode");
        let fixture = Fixture {
            dir,
            exchange,
            topic: unique("notifications-test"),
            host: unique("test-host"),
            transport_url,
            vhost,
            address_pool: format!("127.{}.{}.0/28", 100 + rand_byte() % 100, rand_byte()),
            images_path: test_images(),
            agent,
            agent_transport_url,
            children: Vec::new(),
        };
        fixture.write_config("");
        std::fs::write(fixture.template_path("shop"), SHOP_TEMPLATE).expect("template file");
        fixture
    }

    /// Writes the configuration file, with `extra` appended (more sections or options).
    pub fn write_config(&self, extra: &str) {
        let text = format!(
            "[DEFAULT]\ntransport_url = {}\ncontrol_exchange = {}\nhost = {}\nstate_path = {}\nrpc_response_timeout = 10\n\n\
             [oslo_messaging_rabbit]\nrabbit_retry_interval = 1\nrabbit_retry_backoff = 0\nrabbit_interval_max = 2\n\n\
             [oslo_messaging_notifications]\ndriver = messagingv2\ntopics = {}\n\n\
             [conductor]\ndrain_timeout = 1\n\n\
             [agent]\ntransport_url = {}\nallow_service_credentials = {}\n\n\
             [local]\nimages_path = {}\naddress_pool = {}\ndelete_grace_period = 2\n{extra}",
            self.transport_url,
            self.exchange,
            self.host,
            self.dir.path().join("state").display(),
            self.topic,
            self.agent_transport_url,
            self.agent.is_none(),
            self.images_path.display(),
            self.address_pool,
        );
        std::fs::write(self.config_path(), text).expect("config file");
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("autoscaler.conf")
    }

    pub fn template_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.template"))
    }

    pub fn link_config(&self) -> LinkConfig {
        let url: TransportUrl = self.transport_url.parse().expect("test transport_url");
        LinkConfig::new(url, format!("test.{}", self.host))
    }

    /// Waits until `queue` exists and has a consumer (a process of the test's has bound
    /// it and consumes), checking with passive declares; panics after `timeout`.
    pub async fn wait_for_consumer(&self, queue: &str, timeout: Duration) {
        let connection = self.connect().await;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            // A failed passive declare closes the channel: one channel per try.
            let channel = connection.create_channel().await.expect("a channel");
            let options = lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let declared = channel
                .queue_declare(queue.into(), options, Default::default())
                .await;
            if declared.is_ok_and(|q| q.consumer_count() > 0) {
                let _ = connection.close(200, "done".into()).await;
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no consumer on {queue} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The conductors' message secrets: `state/message.key`, the default
    /// `[agent] message_key_file` (made here when no conductor has made it yet).
    pub fn message_secrets(&self) -> MessageSecrets {
        let path = self.dir.path().join("state").join("message.key");
        create_key_file(&path, &new_secret()).expect("message key file");
        MessageSecrets::read(&path).expect("message key file")
    }

    /// `payload` as `vm`'s agent sends it: in its envelope from `sender` written at
    /// `time`, with a new sequence number, and the headers that sign it with `vm`'s key.
    pub fn seal<P: Payload>(
        &self,
        vm: &str,
        sender: &str,
        time: chrono::DateTime<chrono::Utc>,
        payload: &P,
    ) -> (Vec<u8>, FieldTable) {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let start = chrono::Utc::now().timestamp_micros() as u64;
        let _ = SEQ.compare_exchange(0, start, Ordering::Relaxed, Ordering::Relaxed);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let body = envelope::encode_seq(sender, time, Some(seq), payload);
        let headers = self.message_secrets().vm_key(vm).headers(vm, &body);
        (body, headers)
    }

    pub async fn connect(&self) -> Connection {
        link::connect(&self.link_config(), 0)
            .await
            .expect("test broker")
            .0
    }

    /// The first notification of `event_type` on this fixture's `<topic>.<priority>` queue
    /// (which the conductor declares), others skipped; panics after `patience`.
    pub async fn next_notification(
        &self,
        priority: &str,
        event_type: &str,
        patience: Duration,
    ) -> NotificationMessage {
        let connection = self.connect().await;
        let channel = connection.create_channel().await.expect("a channel");
        let queue = format!("{}.{priority}", self.topic);
        let options = BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        };
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "test".into(),
                options,
                FieldTable::default(),
            )
            .await
            .expect("consume the notification queue");
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let delivery = tokio::time::timeout_at(deadline, consumer.next())
                .await
                .unwrap_or_else(|_| panic!("no {event_type} on {queue} within {patience:?}"))
                .expect("the queue's consumer ended")
                .expect("a delivery");
            let notification =
                NotificationMessage::from_bytes(&delivery.data).expect("oslo format");
            if notification.event_type == event_type {
                let _ = connection.close(200, "done".into()).await;
                return notification;
            }
        }
    }

    /// Starts `autoscaler-conductor --debug` on this fixture; logs go to `<dir>/conductor.log`.
    pub fn start_conductor(&mut self) -> u32 {
        self.start_conductor_with(&["--debug"])
    }

    /// Starts `autoscaler-conductor --config-file <ours> ARGS...`, after `autoscaler-manage
    /// db sync` (the conductor refuses a database without its schema).
    pub fn start_conductor_with(&mut self, args: &[&str]) -> u32 {
        let synced = self.manage(&["db", "sync"]);
        assert!(synced.status.success(), "db sync: {}", stderr(&synced));
        // Appended to: a restarted conductor's log follows the previous one's.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("conductor.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_autoscaler-conductor"))
            .arg("--config-file")
            .arg(self.config_path())
            .args(args)
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start autoscaler-conductor");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// The PID of the conductor started last.
    pub fn conductor_pid(&self) -> u32 {
        self.children.last().expect("a conductor was started").id()
    }

    /// The exit status of the conductor started last, if it has exited.
    pub fn conductor_try_wait(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.children.last_mut().expect("a conductor was started");
        child.try_wait().expect("the conductor's status")
    }

    /// Waits until the conductor answers `conductor status`; returns how long that took.
    pub fn wait_for_conductor(&self, patience: Duration) -> Duration {
        let start = Instant::now();
        loop {
            let out = self.manage(&["--timeout", "2", "conductor", "status"]);
            if out.status.success() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < patience,
                "the conductor did not answer within {patience:?}: {}\n--- conductor log ---\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.conductor_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn conductor_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("conductor.log")).unwrap_or_default()
    }

    /// Sends SIGTERM to the conductor started last and waits for it to exit.
    pub fn stop_conductor(&mut self, patience: Duration) -> std::process::ExitStatus {
        let mut child = self.children.pop().expect("a conductor was started");
        signal(child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("wait for the conductor") {
                return status;
            }
            if start.elapsed() > patience {
                let _ = child.kill();
                panic!(
                    "the conductor did not stop within {patience:?} of SIGTERM\n{}",
                    self.conductor_log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `autoscaler-manage template instantiate <dir>/<name>.template`, which must succeed.
    pub fn instantiate(&self, name: &str) -> Output {
        let path = self.template_path(name);
        let out = self.manage(&[
            "--no-wait",
            "template",
            "instantiate",
            path.to_str().expect("UTF-8 path"),
        ]);
        assert!(
            out.status.success(),
            "instantiate {name}: {}\n{}",
            stderr(&out),
            self.conductor_log()
        );
        out
    }

    /// The routing keys the telemetry queue of the conductor named `host` is bound with
    /// to the fixture's exchange on the system broker, from `rabbitmqctl list_bindings`.
    pub fn telemetry_bindings(&self, host: &str) -> Vec<String> {
        let queue = format!("{}.conductor.telemetry.{host}", self.exchange);
        let vhost = self.vhost.as_deref().unwrap_or("/");
        let out = rabbitmqctl(&[
            "list_bindings",
            "-q",
            "-p",
            vhost,
            "source_name",
            "destination_name",
            "routing_key",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| match l.split('\t').collect::<Vec<_>>()[..] {
                [source, destination, key] if source == self.exchange && destination == queue => {
                    Some(key.to_owned())
                }
                _ => None,
            })
            .collect()
    }

    /// Waits until the conductor's telemetry queue is bound with `group`'s keys on the
    /// system broker (it binds the groups it steers at its next tick): what is published
    /// for `group` before then reaches no conductor.
    pub fn wait_for_telemetry_binding(&self, group: &str, patience: Duration) -> Duration {
        let last_key = format!("pool-ack.{group}");
        let start = Instant::now();
        while !self.telemetry_bindings(&self.host).contains(&last_key) {
            assert!(
                start.elapsed() < patience,
                "not bound with {last_key} within {patience:?}\n{}",
                self.conductor_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        start.elapsed()
    }

    /// Runs `autoscaler-manage --config-file <ours> ARGS...`.
    pub fn manage(&self, args: &[&str]) -> Output {
        manage_with(&self.config_path(), args)
    }
}

pub fn manage_with(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autoscaler-manage"))
        .arg("--config-file")
        .arg(config)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run autoscaler-manage")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends a signal by PID with kill(1): only to processes this test started.
pub fn signal(pid: u32, name: &str) {
    kill(name, &pid.to_string());
}

/// Sends a signal to a whole process group (a local VM) that this test's conductor started.
pub fn signal_group(pgid: i64, name: &str) {
    assert!(pgid > 1, "refusing to signal process group {pgid}");
    kill(name, &format!("-{pgid}"));
}

/// `kill -NAME -- TARGET` (a pid, or `-pgid` for a group).
fn kill(name: &str, target: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), "--", target])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name} -- {target} failed");
}

pub fn rabbitmqctl(args: &[&str]) -> Output {
    let out = Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("run rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl Fixture {
    /// Deletes every VM the fixture's conductor left on its local cloud, through the local
    /// driver itself (it knows their process groups).
    fn delete_local_vms(&self) {
        let loaded = match autoscaler::conf::load(&autoscaler::conf::ConfigSources {
            config_files: vec![self.config_path()],
            config_dir: None,
        }) {
            Ok(loaded) => loaded,
            Err(e) => return eprintln!("clean-up: cannot read the test's configuration: {e}"),
        };
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            // Bounded: a test that failed while its cloud hung (tests/hung_cloud.rs)
            // must still end. (The timer is made inside the runtime.)
            let deleted = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(60), delete_all(&loaded.config)).await
            });
            match deleted {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("clean-up: cannot delete the test's VMs: {e}"),
                Err(_) => eprintln!("clean-up: deleting the test's VMs took over 60 s"),
            }
        })
        .join();
    }
}

/// Deletes every VM of the cloud `config` names, whatever its group (each test has its
/// own local cloud state, or its own Nova project), all at once: each may take the
/// driver's grace period.
async fn delete_all(
    config: &autoscaler::conf::Config,
) -> Result<(), autoscaler::driver::DriverError> {
    let driver = autoscaler::driver::from_config(config)?;
    let mut deletes = tokio::task::JoinSet::new();
    for vm in driver.list_all().await? {
        let driver = driver.clone();
        deletes.spawn(async move { driver.delete(&vm.id).await });
    }
    deletes.join_all().await.into_iter().collect()
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.delete_local_vms();
        if std::env::var_os("AUTOSCALER_TEST_KEEP").is_some() {
            // For a post-mortem: the config, state (time series, VM consoles) and logs.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("AUTOSCALER_TEST_KEEP: kept {}", dir.keep().display());
        }
        if let Some(vhost) = &self.vhost {
            let _ = Command::new("rabbitmqctl")
                .args(["delete_vhost", vhost])
                .output();
            return; // Deleting the vhost deleted everything in it.
        }
        // Delete what this test declared, on a thread of its own (Drop may run inside a
        // tokio runtime, which cannot be blocked on).
        let config = self.link_config();
        let exchange = self.exchange.clone();
        let queues = [
            format!("{exchange}.conductor.rpc"),
            format!("{exchange}.conductor.telemetry.{}", self.host),
            format!("{}.info", self.topic),
            format!("{}.warn", self.topic),
            format!("{}.error", self.topic),
        ];
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let (connection, _) = link::connect(&config, 0).await.ok()?;
                for queue in &queues {
                    if let Ok(channel) = connection.create_channel().await {
                        let _ = channel
                            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                            .await;
                    }
                }
                if let Ok(channel) = connection.create_channel().await {
                    let _ = channel
                        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                        .await;
                }
                let _ = connection.close(200, "test cleanup".into()).await;
                Some(())
            })
        })
        .join();
    }
}
