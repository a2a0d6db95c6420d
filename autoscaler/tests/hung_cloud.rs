//! Issue 16, item 3: a hung cloud never blocks the conductor's loop. The conductor's Nova
//! endpoint is a scripted API of the test's own: a TCP listener that, while "hung",
//! accepts connections and never answers (and cuts the ones it was forwarding), and
//! otherwise forwards them to the real Nova fixture. While it hangs, the CLI is answered
//! and heartbeats are taken; once it answers again, the conductor's next listing steps
//! the group, which boots its VMs through Nova.

mod common;

use std::{
    net::SocketAddr,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{
    load::{json, wait_for},
    nova::{Cleanup, NovaFixture, FLAVOR},
    Fixture,
};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// The scripted compute API: hung or forwarding to `target`, as [`ScriptedApi::hang`]
/// says. Runs on a runtime of its own, stopped with the value.
struct ScriptedApi {
    addr: SocketAddr,
    hung: watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl ScriptedApi {
    fn start(target: SocketAddr) -> ScriptedApi {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (hung, hung_rx) = watch::channel(false);
        runtime.spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(serve(client, target, hung_rx.clone()));
            }
        });
        ScriptedApi {
            addr,
            hung,
            _runtime: runtime,
        }
    }

    fn hang(&self, hung: bool) {
        self.hung.send_replace(hung);
    }
}

/// One connection: held without a byte of answer while hung; otherwise forwarded until
/// either side closes or the API turns hung (then cut, so a client that keeps its
/// connections alive meets the hang on its next one).
async fn serve(mut client: TcpStream, target: SocketAddr, mut hung: watch::Receiver<bool>) {
    if *hung.borrow() {
        let _ = hung.wait_for(|h| !*h).await;
        // Accepted while hung: never answered, even after.
        std::future::pending::<()>().await;
    }
    let Ok(mut upstream) = TcpStream::connect(target).await else {
        return;
    };
    tokio::select! {
        _ = copy_bidirectional(&mut client, &mut upstream) => {}
        _ = hung.wait_for(|h| *h) => {}
    }
}

/// The VMs `vm list` shows, and how long the CLI took to answer.
fn vm_list(fx: &Fixture) -> (Vec<serde_json::Value>, Duration) {
    let start = Instant::now();
    let out = fx.manage(&["--format", "json", "vm", "list"]);
    let took = start.elapsed();
    assert!(out.status.success(), "vm list: {}", common::stderr(&out));
    (json(&out).as_array().cloned().unwrap_or_default(), took)
}

#[test]
fn issue_16_a_hung_cloud_api_blocks_neither_the_cli_nor_heartbeats() {
    let nova = NovaFixture::new();
    nova.ensure_flavor();
    nova.ensure_images(&["tomcat-web", "modjk-splitter"]);
    let _cleanup = Cleanup(nova.clone());
    let target: SocketAddr = nova
        .compute
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let api = ScriptedApi::start(target);
    let endpoint = nova
        .compute
        .replacen(&target.to_string(), &api.addr.to_string(), 1);
    let mut fx = Fixture::new();
    fx.write_config(&format!(
        "{}\n[conductor]\nlist_timeout = 2\ncloud_call_timeout = 5\n",
        nova.config().replace(&nova.compute, &endpoint)
    ));
    let template = format!(
        "[template]\nname = shop\nimage = tomcat-web\nsplitter_image = modjk-splitter\n\
         flavor = {FLAVOR}\nnetwork = none\nmin_vms = 1\nmax_vms = 2\ntarget_response_time = 0.2\n"
    );
    std::fs::write(fx.template_path("shop"), template).unwrap();

    // The cloud hangs from the start: the conductor starts anyway (its start-up listing
    // gives up after list_timeout) and takes a template.
    api.hang(true);
    fx.start_conductor();
    let started = fx.wait_for_conductor(Duration::from_secs(30));
    fx.instantiate("shop");

    // An agent heartbeats for a VM of the group meanwhile.
    // Built beside the conductor (the workspace's binaries share target/).
    let agent_path = std::path::Path::new(env!("CARGO_BIN_EXE_autoscaler-conductor"))
        .with_file_name("autoscaler-agent");
    let mut agent = Command::new(&agent_path)
        .args(["--exchange", &fx.exchange, "--group", "shop"])
        .args(["--vm-id", "shop-web-hung", "--role", "web"])
        .args(["--heartbeat-interval", "0.2", "--telemetry-ttl", "3"])
        .env("AUTOSCALER_TRANSPORT_URL", &fx.transport_url)
        .env(
            "AUTOSCALER_MESSAGE_KEY",
            fx.message_secrets().vm_key("shop-web-hung").to_base64(),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // 10 s of hang (five list timeouts): every CLI call answered, heartbeats counted.
    let hang_start = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut counts = Vec::new();
    while hang_start.elapsed() < Duration::from_secs(10) {
        let (_, took) = vm_list(&fx);
        slowest = slowest.max(took);
        // The agent's VM is in no listing (the cloud hangs), so its heartbeats are taken
        // and dropped as not listed (issue 17's admission): the loop still takes them.
        let status = json(&fx.manage(&["--format", "json", "conductor", "status"]));
        counts.push(status["dropped"]["not_listed"].as_u64().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(500));
    }
    let servers_while_hung = nova.servers().len();
    eprintln!(
        "cloud hung: conductor up after {started:?}; {} CLI calls, slowest {slowest:?}; \
         heartbeats taken (dropped: not listed) {:?}",
        counts.len(),
        counts
    );
    assert!(
        slowest < Duration::from_secs(3),
        "CLI answered in {slowest:?}"
    );
    assert!(
        counts.last() > counts.get(counts.len() / 2) && counts[counts.len() / 2] > 0,
        "heartbeats taken while the cloud hangs: {counts:?}"
    );
    assert_eq!(servers_while_hung, 0);
    let log = fx.conductor_log();
    assert!(
        log.contains("no answer within 2 s"),
        "the listing timed out:\n{log}"
    );

    // The API answers again: the next listing steps the group, which boots its splitter
    // through Nova.
    api.hang(false);
    let (_, recovered) = wait_for(
        "a boot reaches Nova after the hang",
        Duration::from_secs(30),
        &fx,
        || (!nova.servers().is_empty()).then_some(()),
    );
    eprintln!("cloud answers again: first server in Nova {recovered:?} later");

    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    // Stopping must not wait on the cloud either.
    api.hang(true);
    let stop = Instant::now();
    fx.stop_conductor(Duration::from_secs(20));
    eprintln!(
        "conductor stopped in {:?} with the cloud hung",
        stop.elapsed()
    );
    api.hang(false);
}
