//! The splitter role end to end on the real web tier: the two local images
//! (`etc/autoscaler/images/modjk-splitter` and `tomcat-web`) booted by hand as the local
//! cloud driver boots them (setsid, the AUTOSCALER_* environment, a VM directory each,
//! addresses 127.0.3.10 and .11), each ending in this build's agent, against the real
//! RabbitMQ on an exchange of the test's own. The test plays the conductor: it publishes
//! pool updates and reads acks, metrics and heartbeats.
//!
//! Needs Apache + mod_jk, Tomcat 10 (`tools/install-webtier`) and RabbitMQ
//! (`AUTOSCALER_TEST_TRANSPORT_URL`, default `rabbit://guest:guest@127.0.0.1:5672/`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use autoscaler_messaging::{
    agent_config::WriteFile,
    link,
    signing::{MessageSecrets, Signature, VmKey},
    AgentConfig, Durability, Envelope, Heartbeat, LinkConfig, MemberState, Metrics, PoolAck,
    PoolMember, PoolOutcome, PoolUpdate, QueueSpec, Role, Topology,
};
use chrono::Utc;
use futures_lite::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, BasicPublishOptions, ExchangeDeleteOptions},
    types::FieldTable,
    BasicProperties, Channel, Consumer,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::{timeout, Instant},
};

const SPLITTER_ADDR: &str = "127.0.3.10";
const WEB_ADDR: &str = "127.0.3.11";
const SITE: &str = "http://127.0.3.10:8000/webserver/index.jsp";
const GROUP: &str = "shop";
/// The group's AJP secret, as the conductor makes one (issue 17).
const AJP_SECRET: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn broker_url() -> String {
    std::env::var("AUTOSCALER_TEST_TRANSPORT_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".into())
}

fn image_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../etc/autoscaler/images")
        .join(name)
}

/// The VMs' process groups: killed (SIGKILL, a VM crash) when the test ends, however it
/// ends; on a failure (or with AUTOSCALER_TEST_CONSOLES set) their consoles are printed
/// first.
struct Vms {
    /// Each VM's first process (the group's leader) and directory.
    groups: Vec<(Child, PathBuf)>,
}

impl Drop for Vms {
    fn drop(&mut self) {
        for (leader, dir) in &mut self.groups {
            if std::thread::panicking() || std::env::var_os("AUTOSCALER_TEST_CONSOLES").is_some() {
                let console = std::fs::read_to_string(dir.join("console.log")).unwrap_or_default();
                let lines: Vec<&str> = console.lines().collect();
                eprintln!("--- {} (last lines)", dir.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    eprintln!("{line}");
                }
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", leader.id())])
                .stderr(Stdio::null())
                .status();
            let _ = leader.wait();
        }
    }
}

impl Vms {
    /// Boots `image` as VM `name` on `address`, as the local driver does.
    fn boot(&mut self, root: &Path, image: &str, name: &str, address: &str, config: &AgentConfig) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let user_data = dir.join("user-data");
        // The agent's file and the group's AJP secret, as the conductor writes them.
        let mut cloud_config = config.cloud_config();
        cloud_config.write_files.push(WriteFile {
            path: "/etc/autoscaler/ajp-secret".into(),
            content: format!("{AJP_SECRET}\n"),
            permissions: "0600".into(),
        });
        std::fs::write(&user_data, cloud_config.to_user_data()).unwrap();
        let console = std::fs::File::create(dir.join("console.log")).unwrap();
        let child = Command::new("setsid")
            .arg(image_dir(image).join("boot"))
            .current_dir(&dir)
            .env("AUTOSCALER_VM_ID", &config.vm_id)
            .env("AUTOSCALER_VM_NAME", name)
            .env("AUTOSCALER_VM_ADDRESS", address)
            .env("AUTOSCALER_VM_DIR", &dir)
            .env("AUTOSCALER_USER_DATA", &user_data)
            .env("AUTOSCALER_AGENT", env!("CARGO_BIN_EXE_autoscaler-agent"))
            .env("AUTOSCALER_IMAGE_DIR", image_dir(image))
            .env("RUST_LOG", "info,autoscaler_agent=debug,lapin=warn")
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .unwrap();
        // setsid(1) calls setsid() and execs in place (the child is no group leader), so
        // pid = session = process group, once it has run.
        let pid = child.id();
        self.groups.push((child, dir));
        let pgid = |pid: u32| -> Option<u32> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pgid(pid) != Some(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name}: no process group of its own"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM to VM `index`'s leader (its agent, which the boot script exec'd); returns
    /// whether it exited successfully within `patience`.
    async fn terminate_agent(&mut self, index: usize, patience: Duration) -> bool {
        let leader = &mut self.groups[index].0;
        let status = Command::new("kill")
            .args(["-TERM", &leader.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + patience;
        loop {
            if let Some(exit) = leader.try_wait().unwrap() {
                return exit.success();
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_booted(&self, patience: Duration) {
        let deadline = Instant::now() + patience;
        for (_, dir) in &self.groups {
            while !dir.join("boot-finished").exists() {
                assert!(Instant::now() < deadline, "{} did not boot", dir.display());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

fn agent_config(exchange: &str, vm_id: &str, role: Role) -> AgentConfig {
    AgentConfig {
        transport_url: broker_url(),
        control_exchange: exchange.to_owned(),
        group: GROUP.into(),
        role,
        vm_id: vm_id.into(),
        heartbeat_interval: Duration::from_millis(500),
        telemetry_ttl: Duration::from_secs(10),
        amqp_durable_queues: false,
        check_timeout: Duration::from_secs(1),
        message_key: secrets().vm_key(vm_id),
    }
}

/// The status of a GET to a loopback URL (HTTP/1.0, no client crate), or 0 when nothing
/// answered within 10 s.
async fn get_status(url: &str) -> u16 {
    get(url).await.0
}

/// The status and the whole answer of a GET to a loopback URL, (0, "") when nothing
/// answered within 10 s.
async fn get(url: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let exchange = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        let text = String::from_utf8_lossy(&answer).into_owned();
        Some((text.split_whitespace().nth(1)?.parse().ok()?, text))
    };
    timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// The status Tomcat's AJP connector at `addr` answers a `GET /webserver/index.jsp` sent
/// straight to it (as mod_jk would, AJP13 `FORWARD_REQUEST`), with `secret` as the
/// request's secret attribute or none; 0 when it answers no `SEND_HEADERS`.
async fn ajp_status(addr: &str, secret: Option<&str>) -> u16 {
    fn string(out: &mut Vec<u8>, s: Option<&str>) {
        match s {
            None => out.extend_from_slice(&[0xff, 0xff]),
            Some(s) => {
                out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
                out.push(0);
            }
        }
    }
    // Prefix code 2 (forward request), method 2 (GET), then protocol, URI, remote
    // address, remote host, server name, port, is_ssl, no headers; attribute 0x0C is the
    // secret; 0xFF ends the attributes.
    let mut body = vec![2, 2];
    for s in [
        Some("HTTP/1.1"),
        Some("/webserver/index.jsp"),
        Some("127.0.0.1"),
        None,
        Some(WEB_ADDR),
    ] {
        string(&mut body, s);
    }
    body.extend_from_slice(&80u16.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0]);
    if let Some(secret) = secret {
        body.push(0x0c);
        string(&mut body, Some(secret));
    }
    body.push(0xff);
    let mut packet = vec![0x12, 0x34];
    packet.extend_from_slice(&(body.len() as u16).to_be_bytes());
    packet.extend_from_slice(&body);
    let exchange = async {
        let mut stream = TcpStream::connect((addr, 8009)).await.ok()?;
        stream.write_all(&packet).await.ok()?;
        // Container packets: "AB", length, then code 4 (SEND_HEADERS) and the status.
        let mut head = [0u8; 7];
        stream.read_exact(&mut head).await.ok()?;
        (head[..2] == *b"AB" && head[4] == 4).then(|| u16::from_be_bytes([head[5], head[6]]))
    };
    timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

async fn consume(channel: &Channel, topology: &Topology, name: &str, key: &str) -> Consumer {
    let queue = format!("{}.test.{name}", topology.exchange);
    topology
        .declare_queue(
            channel,
            &queue,
            &QueueSpec::telemetry(10_000),
            &[key.to_owned()],
        )
        .await
        .unwrap();
    channel
        .basic_consume(
            queue.as_str().into(),
            name.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
}

/// The next message of kind `P` on `consumer` that `accept` takes, within `patience`.
async fn next<P: autoscaler_messaging::Payload>(
    consumer: &mut Consumer,
    patience: Duration,
    what: &str,
    mut accept: impl FnMut(&P) -> bool,
) -> P {
    let deadline = Instant::now() + patience;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let delivery = timeout(remaining, consumer.next())
            .await
            .unwrap_or_else(|_| panic!("no {what} within {patience:?}"))
            .expect("consumer ended")
            .unwrap();
        // Issue 17: everything an agent publishes carries its VM's MAC.
        let signature = Signature::of(delivery.properties.headers().as_ref())
            .unwrap_or_else(|| panic!("an unsigned message while waiting for {what}"));
        assert!(secrets().verify(&signature.signer, &delivery.data, &signature.mac));
        let raw = Envelope::decode(&delivery.data, 1 << 20).unwrap();
        if let Some(Ok(message)) = raw.payload_as::<P>() {
            if accept(&message.payload) {
                return message.payload;
            }
        }
    }
}

/// The splitter's pool queue, as the conductor declares it (the agent declares nothing:
/// issue 17).
async fn declare_pool_queue(channel: &Channel, topology: &Topology) {
    topology
        .declare_queue(
            channel,
            &topology.splitter_queue(
                "shop-splitter",
                &secrets().vm_key("shop-splitter").pool_queue_tag(),
            ),
            &QueueSpec::splitter_pool(),
            &[Topology::pool_key(GROUP)],
        )
        .await
        .unwrap();
}

/// The conductor's message secret in these tests.
fn secrets() -> MessageSecrets {
    MessageSecrets::new(b"splitter-test-message-secret-0123456789", None)
}

/// Publishes a pool message as the conductor does: signed with the splitter's key.
async fn publish(channel: &Channel, exchange: &str, body: &[u8]) {
    let key = secrets().vm_key("shop-splitter");
    publish_signed(channel, exchange, body, Some(("shop-splitter", &key))).await
}

/// Publishes a pool message signed as `signed` says (signer and key), or unsigned.
async fn publish_signed(
    channel: &Channel,
    exchange: &str,
    body: &[u8],
    signed: Option<(&str, &VmKey)>,
) {
    let mut properties = BasicProperties::default().with_delivery_mode(2);
    if let Some((signer, key)) = signed {
        properties = properties.with_headers(key.headers(signer, body));
    }
    channel
        .basic_publish(
            exchange.into(),
            Topology::pool_key(GROUP).as_str().into(),
            BasicPublishOptions::default(),
            body,
            properties,
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

fn pool(generation: u64, members: Vec<PoolMember>) -> Vec<u8> {
    let update = PoolUpdate {
        group: GROUP.into(),
        generation,
        members,
        listening: true,
    };
    Envelope::new("test-conductor", Utc::now(), update).to_bytes()
}

fn web_member(state: MemberState) -> PoolMember {
    PoolMember {
        name: autoscaler_messaging::member_name("shop-web-1"),
        host: WEB_ADDR.into(),
        port: 8009,
        state,
    }
}

/// Issue 17, item 5, on the booted VMs with one member in the pool: Tomcat's AJP
/// connector takes requests with the group's secret only; jkstatus is read-only for any
/// local client, the read-write worker needs the agent's login; the files that hold the
/// secrets are the VM user's alone.
async fn the_splitter_is_no_open_door(root: &Path) {
    assert_eq!(ajp_status(WEB_ADDR, Some(AJP_SECRET)).await, 200);
    assert_eq!(ajp_status(WEB_ADDR, None).await, 403);
    assert_eq!(
        ajp_status(WEB_ADDR, Some(&AJP_SECRET.replace('0', "1"))).await,
        403
    );
    let update = "?cmd=update&mime=txt&w=loadbalancer&sw=shop_web_1&vwa=D";
    let (status, text) = get(&format!("http://{SPLITTER_ADDR}:8000/jkmanager/{update}")).await;
    assert_eq!(status, 200);
    assert!(text.contains("not allowed in read only mode"), "{text}");
    let (status, _) = get(&format!(
        "http://{SPLITTER_ADDR}:8000/jkmanager/admin/{update}"
    ))
    .await;
    assert_eq!(status, 401);
    let (_, prop) = get(&format!("http://{SPLITTER_ADDR}:8000/jkmanager/?mime=prop")).await;
    assert!(prop.contains("worker.shop_web_1.activation=ACT"), "{prop}");
    assert!(
        !prop.contains(AJP_SECRET),
        "the status pages do not show the secret"
    );
    use std::os::unix::fs::PermissionsExt as _;
    for file in [
        "shop-splitter/apache/workers.properties",
        "shop-splitter/apache/jkadmin.credentials",
        "shop-web-1/tomcat/conf/server.xml",
    ] {
        let mode = std::fs::metadata(root.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
    let workers = std::fs::read_to_string(root.join("shop-splitter/apache/workers.properties"));
    assert!(workers
        .unwrap()
        .contains(&format!("worker.member.secret={AJP_SECRET}\n")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_splitter_applies_pools_measures_and_drains_on_real_mod_jk() {
    let started = Instant::now();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("autoscaler-test-{}", &id[..10]);
    let topology = Topology::new(exchange.clone(), Durability::Transient);
    let config = LinkConfig::new(broker_url().parse().unwrap(), "splitter-test");
    let (connection, _) = link::connect(&config, 0).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare_exchange(&channel).await.unwrap();
    declare_pool_queue(&channel, &topology).await;
    let mut acks = consume(&channel, &topology, "acks", &Topology::pool_ack_key(GROUP)).await;
    let mut metrics = consume(
        &channel,
        &topology,
        "metrics",
        &Topology::metrics_key(GROUP),
    )
    .await;
    let mut beats = consume(&channel, &topology, "beats", "heartbeat.shop.*").await;

    let root = tempfile::tempdir().unwrap();
    let mut vms = Vms { groups: Vec::new() };
    vms.boot(
        root.path(),
        "modjk-splitter",
        "shop-splitter",
        SPLITTER_ADDR,
        &agent_config(&exchange, "shop-splitter", Role::Splitter),
    );
    vms.boot(
        root.path(),
        "tomcat-web",
        "shop-web-1",
        WEB_ADDR,
        &agent_config(&exchange, "shop-web-1", Role::Web),
    );
    vms.wait_booted(Duration::from_secs(40)).await;
    let workers = root.path().join("shop-splitter/apache/workers.properties");

    // Both agents up: the splitter's queue exists once it heartbeats, and both servers
    // answer their checks.
    let patience = Duration::from_secs(15);
    let splitter_beat = next::<Heartbeat>(&mut beats, patience, "splitter heartbeat", |h| {
        h.vm_id == "shop-splitter" && h.serving == Some(true)
    })
    .await;
    assert_eq!(splitter_beat.role, Role::Splitter);
    assert_eq!(
        splitter_beat.url.as_deref(),
        Some("http://127.0.3.10:8000/webserver/")
    );
    next::<Heartbeat>(&mut beats, patience, "web heartbeat serving", |h| {
        h.vm_id == "shop-web-1" && h.serving == Some(true)
    })
    .await;
    // No member yet: the site answers 503.
    assert_eq!(get_status(SITE).await, 503);

    // Generation 1: the web VM joins.
    publish(
        &channel,
        &exchange,
        &pool(1, vec![web_member(MemberState::Active)]),
    )
    .await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 1", |_| true).await;
    assert_eq!(
        (ack.generation, &ack.outcome, ack.vm_id.as_str()),
        (1, &PoolOutcome::Applied, "shop-splitter")
    );
    let text = std::fs::read_to_string(&workers).unwrap();
    assert!(
        text.contains("balance_workers=placeholder,shop_web_1,_spare_1,"),
        "{text}"
    );
    assert!(
        text.contains("worker.shop_web_1.host=127.0.3.11\n"),
        "{text}"
    );
    // The graceful reload's new children serve about a second later.
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_status(SITE).await != 200 {
        assert!(Instant::now() < deadline, "the site never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..20 {
        assert_eq!(get_status(SITE).await, 200);
    }
    the_splitter_is_no_open_door(root.path()).await;
    let measured = next::<Metrics>(&mut metrics, patience, "metrics with requests", |m| {
        m.members
            .iter()
            .any(|s| s.member == "shop_web_1" && s.stats.requests > 0)
    })
    .await;
    assert!(
        measured.site.requests > 0 && measured.site.mean > 0.04,
        "{measured:?}"
    );
    assert!(measured.members.iter().all(|m| m.member != "placeholder"));
    assert_eq!(measured.vm_id, "shop-splitter");
    // The agent's own jkstatus checks are not the site's traffic: an idle second is 0.
    next::<Metrics>(&mut metrics, patience, "idle metrics", |m| {
        m.site.requests == 0
            && m.members.len() == 1
            && m.members[0].member == "shop_web_1"
            && m.members[0].busy == Some(0)
    })
    .await;

    // Garbage, an unknown state and an older generation: dropped or ignored, mod_jk
    // untouched, no answer (the next ack must be generation 2's).
    publish(&channel, &exchange, b"{not json").await;
    let melting = String::from_utf8(pool(5, vec![web_member(MemberState::Active)]))
        .unwrap()
        .replace("\"active\"", "\"melting\"");
    publish(&channel, &exchange, melting.as_bytes()).await;
    publish(&channel, &exchange, &pool(0, vec![])).await;
    // Issue 17: a pool that empties the site, unsigned, signed with a web VM's key, and
    // signed as the splitter with a key of another secret: all dropped.
    let forged = pool(6, vec![]);
    publish_signed(&channel, &exchange, &forged, None).await;
    let web_key = secrets().vm_key("shop-web-1");
    publish_signed(&channel, &exchange, &forged, Some(("shop-web-1", &web_key))).await;
    let other = MessageSecrets::new(b"another-conductors-secret-0123456789ab", None);
    let wrong = other.vm_key("shop-splitter");
    publish_signed(
        &channel,
        &exchange,
        &forged,
        Some(("shop-splitter", &wrong)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get_status(SITE).await, 200);
    assert_eq!(std::fs::read_to_string(&workers).unwrap(), text);

    // Generation 2: drain the member under load; its in-flight count reaches 0.
    let running = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for _ in 0..6 {
        let (running, served) = (running.clone(), served.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                if get_status(SITE).await == 200 {
                    served.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while served.load(Ordering::Relaxed) < 20 {
        assert!(Instant::now() < deadline, "no load served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish(
        &channel,
        &exchange,
        &pool(2, vec![web_member(MemberState::Draining)]),
    )
    .await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 2", |_| true).await;
    assert_eq!((ack.generation, &ack.outcome), (2, &PoolOutcome::Applied));
    let drained_at = Utc::now();
    running.store(false, Ordering::Relaxed);
    next::<Metrics>(&mut metrics, patience, "drained member idle", |m| {
        m.start >= drained_at
            && m.members
                .iter()
                .any(|s| s.member == "shop_web_1" && s.busy == Some(0))
    })
    .await;
    for task in load {
        task.await.unwrap();
    }
    let text = std::fs::read_to_string(&workers).unwrap();
    assert!(text.contains("worker.shop_web_1.activation=D\n"), "{text}");
    // The drain went through the read-write status worker, with the agent's login.
    let log =
        std::fs::read_to_string(root.path().join("shop-splitter/apache/logs/mod_jk.log")).unwrap();
    assert!(
        log.contains("Status worker 'jkadmin' changing 'activation' for sub worker 'shop_web_1'"),
        "{log}"
    );
    // Draining the only member: new requests find no active member.
    assert_eq!(get_status(SITE).await, 503);

    // Generation 3 with a host that is no address: rejected, nothing touched.
    let mut bad = web_member(MemberState::Active);
    bad.host = "not-an-ip".into();
    publish(&channel, &exchange, &pool(3, vec![bad])).await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 3", |_| true).await;
    assert_eq!(ack.generation, 3);
    match &ack.outcome {
        PoolOutcome::Rejected { reason } => {
            assert!(reason.contains("not an IP address"), "{reason}")
        }
        other => panic!("generation 3 was {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&workers).unwrap(), text);
    // The generation applied last, re-sent: answered again.
    publish(
        &channel,
        &exchange,
        &pool(2, vec![web_member(MemberState::Draining)]),
    )
    .await;
    let ack = next::<PoolAck>(&mut acks, patience, "re-ack of generation 2", |_| true).await;
    assert_eq!((ack.generation, &ack.outcome), (2, &PoolOutcome::Applied));

    // Generation 4: stop listening. Apache stops; the agent stays and says so.
    let stop = PoolUpdate {
        group: GROUP.into(),
        generation: 4,
        members: vec![],
        listening: false,
    };
    publish(
        &channel,
        &exchange,
        &Envelope::new("test-conductor", Utc::now(), stop).to_bytes(),
    )
    .await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 4", |_| true).await;
    assert_eq!((ack.generation, &ack.outcome), (4, &PoolOutcome::Applied));
    next::<Heartbeat>(&mut beats, patience, "splitter not serving", |h| {
        h.vm_id == "shop-splitter" && h.serving == Some(false)
    })
    .await;
    assert_eq!(get_status(SITE).await, 0, "nothing listens any more");
    // The heartbeats go on after the stop; SIGTERM ends the agent cleanly.
    next::<Heartbeat>(&mut beats, patience, "heartbeat after the stop", |h| {
        h.vm_id == "shop-splitter" && h.serving == Some(false)
    })
    .await;
    assert!(
        vms.terminate_agent(0, Duration::from_secs(5)).await,
        "the splitter agent did not exit 0 on SIGTERM"
    );

    drop(vms);
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
    eprintln!("splitter test took {:?}", started.elapsed());
}

/// The site's answers through a join, one (instant, status) per request.
type Answers = Arc<std::sync::Mutex<Vec<(Instant, u16)>>>;

/// Members join a loaded site without a stall: a graceful reload stops Apache from
/// accepting for about a second (measured: no request completed for 0.6-1.8 s after each
/// one), so a member that joins takes a spare worker through jkstatus instead. Counts,
/// not timings on this machine's speed: with 12 clients always waiting on one member of
/// 4 threads x 50 ms, every 100 ms ends requests unless the site stalls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_a_loaded_site_without_a_stall() {
    const SPLITTER: &str = "127.0.3.20";
    const SITE: &str = "http://127.0.3.20:8000/webserver/index.jsp";
    let id = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("autoscaler-test-{}", &id[..10]);
    let topology = Topology::new(exchange.clone(), Durability::Transient);
    let config = LinkConfig::new(broker_url().parse().unwrap(), "splitter-join-test");
    let (connection, _) = link::connect(&config, 0).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.declare_exchange(&channel).await.unwrap();
    declare_pool_queue(&channel, &topology).await;
    let mut acks = consume(&channel, &topology, "acks", &Topology::pool_ack_key(GROUP)).await;
    let mut beats = consume(&channel, &topology, "beats", "heartbeat.shop.*").await;

    let root = tempfile::tempdir().unwrap();
    let mut vms = Vms { groups: Vec::new() };
    let splitter = agent_config(&exchange, "shop-splitter", Role::Splitter);
    vms.boot(
        root.path(),
        "modjk-splitter",
        "shop-splitter",
        SPLITTER,
        &splitter,
    );
    let web = |n: u8| PoolMember {
        name: autoscaler_messaging::member_name(&format!("shop-web-{n}")),
        host: format!("127.0.3.{}", 20 + n),
        port: 8009,
        state: MemberState::Active,
    };
    for n in [1, 2] {
        let name = format!("shop-web-{n}");
        let config = agent_config(&exchange, &name, Role::Web);
        vms.boot(root.path(), "tomcat-web", &name, &web(n).host, &config);
    }
    vms.wait_booted(Duration::from_secs(60)).await;
    let patience = Duration::from_secs(15);
    next::<Heartbeat>(&mut beats, patience, "splitter heartbeat", |h| {
        h.vm_id == "shop-splitter" && h.serving == Some(true)
    })
    .await;

    // Generation 1 (a reload: the image's file has no spare yet), then load.
    publish(&channel, &exchange, &pool(1, vec![web(1)])).await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 1", |_| true).await;
    assert_eq!((ack.generation, &ack.outcome), (1, &PoolOutcome::Applied));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_status(SITE).await != 200 {
        assert!(Instant::now() < deadline, "the site never answered 200");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let running = Arc::new(AtomicBool::new(true));
    let answers: Answers = Arc::default();
    let mut load = Vec::new();
    for _ in 0..12 {
        let (running, answers) = (running.clone(), answers.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                let status = get_status(SITE).await;
                answers.lock().unwrap().push((Instant::now(), status));
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Generation 2: the second member joins under load.
    let joined = Instant::now();
    publish(&channel, &exchange, &pool(2, vec![web(1), web(2)])).await;
    let ack = next::<PoolAck>(&mut acks, patience, "ack of generation 2", |_| true).await;
    assert_eq!((ack.generation, &ack.outcome), (2, &PoolOutcome::Applied));
    let applied = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }

    let answers = answers.lock().unwrap().clone();
    let failed = answers.iter().filter(|(_, status)| *status != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", answers.len());
    // Completions per 100 ms from half a second before the update to 1.5 s after its ack.
    let from = joined - Duration::from_millis(500);
    let slots = ((applied + Duration::from_millis(1500)) - from).as_millis() / 100;
    let mut counts = vec![0u32; slots as usize];
    for (at, _) in &answers {
        if let Some(slot) = at.checked_duration_since(from) {
            if let Some(count) = counts.get_mut((slot.as_millis() / 100) as usize) {
                *count += 1;
            }
        }
    }
    eprintln!("completions per 100 ms through the join: {counts:?}");
    assert!(
        counts.iter().all(|c| *c > 0),
        "the site stalled through the join: {counts:?}"
    );
    // No reload for the join (one for generation 1), and the new member served.
    let apache = root.path().join("shop-splitter/apache");
    let errors = std::fs::read_to_string(apache.join("logs/error.log")).unwrap();
    assert_eq!(
        errors.matches("Doing graceful restart").count(),
        1,
        "{errors}"
    );
    let requests = std::fs::read_to_string(apache.join("logs/mod_jk.log")).unwrap();
    assert!(
        requests.contains("] loadbalancer shop_web_2 "),
        "shop_web_2 served nothing"
    );
    let text = std::fs::read_to_string(apache.join("workers.properties")).unwrap();
    assert!(
        text.contains("worker._spare_1.route=shop_web_2\n"),
        "{text}"
    );

    drop(vms);
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
}
