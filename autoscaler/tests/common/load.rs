//! Load and faults for the live tests: ab (apache2-utils) runs and their verdict, a
//! polling wait, the local VMs' process groups, and a TCP proxy that cuts one process's
//! broker connections without touching anyone else's.

use std::{
    io,
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use super::{stdout, Fixture};

/// The repository's real images (Tomcat, Apache + mod_jk), not the test ones.
pub fn repo_images() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../etc/autoscaler/images")
}

/// Installs what the web tier needs (apt-get, as root) when it is missing.
pub fn install_webtier() {
    let status = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tools/install-webtier"
    ))
    .status()
    .expect("run tools/install-webtier");
    assert!(status.success(), "tools/install-webtier failed");
}

/// A started conductor on the real images (Apache + mod_jk, Tomcat), with `extra_config`
/// appended to the fixture's configuration and `template` as `<dir>/site.template`.
pub fn conductor_on_real_images(template: &str, extra_config: &str) -> Fixture {
    install_webtier();
    let mut fx = Fixture::new();
    fx.images_path = repo_images();
    fx.write_config(extra_config);
    std::fs::write(fx.template_path("site"), template).expect("template file");
    fx.start_conductor();
    fx.wait_for_conductor(Duration::from_secs(20));
    fx
}

/// `autoscaler-manage template instantiate <dir>/site.template`, followed until the site
/// is ready (which must happen); returns the site's URL and how long it took.
pub fn instantiate_site(fx: &Fixture) -> (String, Duration) {
    instantiate(fx, "site")
}

/// `autoscaler-manage template instantiate <dir>/<name>.template`, followed until the
/// site is ready (which must happen); returns the site's URL and how long it took.
pub fn instantiate(fx: &Fixture, name: &str) -> (String, Duration) {
    let start = Instant::now();
    let path = fx.template_path(name);
    let out = fx.manage(&[
        "template",
        "instantiate",
        path.to_str().expect("UTF-8 path"),
    ]);
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{name}: {}\n{}\n{}",
        stdout(&out),
        super::stderr(&out),
        fx.conductor_log()
    );
    let url = stdout(&out)
        .lines()
        .find_map(|l| l.strip_prefix("site ready: "))
        .unwrap_or_else(|| panic!("no URL in {}", stdout(&out)))
        .to_owned();
    (url, took)
}

/// The parsed JSON output of a CLI call.
pub fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\nstderr: {}",
            stdout(out),
            super::stderr(out)
        )
    })
}

/// Polls `check` every 100 ms until it gives a value or `patience` runs out (then fails
/// with the conductor's log).
pub fn wait_for<T>(
    what: &str,
    patience: Duration,
    fx: &Fixture,
    mut check: impl FnMut() -> Option<T>,
) -> (T, Duration) {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return (v, start.elapsed());
        }
        assert!(
            start.elapsed() < patience,
            "{what}: not within {patience:?}\n{}",
            fx.conductor_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ab's own verdict.
#[derive(Debug, Default)]
pub struct AbResult {
    pub complete: u64,
    pub failed: u64,
    pub non_2xx: u64,
    pub text: String,
}

impl AbResult {
    /// Prints ab's counts and asserts that it completed requests and none failed.
    pub fn assert_no_failures(&self, what: &str) {
        eprintln!(
            "ab {what}: {} complete, {} failed, {} non-2xx",
            self.complete, self.failed, self.non_2xx
        );
        assert!(
            self.complete > 0,
            "ab {what} completed nothing:\n{}",
            self.text
        );
        assert_eq!(
            (self.failed, self.non_2xx),
            (0, 0),
            "ab {what}:\n{}",
            self.text
        );
    }
}

/// `ab -n REQUESTS -c CONCURRENCY` against `url`.
pub fn ab(url: &str, requests: u32, concurrency: u32) -> Child {
    ab_with(url, &["-n", &requests.to_string()], concurrency)
}

/// `ab -t SECONDS -c CONCURRENCY` against `url` (`-n` after `-t`, so the time limit
/// alone ends it).
pub fn ab_for(url: &str, seconds: u32, concurrency: u32) -> Child {
    ab_with(
        url,
        &[
            "-t",
            &seconds.to_string(),
            "-n",
            &(seconds.max(1) * 50_000).to_string(),
        ],
        concurrency,
    )
}

fn ab_with(url: &str, limit: &[&str], concurrency: u32) -> Child {
    Command::new("ab")
        .arg("-q")
        .args(limit)
        .args(["-c", &concurrency.to_string(), "-s", "30", url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ab (apache2-utils) must be installed: tools/install-webtier")
}

pub fn ab_result(child: Child) -> AbResult {
    let out = child.wait_with_output().expect("wait for ab");
    let text = format!("{}{}", stdout(&out), super::stderr(&out));
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    AbResult {
        complete: field("Complete requests"),
        failed: field("Failed requests"),
        non_2xx: field("Non-2xx responses"),
        text,
    }
}

/// The process group of local VM `id`, from its record.
pub fn vm_pgid(fx: &Fixture, id: &str) -> i64 {
    let path = fx
        .dir
        .path()
        .join("state/local/vms")
        .join(id)
        .join("vm.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let record: serde_json::Value = serde_json::from_str(&text).expect("VM record");
    record["pgid"]
        .as_i64()
        .or(record["pid"].as_i64())
        .expect("the VM's process group")
}

/// A TCP proxy on a loopback port of its own, in front of `target`. [`Proxy::cut`]
/// closes every connection through it and refuses new ones until [`Proxy::restore`]: a
/// broker outage for whoever connects through it, and only for them.
pub struct Proxy {
    pub addr: SocketAddr,
    down: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy port");
        let addr = listener.local_addr().expect("proxy address");
        let down = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (d, o) = (down.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if d.load(Ordering::SeqCst) {
                    drop(client); // refused: accepted and closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let pipe = |from: &TcpStream, to: &TcpStream| -> io::Result<()> {
                    let (mut from, mut to) = (from.try_clone()?, to.try_clone()?);
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                    Ok(())
                };
                if pipe(&client, &server)
                    .and_then(|_| pipe(&server, &client))
                    .is_ok()
                {
                    let mut open = o.lock().unwrap();
                    open.push(client);
                    open.push(server);
                }
            }
        });
        Proxy { addr, down, open }
    }

    /// Closes every connection and refuses new ones.
    pub fn cut(&self) {
        self.down.store(true, Ordering::SeqCst);
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.down.store(false, Ordering::SeqCst);
    }
}
