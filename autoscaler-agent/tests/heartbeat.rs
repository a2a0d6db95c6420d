//! The agent binary against the real RabbitMQ: it heartbeats on
//! `heartbeat.<group>.<vm>` in the envelope, transient and with the TTL asked for, and
//! stops cleanly on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use autoscaler_messaging::{link, Envelope, Heartbeat, LinkConfig, QueueSpec, Role, Topology};
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
    let (connection, _) = link::connect(&config, 0, false).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let topology = Topology::new(exchange.clone());
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
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    for expected_seq in 0..3u64 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a heartbeat within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(delivery.routing_key.as_str(), "heartbeat.shop.vm-7");
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
        assert_eq!(
            heartbeat.payload,
            Heartbeat {
                group: "shop".into(),
                vm_id: "vm-7".into(),
                role: Role::Web,
                seq: expected_seq
            }
        );
    }

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
fn bad_settings_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"))
        .args([
            "--transport-url",
            "kafka://h/",
            "--group",
            "g",
            "--vm-id",
            "v",
            "--role",
            "web",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unsupported scheme \"kafka\""), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_autoscaler-agent"))
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
}
