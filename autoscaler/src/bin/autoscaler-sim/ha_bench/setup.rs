//! What `ha-bench` sets up and takes down: a MariaDB database of its own with the
//! sites' templates, the in-memory cloud with every site's VMs, and the conductors, each
//! on a thread and tokio runtime of its own named after its host (so its CPU time can be
//! told apart), running the real service loop (`conductor::service::run_with_driver`).

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::{anyhow, Context, Result};
use autoscaler::{
    conductor::{api::TemplateRecord, service::run_with_driver, vm_spec::vm_spec},
    conf::{load_from_str, Config},
    driver::{CloudDriver, MemoryDriver},
    messaging::Role,
    store::{DatabaseUrl, PoolSettings, Store},
    template::Template,
};
use chrono::Utc;
use tokio::sync::{oneshot, watch};

/// The bench's database on the server `server` (`mysql://user@host:port`).
pub struct Database {
    pub name: String,
    pub server: String,
    pub store: Store,
}

impl Database {
    /// Creates the database, its schema and `sites` templates of `webs` web VMs each.
    pub async fn create(server: &str, name: &str, sites: usize, webs: u32) -> Result<Database> {
        let admin = connect(&format!("{server}/mysql")).await?;
        sqlx::query(&format!("CREATE DATABASE `{name}`"))
            .execute(admin.pool())
            .await
            .context("CREATE DATABASE")?;
        admin.close().await;
        let store = connect(&format!("{server}/{name}")).await?;
        store.sync().await.context("db sync")?;
        for i in 0..sites {
            store.insert_template(&record(&site_name(i), webs)?).await?;
        }
        Ok(Database {
            name: name.to_owned(),
            server: server.to_owned(),
            store,
        })
    }

    /// The `[database] connection` of the conductors.
    pub fn connection(&self) -> String {
        format!(
            "{}/{}?charset=utf8",
            self.server.replacen("mysql://", "mysql+pymysql://", 1),
            self.name
        )
    }

    /// How many groups each host holds an unexpired lease of, by the database's clock.
    pub async fn owners(&self) -> Result<Vec<(String, i64)>> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT owner, COUNT(*) FROM group_leases WHERE owner IS NOT NULL \
             AND expires_at > UNIX_TIMESTAMP(NOW(6)) * 1000 GROUP BY owner ORDER BY owner",
        )
        .fetch_all(self.store.pool())
        .await
        .context("reading the leases")?;
        Ok(rows)
    }

    pub async fn drop_it(self) -> Result<()> {
        self.store.close().await;
        let admin = connect(&format!("{}/mysql", self.server)).await?;
        sqlx::query(&format!("DROP DATABASE `{}`", self.name))
            .execute(admin.pool())
            .await
            .context("DROP DATABASE")?;
        admin.close().await;
        Ok(())
    }
}

async fn connect(url: &str) -> Result<Store> {
    let url: DatabaseUrl = url.parse().with_context(|| format!("database URL {url}"))?;
    Ok(Store::connect(&url, &PoolSettings::default()).await?)
}

pub fn site_name(i: usize) -> String {
    format!("site{i:04}")
}

fn template(name: &str, webs: u32) -> Result<Template> {
    let text = format!(
        "name = {name}\nimage = tomcat-web\nmin_vms = {webs}\nmax_vms = {webs}\n\
         target_response_time = 0.2\n"
    );
    Template::parse("ha-bench.template", &text, webs.max(20))
        .map_err(|e| anyhow!("the bench's template: {e}"))
}

fn record(name: &str, webs: u32) -> Result<TemplateRecord> {
    Ok(TemplateRecord {
        template: template(name, webs)?,
        source: "ha-bench.template".into(),
        instantiated_at: Utc::now(),
        destroying: false,
    })
}

/// The cloud with each site's splitter and web VMs, made as a conductor would boot
/// them (`vm_spec`: names, metadata, user data with the group's AJP secret from the
/// database), so the conductors adopt them.
pub async fn cloud(
    config: &Config,
    store: &Store,
    sites: usize,
    webs: u32,
) -> Result<Arc<MemoryDriver>> {
    let cloud = Arc::new(MemoryDriver::new());
    let key = autoscaler::store::conductor_key(&config.default.state_path)?;
    let messages = config.agent.message_secrets(&config.default.state_path)?;
    for i in 0..sites {
        let template = template(&site_name(i), webs)?;
        let secret = store.ajp_secret(template.name(), &key).await?;
        let spec = |role| vm_spec(config, &template, role, &secret, &messages);
        cloud.boot(spec(Role::Splitter)).await?;
        for _ in 0..webs {
            cloud.boot(spec(Role::Web)).await?;
        }
    }
    Ok(cloud)
}

/// A conductor's configuration: the bench's broker, exchange and database, a state
/// directory of its own, the message key file both share; notifications dropped (nobody consumes them here). The simulated
/// agents log in as the conductors do (`[agent] allow_service_credentials`).
pub fn config(
    host: &str,
    broker: &str,
    exchange: &str,
    database: &str,
    state: &Path,
    message_key: &Path,
) -> Result<Config> {
    // The in-memory cloud boots no VM: no user data carries a login, and the bench's
    // simulated agents publish with the bench's own; the service's login is allowed
    // for the agents (issue 17's check would otherwise refuse to start).
    let text = format!(
        "[DEFAULT]\nhost = {host}\ntransport_url = {broker}\ncontrol_exchange = {exchange}\n\
         state_path = {}\n[database]\nconnection = {database}\n\
         [oslo_messaging_notifications]\ndriver = noop\n\
         [agent]\nallow_service_credentials = true\nmessage_key_file = {}\n",
        state.display(),
        message_key.display()
    );
    let loaded = load_from_str("ha-bench.conf", &text).map_err(|e| anyhow!("{e}"))?;
    Ok(loaded.config)
}

/// A conductor running on its own thread.
pub struct Running {
    pub host: String,
    shutdown: watch::Sender<bool>,
    kill: Option<oneshot::Sender<()>>,
    thread: std::thread::JoinHandle<Result<()>>,
}

impl Running {
    /// Starts the real service loop on a thread and runtime named `host` (one worker,
    /// so the conductor can use one core at most).
    pub fn start(config: Config, driver: Arc<dyn CloudDriver>) -> Result<Running> {
        let host = config.default.host.clone();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (kill, killed) = oneshot::channel::<()>();
        let name = host.clone();
        let thread = std::thread::Builder::new()
            .name(host.clone())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name(name)
                    .thread_keep_alive(Duration::from_secs(3600))
                    .enable_all()
                    .build()
                    .context("cannot start a conductor's runtime")?;
                let result = runtime.block_on(async {
                    tokio::select! {
                        result = run_with_driver(&config, driver, shutdown_rx) => result.map_err(anyhow::Error::from),
                        _ = killed => Ok(()),
                    }
                });
                // Killed: its tasks are dropped where they stand, its leases not released.
                runtime.shutdown_background();
                result
            })
            .context("cannot start a conductor's thread")?;
        Ok(Running {
            host,
            shutdown,
            kill: Some(kill),
            thread,
        })
    }

    /// Stops it as kill -9 would: the loop is dropped mid-flight, nothing is released.
    pub fn kill(mut self) -> Result<()> {
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        self.join()
    }

    /// Stops it as SIGTERM does: it releases its leases and closes its connection.
    pub fn stop(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.join()
    }

    fn join(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow!("conductor {} panicked", self.host))?
    }
}
