//! The agent binary against the real RabbitMQ: it heartbeats on
//! `heartbeat.<group>.<vm>` in the envelope, transient and with the TTL asked for, and
//! stops cleanly on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use autoscaler_messaging::{
    link,
    signing::{MessageSecrets, Signature},
    Durability, Envelope, Heartbeat, LinkConfig, QueueSpec, Role, Topology,
};
use futures_lite::StreamExt;
use lapin::{
    options::{BasicConsumeOptions, ExchangeDeleteOptions, QueueDeleteOptions},
    types::FieldTable,
};

fn broker_url() -> String {
    std::env::var("AUTOSCALER_TEST_TRANSPORT_URL")
        .unwrap_or_else(|_| "rabbit://guest:guest@127.0.0.1:5672/".into())
}

#[tokio::test]
async fn heartbeats_arrive_in_order_with_ttl_and_sigterm_stops_the_agent() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("autoscaler-test-{}", &id[..10]);
    let queue = format!("{exchange}.heartbeats");
    let config = LinkConfig::new(broker_url().parse().unwrap(), "agent-test");
    let (connection, _) = link::connect(&config, 0).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(exchange.clone(), Durability::Transient);
    topology.declare_exchange(&channel).await.unwrap();
    topology
        .declare_queue(
            &channel,
            &queue,
            &QueueSpec::telemetry(100),
            &["heartbeat.#".to_owned()],
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let mut agent = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"))
        .args([
            "--exchange",
            &exchange,
            "--group",
            "shop",
            "--vm-id",
            "vm-7",
            "--role",
            "web",
        ])
        .args(["--heartbeat-interval", "0.2", "--telemetry-ttl", "3"])
        .env("AUTOSCALER_TRANSPORT_URL", broker_url())
        .env(
            "AUTOSCALER_MESSAGE_KEY",
            secrets().vm_key("vm-7").to_base64(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // In order and none lost once the link is up. The first may go out before the
    // agent's connection is (a 0.2 s interval on a loaded machine) and is then dropped:
    // the run's sequence starts at the first that arrived.
    let mut first_seq = None;
    for i in 0..3u64 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.routing_key.as_str(), "heartbeat.shop.vm-7");
        // Issue 17: signed with vm-7's key.
        let signature = Signature::of(delivery.properties.headers().as_ref()).unwrap();
        assert_eq!(signature.signer, "vm-7");
        assert!(secrets().verify("vm-7", &delivery.data, &signature.mac));
        assert_eq!(
            delivery
                .properties
                .expiration()
                .as_ref()
                .map(|e| e.to_string()),
            Some("3000".to_owned())
        );
        assert_eq!(*delivery.properties.delivery_mode(), Some(1), "transient");
        let raw = Envelope::decode(&delivery.data, 65536).unwrap();
        let heartbeat = raw.payload_as::<Heartbeat>().unwrap().unwrap();
        assert_eq!(heartbeat.sender, "autoscaler-agent.vm-7");
        let expected_seq = *first_seq.get_or_insert(heartbeat.payload.seq) + i;
        assert!(
            expected_seq < 10,
            "the first heartbeats were lost: {heartbeat:?}"
        );
        assert_eq!(
            heartbeat.payload,
            Heartbeat {
                group: "shop".into(),
                vm_id: "vm-7".into(),
                role: Role::Web,
                seq: expected_seq,
                serving: None,
                url: None,
                address: None,
            }
        );
    }

    // Issue 15, item 7: the agent asks for 16 KiB frames (lapin keeps 32 frames for each
    // of its two buffers: 8 MiB at RabbitMQ's 128 KiB, half the agent's memory), and the
    // broker agrees.
    let frame_max = tokio::task::spawn_blocking(|| agent_frame_max("autoscaler-agent.vm-7"));
    assert_eq!(frame_max.await.unwrap(), link::AGENT_FRAME_MAX);

    let status = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || agent.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "agent exit {exit:?}");

    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    connection.close(200, "done".into()).await.unwrap();
}

#[test]
fn bad_settings_are_refused_without_showing_the_password() {
    let agent = || {
        let mut agent = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"));
        agent.env("AUTOSCALER_MESSAGE_KEY", secrets().vm_key("v").to_base64());
        agent
    };
    let out = agent()
        .args([
            "--transport-url",
            "kafka://u:s3cret@h/",
            "--group",
            "g",
            "--vm-id",
            "v",
            "--role",
            "web",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("ERROR: command line: [agent] transport_url"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
    // A usage error (exit 2): an unknown role.
    let out = agent()
        .args([
            "--transport-url",
            "rabbit://h/",
            "--group",
            "g",
            "--vm-id",
            "v",
            "--role",
            "db",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected web or splitter"));
    // --help never shows the broker password taken from the environment.
    let out = agent()
        .arg("--help")
        .env("AUTOSCALER_TRANSPORT_URL", "rabbit://u:s3cret@h/")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
}

#[test]
fn write_files_materializes_the_user_data_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = autoscaler_messaging::AgentConfig {
        transport_url: "rabbit://guest:guest@127.0.0.1:5672/".into(),
        control_exchange: "autoscaler".into(),
        group: "shop".into(),
        role: Role::Web,
        vm_id: "shop-web-1".into(),
        heartbeat_interval: Duration::from_secs(1),
        telemetry_ttl: Duration::from_secs(10),
        amqp_durable_queues: false,
        check_timeout: Duration::from_secs(1),
        message_key: secrets().vm_key("shop-web-1"),
    };
    let user_data = dir.path().join("user-data");
    std::fs::write(&user_data, config.to_user_data()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"))
        .arg("write-files")
        .arg("--user-data")
        .arg(&user_data)
        .arg("--root")
        .arg(dir.path().join("root"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written =
        std::fs::read_to_string(dir.path().join("root/etc/autoscaler/agent.conf")).unwrap();
    assert_eq!(
        autoscaler_messaging::AgentConfig::from_ini("x", &written).unwrap(),
        config
    );
}

/// Answers every GET with 200 after `delay`, forever; returns its URL.
async fn slow_page(delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                tokio::time::sleep(delay).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://127.0.0.1:{port}/webserver/index.jsp")
}

/// Regression (issue 16, item 1): a page slower than the old 1 s check never said
/// "serving", so its VM never joined the pool. With the configuration's check_timeout
/// (the conductor derives it from the template's target) a 1.5 s page is serving, and the
/// check, running apart, never delays a heartbeat.
#[tokio::test]
async fn issue_16_a_page_slower_than_an_interval_is_serving_and_heartbeats_stay_on_time() {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let exchange = format!("autoscaler-test-{}", &id[..10]);
    let queue = format!("{exchange}.heartbeats");
    let config = LinkConfig::new(broker_url().parse().unwrap(), "agent-test");
    let (connection, _) = link::connect(&config, 0).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(exchange.clone(), Durability::Transient);
    topology.declare_exchange(&channel).await.unwrap();
    topology
        .declare_queue(
            &channel,
            &queue,
            &QueueSpec::telemetry(100),
            &["heartbeat.#".to_owned()],
        )
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "t".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let agent_conf = dir.path().join("agent.conf");
    let agent_config = autoscaler_messaging::AgentConfig {
        transport_url: broker_url(),
        control_exchange: exchange.clone(),
        group: "shop".into(),
        role: Role::Web,
        vm_id: "vm-slow".into(),
        heartbeat_interval: Duration::from_millis(200),
        telemetry_ttl: Duration::from_secs(3),
        amqp_durable_queues: false,
        check_timeout: Duration::from_secs(3),
        message_key: secrets().vm_key("vm-slow"),
    };
    std::fs::write(&agent_conf, agent_config.to_ini()).unwrap();
    let page = slow_page(Duration::from_millis(1500)).await;
    let mut agent = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"))
        .arg("--config-file")
        .arg(&agent_conf)
        .args(["--check-url", &page])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Until the page answers: on time and not serving; then serving, still on time.
    let mut last: Option<std::time::Instant> = None;
    let mut widest = Duration::ZERO;
    let mut serving = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while serving.last() != Some(&Some(true)) || serving.len() < 20 {
        assert!(std::time::Instant::now() < deadline, "{serving:?}");
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap()
            .unwrap();
        let now = std::time::Instant::now();
        widest = widest.max(last.map_or(Duration::ZERO, |l| now - l));
        last = Some(now);
        let raw = Envelope::decode(&delivery.data, 65536).unwrap();
        let heartbeat = raw.payload_as::<Heartbeat>().unwrap().unwrap();
        serving.push(heartbeat.payload.serving);
    }
    assert_eq!(
        serving[0],
        Some(false),
        "not serving before the first answer"
    );
    assert!(
        widest < Duration::from_millis(700),
        "a 1.5 s check delayed a 0.2 s heartbeat by {widest:?}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = tokio::task::spawn_blocking(move || agent.wait()).await;
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    connection.close(200, "done".into()).await.unwrap();
}

/// The conductor's message secret in these tests.
/// The `frame_max` the broker agreed with the connection named `name`
/// (`rabbitmqctl list_connections`).
fn agent_frame_max(name: &str) -> u32 {
    let out = Command::new("rabbitmqctl")
        .args(["list_connections", "--formatter", "json"])
        .args(["client_properties", "frame_max"])
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connections: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let named = |c: &&serde_json::Value| c["client_properties"].to_string().contains(name);
    let connection = connections.iter().find(named).unwrap_or_else(|| {
        panic!(
            "no connection {name}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    connection["frame_max"].as_u64().expect("frame_max") as u32
}

fn secrets() -> MessageSecrets {
    MessageSecrets::new(b"heartbeat-test-message-secret-0123456789", None)
}
