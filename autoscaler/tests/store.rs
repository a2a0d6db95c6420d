//! The store's test suite (`autoscaler::store`), run twice: on SQLite (a file in a
//! temporary directory) and on the real MariaDB at 127.0.0.1:3306 as root without a
//! password (`AUTOSCALER_TEST_DATABASE_URL=mysql://user:pass@host:port` names another
//! server). Each test has a database of its own, created here and dropped at the end,
//! also when the test fails.
//!
//! `tools/test` installs and starts MariaDB when nothing answers on 3306.

use std::{
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use autoscaler::{
    conductor::{api::TemplateRecord, state::TemplateStore},
    store::{AjpSecret, DatabaseUrl, ImportOutcome, Lease, PoolSettings, Store, StoreError},
    template::Template,
};
use chrono::{TimeZone, Utc};

const DEFAULT_SERVER: &str = "mysql://root@127.0.0.1:3306";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    MySql,
}

/// A database of the test's own: a temporary SQLite file, or a MySQL database with a
/// unique name that is dropped when this is.
struct TestDb {
    url: DatabaseUrl,
    /// The URL as a configuration file writes it (with the password, if any).
    url_text: String,
    store: Store,
    _dir: tempfile::TempDir,
    /// (server URL, database name) to drop.
    drop: Option<(String, String)>,
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((server, name)) = self.drop.take() else {
            return;
        };
        // Drop cannot await: a thread with a runtime of its own, joined.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = admin(&server).await;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute(admin.pool())
                    .await
                    .map(|_| ())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database: {dropped:?}");
        }
    }
}

fn server() -> String {
    std::env::var("AUTOSCALER_TEST_DATABASE_URL")
        .unwrap_or_else(|_| DEFAULT_SERVER.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A connection to the server's `mysql` database, which always exists.
async fn admin(server: &str) -> Store {
    let url: DatabaseUrl = format!("{server}/mysql").parse().unwrap();
    Store::connect(&url, &PoolSettings::default())
        .await
        .unwrap_or_else(|e| {
            panic!("{e}: the store tests need MariaDB at {server} (tools/test starts one; AUTOSCALER_TEST_DATABASE_URL names another)")
        })
}

/// A fresh, empty database.
async fn fresh(backend: Backend) -> TestDb {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let dir = tempfile::tempdir().unwrap();
    let (url_text, drop) = match backend {
        Backend::Sqlite => (
            format!("sqlite:///{}/db/autoscaler.sqlite", dir.path().display()),
            None,
        ),
        Backend::MySql => {
            let server = server();
            let name = format!(
                "autoscaler_test_{}_{}_{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed),
                uuid::Uuid::new_v4().simple()
            );
            let admin = admin(&server).await;
            sqlx::query(&format!("CREATE DATABASE `{name}`"))
                .execute(admin.pool())
                .await
                .unwrap();
            admin.close().await;
            (
                format!("{server}/{name}?charset=utf8"),
                Some((server, name)),
            )
        }
    };
    let url: DatabaseUrl = url_text.parse().unwrap();
    let store = Store::connect(&url, &PoolSettings::default())
        .await
        .unwrap();
    TestDb {
        url,
        url_text,
        store,
        _dir: dir,
        drop,
    }
}

/// A database with the schema.
async fn synced(backend: Backend) -> TestDb {
    let db = fresh(backend).await;
    db.store.sync().await.unwrap();
    db
}

/// A second conductor's connection to the same database.
async fn other(db: &TestDb) -> Store {
    Store::connect(&db.url, &PoolSettings::default())
        .await
        .unwrap()
}

fn record(name: &str) -> TemplateRecord {
    let text = format!(
        "name = {name}\nimage = img\nmin_vms = 1\nmax_vms = 3\ntarget_response_time = 0.25\n"
    );
    TemplateRecord {
        template: Template::parse("t.template", &text, 20).unwrap(),
        source: format!("/etc/autoscaler/{name}.template"),
        instantiated_at: Utc.timestamp_millis_opt(1_780_000_000_123).unwrap(),
        destroying: false,
    }
}

const TTL: Duration = Duration::from_secs(30);

/// One `#[tokio::test]` per backend for each case.
macro_rules! on_both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::Sqlite).await }
            )*
        }
        mod mysql {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { super::$case(super::Backend::MySql).await }
            )*
        }
    };
}

on_both!(
    migrations_apply_to_an_empty_database,
    a_changed_or_newer_schema_is_refused,
    templates_are_unique_by_exact_name,
    a_template_is_removed_with_its_group_state_by_its_owner,
    removals_and_pool_generations_are_kept,
    a_groups_ajp_secret_is_made_once_and_shared,
    a_lease_is_taken_only_when_free_expired_or_own,
    an_expired_lease_moves_and_fences_the_stale_owner,
    two_conductors_acquiring_at_once_get_one_lease_each_group,
    a_stale_writer_racing_a_takeover_never_lands_after_it,
    renew_owned_renews_all_and_reports_losses,
    services_are_up_or_down_by_the_database_clock,
    templates_json_is_imported_once,
    lease_calls_cost_few_statements,
    the_cli_syncs_reports_the_version_and_lists_conductors,
);

async fn migrations_apply_to_an_empty_database(backend: Backend) {
    let db = fresh(backend).await;
    let store = &db.store;
    let version = store.version().await.unwrap();
    assert_eq!((version.current, version.latest), (0, 2));
    let error = store.check_schema().await.unwrap_err();
    assert!(matches!(error, StoreError::NoSchema), "{error}");
    assert!(
        error.to_string().contains("autoscaler-manage db sync"),
        "{error}"
    );
    // Looking did not create anything.
    assert_eq!(store.version().await.unwrap().current, 0);
    let synced = store.sync().await.unwrap();
    assert_eq!((synced.current, synced.latest), (2, 2));
    assert_eq!(store.check_schema().await.unwrap(), synced);
    // Again: nothing to do.
    assert_eq!(store.sync().await.unwrap(), synced);
    store.insert_template(&record("shop")).await.unwrap();
}

async fn a_changed_or_newer_schema_is_refused(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    sqlx::query("UPDATE _sqlx_migrations SET checksum = ? WHERE version = 1")
        .bind(vec![0u8; 48])
        .execute(store.pool())
        .await
        .unwrap();
    let error = store.check_schema().await.unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaMismatch { version: 1 }),
        "{error}"
    );
    let error = store.sync().await.unwrap_err();
    assert!(
        matches!(error, StoreError::SchemaMismatch { version: 1 }),
        "{error}"
    );

    let db = synced(backend).await;
    let store = &db.store;
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (3, 'from the future', TRUE, ?, 0)",
    )
    .bind(vec![0u8; 48])
    .execute(store.pool())
    .await
    .unwrap();
    let error = store.check_schema().await.unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SchemaAhead {
                current: 3,
                known: 2
            }
        ),
        "{error}"
    );
    assert!(matches!(
        store.sync().await.unwrap_err(),
        StoreError::SchemaAhead { .. }
    ));
}

async fn templates_are_unique_by_exact_name(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    store.insert_template(&record("shop")).await.unwrap();
    let error = store.insert_template(&record("shop")).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Duplicate(n) if n == "shop"),
        "{error}"
    );
    // Names compare byte for byte on both databases (not MySQL's default collation).
    store.insert_template(&record("Shop")).await.unwrap();
    store.insert_template(&record("blog")).await.unwrap();
    assert_eq!(store.template("shop").await.unwrap(), Some(record("shop")));
    assert_eq!(store.template("SHOP").await.unwrap(), None);
    let names: Vec<String> = store
        .templates()
        .await
        .unwrap()
        .iter()
        .map(|r| r.template.name().to_owned())
        .collect();
    assert_eq!(names, ["Shop", "blog", "shop"]);
    assert!(store.set_destroying("blog").await.unwrap());
    assert!(store.set_destroying("blog").await.unwrap(), "idempotent");
    assert!(!store.set_destroying("nothing").await.unwrap());
    assert!(store.template("blog").await.unwrap().unwrap().destroying);
    assert_eq!(
        store.template_names().await.unwrap(),
        [
            ("Shop".to_owned(), false),
            ("blog".to_owned(), true),
            ("shop".to_owned(), false)
        ]
    );
    let mut long = record("long");
    long.source = "x".repeat(5000);
    assert!(matches!(
        store.insert_template(&long).await.unwrap_err(),
        StoreError::TooLong { max: 4096, .. }
    ));
}

async fn a_template_is_removed_with_its_group_state_by_its_owner(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    store.insert_template(&record("shop")).await.unwrap();
    let lease = store.acquire("shop", "c1", TTL).await.unwrap();
    store.request_removal("shop", "shop-web-1").await.unwrap();
    store.set_pool_generation(&lease, 7).await.unwrap();
    let removed = store.remove_template(&lease).await.unwrap();
    assert_eq!(removed, Some(record("shop")));
    assert_eq!(store.template("shop").await.unwrap(), None);
    assert!(store.removals("shop").await.unwrap().is_empty());
    assert_eq!(store.pool_generation("shop").await.unwrap(), None);
    assert_eq!(store.remove_template(&lease).await.unwrap(), None);
    // The lease row stays: a later tenure gets a newer generation, never 1 again.
    store.release(&lease).await.unwrap();
    assert_eq!(
        store.acquire("shop", "c2", TTL).await.unwrap().generation,
        2
    );
}

async fn removals_and_pool_generations_are_kept(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    let lease = store.acquire("shop", "c1", TTL).await.unwrap();
    assert!(store.request_removal("shop", "w2").await.unwrap());
    assert!(store.request_removal("shop", "w1").await.unwrap());
    assert!(
        !store.request_removal("shop", "w1").await.unwrap(),
        "asked twice"
    );
    let since = Utc.timestamp_millis_opt(1_780_000_001_000).unwrap();
    assert!(store.record_drain(&lease, "w1", 42, since).await.unwrap());
    assert!(!store.record_drain(&lease, "w9", 42, since).await.unwrap());
    let removals = store.removals("shop").await.unwrap();
    let summary: Vec<_> = removals.iter().map(|r| (r.vm.as_str(), r.drain)).collect();
    assert_eq!(summary, [("w1", Some((42, since))), ("w2", None)]);
    let db_now = store.now().await.unwrap();
    let age = db_now - removals[0].requested_at;
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60),
        "requested_at comes from the database's clock: {age}"
    );
    assert!(store.finish_removal(&lease, "w1").await.unwrap());
    assert!(!store.finish_removal(&lease, "w1").await.unwrap());
    assert_eq!(store.removals("shop").await.unwrap().len(), 1);

    assert_eq!(store.pool_generation("shop").await.unwrap(), None);
    let ms = 1_780_000_000_000u64; // generations are wall-clock milliseconds
    assert!(store.set_pool_generation(&lease, ms + 5).await.unwrap());
    assert!(
        !store.set_pool_generation(&lease, ms + 3).await.unwrap(),
        "older"
    );
    assert!(
        !store.set_pool_generation(&lease, ms + 5).await.unwrap(),
        "same"
    );
    assert!(store.set_pool_generation(&lease, ms + 7).await.unwrap());
    assert_eq!(store.pool_generation("shop").await.unwrap(), Some(ms + 7));
}

/// Issue 17, item 5: every conductor boots a group's VMs with the same AJP secret, made
/// once; another group's is another.
async fn a_groups_ajp_secret_is_made_once_and_shared(backend: Backend) {
    let db = synced(backend).await;
    let second = other(&db).await;
    // Two conductors with two keys: the first row wins, both read it.
    let (key, other_key) = (
        b"a conductor's key, 32 bytes long",
        b"another conductor's key, 32 byte",
    );
    let (a, b) = tokio::join!(
        db.store.ajp_secret("shop", key),
        second.ajp_secret("shop", other_key)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a, b);
    assert_eq!(db.store.ajp_secret("shop", other_key).await.unwrap(), a);
    assert_ne!(second.ajp_secret("blog", key).await.unwrap(), a);
    // A database that lost the row makes the same one again from the same key.
    let made_by = [
        AjpSecret::derive(key, "shop"),
        AjpSecret::derive(other_key, "shop"),
    ];
    assert!(made_by.contains(&a));
    assert_eq!(a.expose().len(), 64);
    // A row that is not a secret is refused, not sent to a VM.
    sqlx::query("UPDATE group_secrets SET ajp_secret = 'x\" a' WHERE group_name = 'shop'")
        .execute(db.store.pool())
        .await
        .unwrap();
    let error = db.store.ajp_secret("shop", key).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    assert!(!error.to_string().contains("x\""), "{error}");
}

async fn a_lease_is_taken_only_when_free_expired_or_own(backend: Backend) {
    let db = synced(backend).await;
    let (c1, c2) = (&db.store, &other(&db).await);
    let first = c1.acquire("shop", "c1", TTL).await.unwrap();
    assert_eq!(
        first,
        Lease {
            group: "shop".into(),
            owner: "c1".into(),
            generation: 1
        }
    );
    match c2.acquire("shop", "c2", TTL).await.unwrap_err() {
        StoreError::Held {
            owner, expires_in, ..
        } => {
            assert_eq!(owner, "c1");
            assert!(expires_in > TTL - Duration::from_secs(10), "{expires_in:?}");
        }
        other => panic!("{other}"),
    }
    // Its own lease, again (a restarted conductor): a new tenure that fences the old one.
    let again = c1.acquire("shop", "c1", TTL).await.unwrap();
    assert_eq!(again.generation, 2);
    assert!(matches!(
        c1.set_pool_generation(&first, 1).await.unwrap_err(),
        StoreError::Fenced { generation: 1, .. }
    ));
    c1.renew(&again, TTL).await.unwrap();
    c1.release(&again).await.unwrap();
    assert!(matches!(
        c1.release(&again).await.unwrap_err(),
        StoreError::Fenced { .. }
    ));
    let taken = c2.acquire("shop", "c2", TTL).await.unwrap();
    assert_eq!((taken.owner.as_str(), taken.generation), ("c2", 3));
    let record = c1.lease("shop").await.unwrap().unwrap();
    assert_eq!(
        (record.owner.as_deref(), record.generation),
        (Some("c2"), 3)
    );
}

async fn an_expired_lease_moves_and_fences_the_stale_owner(backend: Backend) {
    let db = synced(backend).await;
    let (c1, c2) = (&db.store, &other(&db).await);
    c1.insert_template(&record("shop")).await.unwrap();
    c1.request_removal("shop", "w1").await.unwrap();
    let ttl = Duration::from_millis(400);
    let stale = c1.acquire("shop", "c1", ttl).await.unwrap();
    let start = Instant::now();
    c1.set_pool_generation(&stale, 10).await.unwrap();
    // c2 tries until the lease has expired by the database's clock.
    let deadline = start + Duration::from_secs(10);
    let fresh = loop {
        match c2.acquire("shop", "c2", TTL).await {
            Ok(lease) => break lease,
            Err(StoreError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(
        start.elapsed() >= ttl - Duration::from_millis(50),
        "taken over after {:?}, before the {ttl:?} lease expired",
        start.elapsed()
    );
    assert_eq!(fresh.generation, stale.generation + 1);
    // Every write of the stale owner is refused and changes nothing.
    let since = Utc::now();
    fn fenced<T>(r: Result<T, StoreError>) -> bool {
        matches!(r, Err(StoreError::Fenced { .. }))
    }
    assert!(fenced(c1.set_pool_generation(&stale, 20).await));
    assert!(fenced(c1.record_drain(&stale, "w1", 20, since).await));
    assert!(fenced(c1.finish_removal(&stale, "w1").await));
    assert!(fenced(c1.remove_template(&stale).await));
    assert!(fenced(c1.renew(&stale, TTL).await));
    assert!(fenced(c1.release(&stale).await));
    assert_eq!(c2.pool_generation("shop").await.unwrap(), Some(10));
    assert_eq!(c2.removals("shop").await.unwrap()[0].drain, None);
    assert!(c2.template("shop").await.unwrap().is_some());
    // The new owner writes.
    assert!(c2.set_pool_generation(&fresh, 20).await.unwrap());
    assert!(c2.finish_removal(&fresh, "w1").await.unwrap());
    // The stale owner cannot take it back while the new lease runs.
    assert!(matches!(
        c1.acquire("shop", "c1", TTL).await.unwrap_err(),
        StoreError::Held { .. }
    ));
}

async fn two_conductors_acquiring_at_once_get_one_lease_each_group(backend: Backend) {
    let db = synced(backend).await;
    let groups: Vec<String> = (0..20).map(|i| format!("site-{i}")).collect();
    let c2 = other(&db).await;
    // Half of the groups have a released row already (a takeover, not a first lease).
    for group in &groups[..10] {
        let lease = db.store.acquire(group, "c0", TTL).await.unwrap();
        db.store.release(&lease).await.unwrap();
    }
    let race = |store: Store, host: &'static str, groups: Vec<String>| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            for group in groups {
                match store.acquire(&group, host, TTL).await {
                    Ok(lease) => won.push(lease),
                    Err(StoreError::Held { .. }) => {}
                    Err(e) => panic!("{host}: {e}"),
                }
            }
            won
        })
    };
    let (a, b) = tokio::join!(
        race(db.store.clone(), "c1", groups.clone()),
        race(c2.clone(), "c2", groups.clone())
    );
    let mut won: Vec<Lease> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    won.sort_by(|x, y| x.group.cmp(&y.group));
    let names: Vec<&str> = won.iter().map(|l| l.group.as_str()).collect();
    let mut expected: Vec<&str> = groups.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(names, expected, "every group won exactly once");
    for lease in &won {
        let previous = u64::from(groups[..10].contains(&lease.group));
        assert_eq!(lease.generation, previous + 1, "{lease:?}");
        let row = db.store.lease(&lease.group).await.unwrap().unwrap();
        assert_eq!(row.owner.as_deref(), Some(lease.owner.as_str()));
    }
}

async fn a_stale_writer_racing_a_takeover_never_lands_after_it(backend: Backend) {
    let db = synced(backend).await;
    let c2 = other(&db).await;
    let ttl = Duration::from_millis(300);
    let stale = db.store.acquire("shop", "c1", ttl).await.unwrap();
    // c1 keeps writing growing generations, unaware that its lease runs out.
    let writer = {
        let (store, stale) = (db.store.clone(), stale.clone());
        tokio::spawn(async move {
            let (mut landed, mut fenced) = (0u64, 0u32);
            for generation in 1..u64::MAX {
                match store.set_pool_generation(&stale, generation).await {
                    Ok(_) => landed = generation,
                    Err(StoreError::Fenced { .. }) => fenced += 1,
                    Err(e) => panic!("{e}"),
                }
                if fenced == 20 {
                    return landed;
                }
            }
            unreachable!()
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        match c2.acquire("shop", "c2", TTL).await {
            Ok(lease) => break lease,
            Err(StoreError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    // What the database holds at the takeover is the stale owner's last word.
    let at_takeover = c2.pool_generation("shop").await.unwrap();
    let last_landed = writer.await.unwrap();
    assert!(last_landed > 0, "the writer wrote before the takeover");
    assert_eq!(
        at_takeover,
        Some(last_landed),
        "a write landed after the takeover"
    );
    assert!(c2.set_pool_generation(&fresh, u64::MAX >> 2).await.unwrap());
}

async fn renew_owned_renews_all_and_reports_losses(backend: Backend) {
    let db = synced(backend).await;
    let (c1, c2) = (&db.store, &other(&db).await);
    let short = Duration::from_millis(300);
    c1.acquire("a", "c1", short).await.unwrap();
    c1.acquire("b", "c1", short).await.unwrap();
    c2.acquire("c", "c2", TTL).await.unwrap();
    let held = c1.renew_owned("c1", TTL).await.unwrap();
    let names: Vec<&str> = held.iter().map(|l| l.group.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    // Renewed: still held past the short lease.
    tokio::time::sleep(short + Duration::from_millis(100)).await;
    assert!(matches!(
        c2.acquire("a", "c2", TTL).await.unwrap_err(),
        StoreError::Held { .. }
    ));
    // b lapses and is taken; the next renewal reports only a.
    let b = held.iter().find(|l| l.group == "b").unwrap();
    c1.renew(b, Duration::ZERO).await.unwrap();
    c2.acquire("b", "c2", TTL).await.unwrap();
    let held = c1.renew_owned("c1", TTL).await.unwrap();
    assert_eq!(
        held.iter().map(|l| l.group.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
}

async fn services_are_up_or_down_by_the_database_clock(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    store.report_service("c1").await.unwrap();
    store.report_service("c2").await.unwrap();
    store.report_service("c1").await.unwrap();
    store.acquire("shop", "c1", TTL).await.unwrap();
    store.acquire("blog", "c1", TTL).await.unwrap();
    let released = store.acquire("gone", "c2", TTL).await.unwrap();
    store.release(&released).await.unwrap();
    let conductors = store.conductors(Duration::from_secs(60)).await.unwrap();
    let view: Vec<_> = conductors
        .iter()
        .map(|c| (c.service.host.as_str(), c.service.up, c.groups.clone()))
        .collect();
    assert_eq!(
        view,
        [
            ("c1", true, vec!["blog".to_owned(), "shop".to_owned()]),
            ("c2", true, vec![])
        ]
    );
    assert!(conductors[0].service.last_seen >= conductors[0].service.created_at);
    tokio::time::sleep(Duration::from_millis(150)).await;
    store.report_service("c2").await.unwrap();
    let services = store.services(Duration::from_millis(100)).await.unwrap();
    let up: Vec<_> = services.iter().map(|s| (s.host.as_str(), s.up)).collect();
    assert_eq!(up, [("c1", false), ("c2", true)]);
    assert!(services[0].age >= Duration::from_millis(150));
    assert!(store.delete_service("c1").await.unwrap());
    assert!(!store.delete_service("c1").await.unwrap());
}

async fn templates_json_is_imported_once(backend: Backend) {
    let db = synced(backend).await;
    let store = &db.store;
    let state = tempfile::tempdir().unwrap();
    assert_eq!(
        store.import_state(state.path()).await.unwrap(),
        ImportOutcome::NoFile
    );
    // The conductor's own writer makes the file, as an older conductor left it.
    let mut file = TemplateStore::open(state.path()).unwrap();
    file.insert(record("shop")).unwrap();
    let mut blog = record("blog");
    blog.destroying = true;
    file.insert(blog.clone()).unwrap();
    // The database already knows shop (newer): it is kept as it is.
    let mut newer = record("shop");
    newer.source = "/elsewhere/shop.template".into();
    store.insert_template(&newer).await.unwrap();
    assert_eq!(
        store.import_state(state.path()).await.unwrap(),
        ImportOutcome::Imported {
            added: 1,
            skipped: 1
        }
    );
    assert_eq!(store.template("blog").await.unwrap(), Some(blog));
    assert_eq!(store.template("shop").await.unwrap(), Some(newer));
    match store.import_state(state.path()).await.unwrap() {
        ImportOutcome::AlreadyDone { items, .. } => assert_eq!(items, 1),
        other => panic!("imported twice: {other:?}"),
    }
    // A corrupt file is refused, naming it, and nothing is recorded.
    let db = synced(backend).await;
    let bad = tempfile::tempdir().unwrap();
    std::fs::write(bad.path().join("templates.json"), "{oops").unwrap();
    let error = db.store.import_state(bad.path()).await.unwrap_err();
    assert!(error.to_string().contains("templates.json"), "{error}");
    std::fs::remove_file(bad.path().join("templates.json")).unwrap();
    assert_eq!(
        db.store.import_state(bad.path()).await.unwrap(),
        ImportOutcome::NoFile
    );
}

/// Statements a lease call costs, counted by the server (MySQL's per-session
/// `Questions`, on a pool of one connection; SQLite has no such counter), and the mean
/// time of each call, printed for `-- --nocapture`. The counts are the design's
/// (lease.rs's module doc); a regression that adds a round trip fails here.
async fn lease_calls_cost_few_statements(backend: Backend) {
    let db = synced(backend).await;
    let one = Store::connect(
        &db.url,
        &PoolSettings {
            max_pool_size: 1,
            ..PoolSettings::default()
        },
    )
    .await
    .unwrap();
    let questions = || async {
        if backend == Backend::Sqlite {
            return 0u64;
        }
        let text: String = sqlx::query_scalar(
            "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
             WHERE VARIABLE_NAME = 'QUESTIONS'",
        )
        .fetch_one(one.pool())
        .await
        .unwrap();
        // The query that reads the counter counts itself.
        text.parse::<u64>().unwrap() + 1
    };
    const ROUNDS: u32 = 50;
    let mut report = Vec::new();
    macro_rules! measure {
        ($name:expr, $expected:expr, $i:ident => $call:expr) => {{
            let before = questions().await;
            let start = Instant::now();
            for $i in 0..ROUNDS {
                $call;
            }
            let mean = start.elapsed() / ROUNDS;
            let after = questions().await;
            let per_call = after.saturating_sub(before + 1) as f64 / f64::from(ROUNDS);
            if backend == Backend::MySql {
                assert!(per_call <= $expected, "{}: {per_call} statements", $name);
            }
            let counted = match backend {
                Backend::MySql => format!("{per_call:>4.1} statements"),
                Backend::Sqlite => "   - statements".to_owned(),
            };
            report.push(format!("{:<40} {counted}  {mean:>9.1?}", $name));
        }};
    }
    measure!("acquire (first time)", 2.0, i => {
        one.acquire(&format!("g{i}"), "c1", TTL).await.unwrap();
    });
    measure!("acquire (own, existing row)", 1.0, i => {
        one.acquire(&format!("g{i}"), "c1", TTL).await.unwrap();
    });
    measure!("acquire (held by another)", 3.0, i => {
        one.acquire(&format!("g{i}"), "c2", TTL).await.unwrap_err();
    });
    let leases = one.renew_owned("c1", TTL).await.unwrap();
    measure!("renew", 1.0, i => one.renew(&leases[i as usize], TTL).await.unwrap());
    measure!("renew_owned (50 groups)", 2.0, _i => {
        assert_eq!(one.renew_owned("c1", TTL).await.unwrap().len(), 50);
    });
    measure!("fenced write, first (pool generation)", 6.0, i => {
        one.set_pool_generation(&leases[i as usize], 5).await.unwrap();
    });
    measure!("fenced write, update (pool generation)", 4.0, i => {
        one.set_pool_generation(&leases[i as usize], 6).await.unwrap();
    });
    println!("{backend:?}:\n  {}", report.join("\n  "));
}

/// `autoscaler-manage` with a configuration naming `db`'s database and `state`.
fn manage(db: &TestDb, state: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let conf = state.join("autoscaler.conf");
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nstate_path = {}\n[database]\nconnection = {}\n",
            state.display(),
            db.url_text
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoscaler-manage"))
        .arg("--config-file")
        .arg(&conf)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn the_cli_syncs_reports_the_version_and_lists_conductors(backend: Backend) {
    let db = fresh(backend).await;
    let state = tempfile::tempdir().unwrap();
    let mut file = TemplateStore::open(state.path()).unwrap();
    file.insert(record("shop")).unwrap();
    assert_eq!(manage(&db, state.path(), &["db", "version"]).1, "0\n");
    let (ok, _, err) = manage(&db, state.path(), &["conductor", "list"]);
    assert!(!ok);
    assert!(
        err.starts_with("ERROR: ") && err.contains("run `autoscaler-manage db sync`"),
        "{err}"
    );
    let (ok, out, err) = manage(&db, state.path(), &["db", "sync"]);
    assert!(ok, "{err}");
    assert!(out.contains("schema version  2"), "{out}");
    assert!(out.contains("1 template(s) added"), "{out}");
    assert_eq!(manage(&db, state.path(), &["db", "version"]).1, "2\n");
    let (ok, out, _) = manage(&db, state.path(), &["--format", "json", "db", "sync"]);
    assert!(ok);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["import"]["outcome"], "already_done", "{out}");
    assert_eq!(
        db.store.template("shop").await.unwrap(),
        Some(record("shop"))
    );

    db.store.report_service("conductor-a").await.unwrap();
    db.store.report_service("conductor-b").await.unwrap();
    db.store.acquire("shop", "conductor-a", TTL).await.unwrap();
    let (ok, out, err) = manage(&db, state.path(), &["conductor", "list"]);
    assert!(ok, "{err}");
    let lines: Vec<Vec<&str>> = out
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(
        (lines[0][0], lines[0][1], *lines[0].last().unwrap()),
        ("conductor-a", "up", "shop")
    );
    assert_eq!(
        (lines[1][0], lines[1][1], *lines[1].last().unwrap()),
        ("conductor-b", "up", "-")
    );
}
