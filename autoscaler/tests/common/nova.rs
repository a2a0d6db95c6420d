//! The real Nova of `tools/nova-fixture` for tests: a private project per test
//! ([`NovaFixture`]: noauth2 tokens `<user>:<project>`, so one test never sees another's
//! servers), the flavor and images a test needs, and a stand-in hypervisor
//! ([`Hypervisor`]) that gives each `ACTIVE` fake server the software a real VM would run.
//!
//! Where: `AUTOSCALER_TEST_NOVA_URL` (default `http://127.0.0.1:8774/v2.1`),
//! `AUTOSCALER_TEST_GLANCE_URL` (default `http://127.0.0.1:9292`) and
//! `AUTOSCALER_TEST_NEUTRON_URL` (default `http://127.0.0.1:9696`). `tools/test` starts the
//! fixture and sets the first. A Nova that does not answer fails the test, saying how to
//! start one: a Nova test never passes without running.
//!
//! # The hypervisor
//!
//! Nova's fake virt driver runs nothing: a server is a record. [`Hypervisor`] polls Nova as
//! admin every [`HYPERVISOR_POLL`] and, for each `ACTIVE` server of the project tagged
//! `autoscaler`, does what the local driver does for a VM: a directory with the server's
//! user data (read as admin), and the local image's `boot` (the image of the same name in
//! the test's image folder) under `setsid`, on a loopback address of the test's own /28,
//! with the `AUTOSCALER_VM_*` environment. A boot that exits before `boot-finished` puts
//! the server in `ERROR` (`os-resetState`, as a compute host reporting a failed spawn). A
//! server that is gone (404), being deleted, or no longer `ACTIVE` loses its processes
//! (SIGTERM to the group, SIGKILL after [`GRACE`]). [`Hypervisor::crash`] is a dead VM: the
//! group gets SIGKILL and the server is stopped (`os-stop`, so Nova shows `SHUTOFF`).

#![allow(dead_code)]

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use base64::Engine as _;
use nix::{
    sys::signal::{killpg, Signal},
    unistd::Pid,
};
use serde_json::{json, Value};

pub const DEFAULT_NOVA_URL: &str = "http://127.0.0.1:8774/v2.1";
pub const DEFAULT_GLANCE_URL: &str = "http://127.0.0.1:9292";
/// The fixture's Neutron stand-in (it knows no network).
pub const DEFAULT_NEUTRON_URL: &str = "http://127.0.0.1:9696";
/// The flavor every Nova test boots.
pub const FLAVOR: &str = "autoscaler.test";
/// How often the hypervisor looks at Nova.
pub const HYPERVISOR_POLL: Duration = Duration::from_millis(100);
/// How long a deleted VM's processes have after SIGTERM.
pub const GRACE: Duration = Duration::from_millis(300);

/// One test's project on the fixture.
#[derive(Clone)]
pub struct NovaFixture {
    pub compute: String,
    pub glance: String,
    pub neutron: String,
    pub project: String,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// Runs `f` to completion on a runtime of its own, on a thread of its own, so it works
/// from sync code and from inside another runtime alike.
pub fn block_on<T: Send>(f: impl std::future::Future<Output = T> + Send) -> T {
    thread::scope(|s| s.spawn(|| runtime().block_on(f)).join().expect("no panic"))
}

/// One HTTP call; `(status, JSON body or Null)`.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: &str,
    microversion: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    let mut request = http
        .request(method, url)
        .header("X-Auth-Token", token)
        .header("OpenStack-API-Version", format!("compute {microversion}"))
        .timeout(Duration::from_secs(30));
    if let Some(body) = body {
        request = request
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let text = response.text().await.map_err(|e| e.to_string())?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

impl NovaFixture {
    /// The fixture with a fresh project. Panics, saying how to start one, when no Nova
    /// answers: a test that needs Nova fails without it, it never passes by skipping
    /// (tools/test starts the fixture and sets `AUTOSCALER_TEST_NOVA_URL`).
    pub fn new() -> NovaFixture {
        let compute = std::env::var("AUTOSCALER_TEST_NOVA_URL")
            .unwrap_or_else(|_| DEFAULT_NOVA_URL.to_owned());
        let glance = std::env::var("AUTOSCALER_TEST_GLANCE_URL")
            .unwrap_or_else(|_| DEFAULT_GLANCE_URL.to_owned());
        let neutron = std::env::var("AUTOSCALER_TEST_NEUTRON_URL")
            .unwrap_or_else(|_| DEFAULT_NEUTRON_URL.to_owned());
        let fixture = NovaFixture {
            compute: compute.trim_end_matches('/').to_owned(),
            glance: glance.trim_end_matches('/').to_owned(),
            neutron: neutron.trim_end_matches('/').to_owned(),
            project: format!(
                "as-test-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..12]
            ),
        };
        match fixture.admin_get("/flavors") {
            Ok((200, _)) => fixture,
            other => panic!(
                "no Nova fixture at {compute} ({other:?}); start it with \
                 tools/nova-fixture/start-nova.sh and set AUTOSCALER_TEST_NOVA_URL \
                 (tools/test does both)"
            ),
        }
    }

    /// noauth2: user `admin` is an admin (sees user_data, may reset states).
    pub fn admin_token(&self) -> String {
        format!("admin:{}", self.project)
    }

    /// What the conductor authenticates as: a plain member of the project.
    pub fn user_token(&self) -> String {
        format!("autoscaler:{}", self.project)
    }

    /// The `[compute]` and `[nova]` sections for this project (noauth2 has no catalog:
    /// the image and network services are given).
    pub fn config(&self) -> String {
        format!(
            "[compute]\ndriver = nova\n\n[nova]\nauth_type = admin_token\nendpoint = {}\n\
             token = {}\nimage_endpoint_override = {}\nnetwork_endpoint_override = {}\n\
             timeout = 20\ndelete_timeout = 60\n",
            self.compute,
            self.user_token(),
            self.glance,
            self.neutron
        )
    }

    pub fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.compute);
        let token = self.admin_token();
        block_on(
            async move { call(&reqwest::Client::new(), method, &url, &token, "2.52", body).await },
        )
    }

    pub fn admin_get(&self, path: &str) -> Result<(u16, Value), String> {
        self.admin_call(reqwest::Method::GET, path, None)
    }

    /// The test flavor, created when missing (flavors are global; admins create them).
    pub fn ensure_flavor(&self) {
        if let Ok((200, _)) = self.admin_get(&format!("/flavors/{FLAVOR}")) {
            return;
        }
        let body =
            json!({"flavor": {"name": FLAVOR, "id": FLAVOR, "ram": 256, "vcpus": 1, "disk": 1}});
        let (status, answer) = self
            .admin_call(reqwest::Method::POST, "/flavors", Some(body))
            .expect("create the test flavor");
        // 409: another test made it meanwhile.
        assert!(
            status == 200 || status == 409,
            "create flavor: {status} {answer}"
        );
    }

    /// Public Glance images of these names (1 KiB each), created when missing.
    pub fn ensure_images(&self, names: &[&str]) {
        let glance = self.glance.clone();
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        block_on(async move {
            let http = reqwest::Client::new();
            for name in names {
                let url = format!("{glance}/v2/images?name={name}&status=active");
                let (_, found) = call(
                    &http,
                    reqwest::Method::GET,
                    &url,
                    "admin:admin",
                    "2.1",
                    None,
                )
                .await
                .expect("glance answers");
                if found["images"].as_array().is_some_and(|a| !a.is_empty()) {
                    continue;
                }
                let body = json!({"name": name, "disk_format": "raw",
                    "container_format": "bare", "visibility": "public"});
                let (status, image) = call(
                    &http,
                    reqwest::Method::POST,
                    &format!("{glance}/v2/images"),
                    "admin:admin",
                    "2.1",
                    Some(body),
                )
                .await
                .expect("create an image");
                assert_eq!(status, 201, "create image {name}: {image}");
                let id = image["id"].as_str().expect("image id").to_owned();
                let upload = http
                    .put(format!("{glance}/v2/images/{id}/file"))
                    .header("X-Auth-Token", "admin:admin")
                    .header("Content-Type", "application/octet-stream")
                    .body(vec![0u8; 1024])
                    .send()
                    .await
                    .expect("upload the image");
                assert!(upload.status().is_success(), "upload {name}: {upload:?}");
            }
        });
    }

    /// The Glance id of the image named `name`.
    pub fn image_id(&self, name: &str) -> String {
        let url = format!("{}/v2/images?name={name}", self.glance);
        block_on(async move {
            let (_, v) = call(
                &reqwest::Client::new(),
                reqwest::Method::GET,
                &url,
                "admin:admin",
                "2.1",
                None,
            )
            .await
            .expect("glance answers");
            v["images"][0]["id"]
                .as_str()
                .expect("the image exists")
                .to_owned()
        })
    }

    /// The project's servers, as admin (with user data).
    pub fn servers(&self) -> Vec<Value> {
        match self.admin_get("/servers/detail") {
            Ok((200, v)) => v["servers"].as_array().cloned().unwrap_or_default(),
            other => panic!("list servers: {other:?}"),
        }
    }

    /// Deletes every server of the project and waits for them to go (at most a minute).
    pub fn delete_all(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let servers = match self.admin_get("/servers/detail") {
                Ok((200, v)) => v["servers"].as_array().cloned().unwrap_or_default(),
                _ => return,
            };
            if servers.is_empty() || Instant::now() > deadline {
                return;
            }
            for s in &servers {
                if s["OS-EXT-STS:task_state"] != "deleting" {
                    let id = s["id"].as_str().unwrap_or_default();
                    let _ =
                        self.admin_call(reqwest::Method::DELETE, &format!("/servers/{id}"), None);
                }
            }
            thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Deletes every server of the fixture's project when dropped, so nothing of a test
/// outlives it in Nova, even when it fails.
pub struct Cleanup(pub NovaFixture);

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.0.delete_all();
    }
}

/// One server the hypervisor runs.
struct Realized {
    pgid: i32,
    address: Ipv4Addr,
    vm_dir: PathBuf,
    name: String,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Realized>,
    /// Servers handled for good (failed boot, crashed): never realized again.
    done: BTreeSet<String>,
    /// Crashes asked for.
    crash: BTreeSet<String>,
    free: Vec<Ipv4Addr>,
    /// Glance image id to name.
    image_names: HashMap<String, String>,
    stop: bool,
    /// The last poll's error, for a test that fails to say why.
    last_error: Option<String>,
}

/// A stand-in hypervisor for one test's project; see the module doc. Stops (and kills
/// what it runs) when dropped.
pub struct Hypervisor {
    state: Arc<Mutex<State>>,
    thread: Option<thread::JoinHandle<()>>,
    pub dir: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// What the hypervisor runs servers with.
pub struct HypervisorSetup {
    pub fixture: NovaFixture,
    /// Image name to the local image folder holding its `boot`.
    pub images: HashMap<String, PathBuf>,
    pub agent: PathBuf,
}

impl Hypervisor {
    pub fn start(setup: HypervisorSetup) -> Hypervisor {
        let keep = std::env::var_os("AUTOSCALER_TEST_KEEP").is_some();
        let tmp = tempfile::Builder::new()
            .prefix("nova-hypervisor-")
            .tempdir()
            .expect("a directory");
        let dir = tmp.path().to_owned();
        let (tmp, dir) = if keep {
            eprintln!("keeping the hypervisor's VMs in {}", dir.display());
            (None, tmp.keep())
        } else {
            (Some(tmp), dir)
        };
        // A /28 of our own (.1 to .14), as tests/common does for the local cloud.
        let b = uuid::Uuid::new_v4();
        let (x, y) = (150 + b.as_bytes()[0] % 100, b.as_bytes()[1] & 0xf0);
        let state = Arc::new(Mutex::new(State {
            free: (1..=14).map(|n| Ipv4Addr::new(127, x, y, n)).collect(),
            ..State::default()
        }));
        let (st, vm_root) = (state.clone(), dir.clone());
        let thread = thread::spawn(move || runtime().block_on(run(setup, st, vm_root)));
        Hypervisor {
            state,
            thread: Some(thread),
            dir,
            _dir: tmp,
        }
    }

    /// The loopback address of the server's VM, while it runs.
    pub fn address(&self, id: &str) -> Option<Ipv4Addr> {
        self.state
            .lock()
            .unwrap()
            .running
            .get(id)
            .map(|r| r.address)
    }

    /// Whether anything of the server's VM still runs.
    pub fn running(&self, id: &str) -> bool {
        let pgid = self.state.lock().unwrap().running.get(id).map(|r| r.pgid);
        pgid.is_some_and(group_runs)
    }

    /// The server's VM's console so far.
    pub fn console(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(id).join("console.log")).unwrap_or_default()
    }

    /// Ids of the servers whose VMs run.
    pub fn running_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().running.keys().cloned().collect()
    }

    /// The VM named `name` (the server's name), when it runs: its id.
    pub fn id_of(&self, name: &str) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .running
            .iter()
            .find(|(_, r)| r.name == name)
            .map(|(id, _)| id.clone())
    }

    /// Asks for a crash of the server's VM (processes killed, server stopped) and waits
    /// for it to be done.
    pub fn crash(&self, id: &str) {
        self.state.lock().unwrap().crash.insert(id.to_owned());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.state.lock().unwrap().crash.contains(id) {
            assert!(
                Instant::now() < deadline,
                "the crash of {id} never happened"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn last_error(&self) -> Option<String> {
        self.state.lock().unwrap().last_error.clone()
    }
}

impl Drop for Hypervisor {
    fn drop(&mut self) {
        self.state.lock().unwrap().stop = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Whatever still runs (the loop stops its VMs; this is for a loop that died).
        for r in self.state.lock().unwrap().running.values() {
            if r.pgid > 1 {
                let _ = killpg(Pid::from_raw(r.pgid), Signal::SIGKILL);
            }
        }
    }
}

/// Whether a live (non-zombie) process of the group exists.
pub fn group_runs(pgid: i32) -> bool {
    let Ok(procs) = fs::read_dir("/proc") else {
        return pgid > 1 && killpg(Pid::from_raw(pgid), None).is_ok();
    };
    procs.filter_map(|p| p.ok()).any(|p| {
        let stat = fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        let Some(close) = stat.rfind(')') else {
            return false;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        fields.len() > 2 && fields[2] == pgid.to_string() && !matches!(fields[0], "Z" | "X")
    })
}

/// SIGTERM to the group, [`GRACE`] to go, then SIGKILL.
async fn stop_group(pgid: i32) {
    if pgid <= 1 {
        return;
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
    let deadline = Instant::now() + GRACE;
    while group_runs(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_runs(pgid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn run(setup: HypervisorSetup, state: Arc<Mutex<State>>, root: PathBuf) {
    let http = reqwest::Client::new();
    let token = setup.fixture.admin_token();
    let compute = setup.fixture.compute.clone();
    let action = |id: String, body: Value| {
        let (http, token, url) = (
            http.clone(),
            token.clone(),
            format!("{compute}/servers/{id}/action"),
        );
        async move {
            call(
                &http,
                reqwest::Method::POST,
                &url,
                &token,
                "2.52",
                Some(body),
            )
            .await
        }
    };
    loop {
        if state.lock().unwrap().stop {
            let running: Vec<i32> = state
                .lock()
                .unwrap()
                .running
                .values()
                .map(|r| r.pgid)
                .collect();
            for pgid in running {
                stop_group(pgid).await;
            }
            state.lock().unwrap().running.clear();
            return;
        }
        tokio::time::sleep(HYPERVISOR_POLL).await;

        // Crashes first: the group dies, the server stops.
        let crashes: Vec<String> = state.lock().unwrap().crash.iter().cloned().collect();
        for id in crashes {
            let realized = {
                let mut st = state.lock().unwrap();
                st.done.insert(id.clone());
                st.running.remove(&id)
            };
            if let Some(r) = realized {
                let _ = killpg(Pid::from_raw(r.pgid), Signal::SIGKILL);
                stop_group(r.pgid).await;
                state.lock().unwrap().free.push(r.address);
            }
            let _ = action(id.clone(), json!({"os-stop": null})).await;
            state.lock().unwrap().crash.remove(&id);
        }

        let url = format!("{compute}/servers/detail?tags=autoscaler");
        let servers = match call(&http, reqwest::Method::GET, &url, &token, "2.52", None).await {
            Ok((200, v)) => v["servers"].as_array().cloned().unwrap_or_default(),
            other => {
                state.lock().unwrap().last_error = Some(format!("list: {other:?}"));
                continue;
            }
        };
        let by_id: HashMap<String, &Value> = servers
            .iter()
            .filter_map(|s| Some((s["id"].as_str()?.to_owned(), s)))
            .collect();

        // Gone, being deleted, or not ACTIVE: its processes go.
        let ending: Vec<String> = {
            let st = state.lock().unwrap();
            st.running
                .keys()
                .filter(|id| {
                    by_id.get(*id).is_none_or(|s| {
                        s["status"] != "ACTIVE" || s["OS-EXT-STS:task_state"] == "deleting"
                    })
                })
                .cloned()
                .collect()
        };
        for id in ending {
            let realized = state.lock().unwrap().running.remove(&id);
            if let Some(r) = realized {
                stop_group(r.pgid).await;
                state.lock().unwrap().free.push(r.address);
            }
        }

        // Boots that failed: the server goes to ERROR.
        let failed: Vec<String> = {
            let st = state.lock().unwrap();
            st.running
                .iter()
                .filter(|(_, r)| !r.vm_dir.join("boot-finished").exists() && !group_runs(r.pgid))
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in failed {
            let realized = {
                let mut st = state.lock().unwrap();
                st.done.insert(id.clone());
                st.running.remove(&id)
            };
            if let Some(r) = realized {
                state.lock().unwrap().free.push(r.address);
            }
            let _ = action(id, json!({"os-resetState": {"state": "error"}})).await;
        }

        // New ACTIVE servers get their VM.
        for (id, server) in &by_id {
            let new = {
                let st = state.lock().unwrap();
                !st.running.contains_key(id) && !st.done.contains(id)
            };
            if !new || server["status"] != "ACTIVE" || server["OS-EXT-STS:task_state"] == "deleting"
            {
                continue;
            }
            let image_id = server["image"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let known = state.lock().unwrap().image_names.get(&image_id).cloned();
            let image_name = match known {
                Some(n) => n,
                None => {
                    let url = format!("{compute}/images/{image_id}");
                    match call(&http, reqwest::Method::GET, &url, &token, "2.35", None).await {
                        Ok((200, v)) => {
                            let name = v["image"]["name"].as_str().unwrap_or_default().to_owned();
                            state
                                .lock()
                                .unwrap()
                                .image_names
                                .insert(image_id.clone(), name.clone());
                            name
                        }
                        other => {
                            state.lock().unwrap().last_error =
                                Some(format!("image {image_id}: {other:?}"));
                            continue;
                        }
                    }
                }
            };
            let Some(image_dir) = setup.images.get(&image_name) else {
                state.lock().unwrap().last_error =
                    Some(format!("no local image for {image_name:?}"));
                state.lock().unwrap().done.insert(id.clone());
                let _ = action(id.clone(), json!({"os-resetState": {"state": "error"}})).await;
                continue;
            };
            let Some(address) = state.lock().unwrap().free.pop() else {
                state.lock().unwrap().last_error =
                    Some("the hypervisor's addresses ran out".into());
                continue;
            };
            let user_data = server["OS-EXT-SRV-ATTR:user_data"]
                .as_str()
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            let name = server["name"].as_str().unwrap_or_default().to_owned();
            match realize(
                &root,
                id,
                &name,
                address,
                &user_data,
                image_dir,
                &setup.agent,
            ) {
                Ok((pgid, vm_dir)) => {
                    state.lock().unwrap().running.insert(
                        id.clone(),
                        Realized {
                            pgid,
                            address,
                            vm_dir,
                            name,
                        },
                    );
                }
                Err(e) => {
                    let mut st = state.lock().unwrap();
                    st.free.push(address);
                    st.last_error = Some(format!("start {id}: {e}"));
                }
            }
        }
    }
}

/// Starts the image's boot for the server, as the local driver starts a VM; its process
/// group and directory.
fn realize(
    root: &Path,
    id: &str,
    name: &str,
    address: Ipv4Addr,
    user_data: &[u8],
    image_dir: &Path,
    agent: &Path,
) -> std::io::Result<(i32, PathBuf)> {
    let vm_dir = root.join(id);
    fs::create_dir_all(&vm_dir)?;
    let user_data_path = vm_dir.join("user-data");
    fs::write(&user_data_path, user_data)?;
    let console = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(vm_dir.join("console.log"))?;
    let boot = image_dir.join("boot");
    let child = Command::new("setsid")
        .args(["sh", "-c", "echo $$ > pgid; exec \"$0\""])
        .arg(&boot)
        .current_dir(&vm_dir)
        .env("AUTOSCALER_VM_ID", id)
        .env("AUTOSCALER_VM_NAME", name)
        .env("AUTOSCALER_VM_ADDRESS", address.to_string())
        .env("AUTOSCALER_VM_DIR", &vm_dir)
        .env("AUTOSCALER_USER_DATA", &user_data_path)
        .env("AUTOSCALER_AGENT", agent)
        .env("AUTOSCALER_IMAGE_DIR", image_dir)
        .stdin(Stdio::null())
        .stdout(console.try_clone()?)
        .stderr(console)
        .spawn()?;
    let pid = i32::try_from(child.id()).map_err(std::io::Error::other)?;
    // Reap it when it ends, so it never lingers as a zombie of ours.
    thread::spawn(move || {
        let mut child = child;
        let _ = child.wait();
    });
    // setsid makes the child (same pid) a session and group leader at once; wait for it.
    let deadline = Instant::now() + Duration::from_secs(2);
    while nix::unistd::getpgid(Some(Pid::from_raw(pid))).map(|g| g.as_raw()) != Ok(pid)
        && Instant::now() < deadline
    {
        thread::sleep(Duration::from_millis(1));
    }
    Ok((pid, vm_dir))
}
