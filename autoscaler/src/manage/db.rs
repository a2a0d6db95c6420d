//! The commands that work on the database directly, as nova-manage's do, without the
//! conductor: `db sync`, `db version`, `conductor list`.

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;

use super::output::{print, Format, Table};
use crate::{
    conf::Config,
    store::{ImportOutcome, SchemaVersion, Store},
};

#[derive(Debug, Subcommand)]
pub enum DbAction {
    /// Create or upgrade the database schema to this version's, then import
    /// <state_path>/templates.json once (from a conductor that kept its state there).
    Sync,
    /// Print the database schema's version (0: no schema yet).
    Version,
}

#[derive(Serialize)]
struct SyncAnswer {
    #[serde(flatten)]
    version: SchemaVersion,
    import: ImportOutcome,
}

/// Runs a `db` command.
pub fn run(config: &Config, action: DbAction, format: Format) -> anyhow::Result<()> {
    block_on(async {
        let store = connect(config).await?;
        match action {
            DbAction::Sync => {
                let version = store.sync().await?;
                let import = store.import_state(&config.default.state_path).await?;
                let answer = SyncAnswer { version, import };
                print(format, &answer, || sync_table(config, &answer));
            }
            DbAction::Version => {
                let version = store.version().await?;
                match format {
                    Format::Json => print(format, &version, || unreachable!()),
                    // Just the number, as `nova-manage db version` prints it, for scripts.
                    Format::Table => println!("{}", version.current),
                }
            }
        }
        store.close().await;
        Ok(())
    })
}

/// `conductor list`: one line per conductor from the service records.
pub fn conductor_list(config: &Config, format: Format) -> anyhow::Result<()> {
    block_on(async {
        let store = connect(config).await?;
        store.check_schema().await?;
        let conductors = store.conductors(config.default.service_down_time).await?;
        store.close().await;
        print(format, &conductors, || Table {
            header: vec!["host", "state", "last seen", "templates"],
            rows: conductors
                .iter()
                .map(|c| {
                    vec![
                        c.service.host.clone(),
                        if c.service.up { "up" } else { "down" }.to_owned(),
                        format!(
                            "{} ({:.0} s ago)",
                            c.service.last_seen.format("%Y-%m-%d %H:%M:%S UTC"),
                            c.service.age.as_secs_f64()
                        ),
                        if c.groups.is_empty() {
                            "-".to_owned()
                        } else {
                            c.groups.join(", ")
                        },
                    ]
                })
                .collect(),
        });
        Ok(())
    })
}

async fn connect(config: &Config) -> anyhow::Result<Store> {
    let url = config.database_url();
    Store::connect(&url, &config.database.pool_settings())
        .await
        .context("[database] connection")
}

fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

fn sync_table(config: &Config, answer: &SyncAnswer) -> Table {
    let import = match &answer.import {
        ImportOutcome::NoFile => "nothing to import".to_owned(),
        ImportOutcome::Imported { added, skipped } => format!(
            "{} imported: {added} template(s) added, {skipped} already in the database",
            config.default.state_path.join("templates.json").display()
        ),
        ImportOutcome::AlreadyDone { at, items } => format!(
            "templates.json was imported on {} ({items} template(s))",
            at.format("%Y-%m-%d %H:%M:%S UTC")
        ),
    };
    Table {
        header: vec!["property", "value"],
        rows: vec![
            vec!["database".into(), config.database_url().to_string()],
            vec!["schema version".into(), answer.version.current.to_string()],
            vec!["import".into(), import],
        ],
    }
}
