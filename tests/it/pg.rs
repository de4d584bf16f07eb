//! The PostgreSQL store (issue 23), against a real server each test starts
//! ([`crate::pg_support`]): the schema against SQLite's, its migrations, connecting to the
//! host that answers, the audit log's protection, `store copy`, `audit verify` on the copy,
//! `check-config`, and `serve` refusing PostgreSQL for now.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meldkamer::cli::audit::{AuditArgs, AuditCommand, AuditError};
use meldkamer::config::Config;
use meldkamer::protocol::frame::Token;
use meldkamer::store::pg::copy::{self, CopyOptions, CopyReport};
use meldkamer::store::pg::{self as pgstore, DbUrl, PgError};
use meldkamer::verify::audit::{self, Break};

use crate::common::{T0, TestDaemon, plain, tcp_exchange, token_of, ts};
use crate::pg_support::{PgServer, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

fn url(pg: &PgServer) -> DbUrl {
    DbUrl::parse(&pg.url()).expect("url")
}

async fn client(pg: &PgServer) -> tokio_postgres::Client {
    pgstore::connect(&url(pg)).await.expect("connect")
}

/// A freshly migrated SQLite database in `dir`.
fn fresh_sqlite(dir: &Path) -> rusqlite::Connection {
    meldkamer::store::open_write(&dir.join("fresh.db"), Duration::from_secs(5)).expect("sqlite")
}

/// Index names that are not a constraint's (SQLite's `sqlite_autoindex_*` and PostgreSQL's
/// `*_pkey` / `*_key` are the constraints' own).
fn sqlite_indexes(conn: &rusqlite::Connection) -> Vec<String> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL ORDER BY name")
        .expect("indexes");
    stmt.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("names")
}

/// Table by table, the PostgreSQL schema has SQLite's tables, columns (names, in order) and
/// indexes, and a fresh database holds the same rows (the seeded meta keys and default
/// procedures). A SQLite migration without its PostgreSQL twin fails here.
#[tokio::test]
async fn pg_schema_matches_sqlite() {
    let pg = PgServer::start();
    let mut c = client(&pg).await;
    assert_eq!(pgstore::schema::migrate(&mut c).await.expect("migrate"), 0);
    let dir = tempfile::tempdir().expect("dir");
    let sq = fresh_sqlite(dir.path());

    let sqlite: BTreeMap<String, Vec<String>> = copy::sqlite_tables(&sq)
        .expect("tables")
        .into_iter()
        .map(|t| {
            let cols = copy::sqlite_columns(&sq, &t)
                .expect("columns")
                .into_iter()
                .map(|c| c.name)
                .collect();
            (t, cols)
        })
        .collect();
    let postgres: BTreeMap<String, Vec<String>> = copy::pg_tables(&c)
        .await
        .expect("pg tables")
        .into_iter()
        .map(|(t, cols)| (t, cols.into_iter().map(|c| c.0).collect()))
        .collect();
    assert_eq!(
        sqlite.keys().collect::<Vec<_>>(),
        postgres.keys().collect::<Vec<_>>(),
        "the same tables"
    );
    assert_eq!(sqlite.len(), 40);
    for (t, cols) in &sqlite {
        assert_eq!(Some(cols), postgres.get(t), "the columns of {t}, in order");
    }
    let pg_indexes: Vec<String> = c
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()
             AND indexname NOT IN (SELECT conname FROM pg_constraint) ORDER BY 1",
            &[],
        )
        .await
        .expect("indexes")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(sqlite_indexes(&sq), pg_indexes, "the same indexes");
    // Every primary key that SQLite numbers is an identity on PostgreSQL.
    for (t, cols) in copy::pg_tables(&c).await.expect("pg tables") {
        let sq_cols = copy::sqlite_columns(&sq, &t).expect("columns");
        let rowid_alias =
            sq_cols.iter().filter(|c| c.pk > 0).count() == 1 && sq_cols.iter().any(|c| c.pk == 1 && c.name == "id");
        let identity = cols.iter().any(|c| c.0 == "id" && c.2);
        assert_eq!(
            rowid_alias, identity,
            "{t}: id an identity exactly where SQLite numbers it"
        );
    }
    for t in sqlite.keys() {
        let a = copy::digest(&copy::sqlite_rows(&sq, t).expect("rows"));
        let b = copy::digest(&copy::pg_rows(&c, t).await.expect("rows"));
        assert_eq!(a, b, "{t}: the same rows in a fresh database");
    }
    assert_eq!(
        pgstore::schema::version(&c).await.expect("version"),
        meldkamer::store::schema::current_version()
    );
}

/// Migrating again does nothing; a database from a newer meldkamer is refused, and so is a
/// database that holds other tables and no schema version.
#[tokio::test]
async fn migrations_run_once_and_refuse_a_newer_or_foreign_database() {
    let pg = PgServer::start();
    let mut c = client(&pg).await;
    pgstore::schema::migrate(&mut c).await.expect("migrate");
    assert_eq!(pgstore::schema::migrate(&mut c).await.expect("again"), 19);
    assert_eq!(pg.psql("SELECT count(*) FROM schema_version"), "1");
    pg.psql("INSERT INTO schema_version (version) VALUES (20)");
    match pgstore::schema::migrate(&mut c).await {
        Err(PgError::TooNew {
            found: 20,
            supported: 19,
        }) => {}
        other => panic!("a newer schema must be refused: {other:?}"),
    }
    pg.createdb("other");
    let mut other = pgstore::connect(&DbUrl::parse(&pg.url_for("other")).expect("url"))
        .await
        .expect("connect");
    other
        .batch_execute("CREATE TABLE invoices (id BIGINT)")
        .await
        .expect("a foreign table");
    let e = pgstore::schema::migrate(&mut other)
        .await
        .expect_err("not an empty database");
    assert!(
        e.to_string().contains("1 table(s) but no meldkamer schema version"),
        "{e}"
    );
    // The failed step left nothing behind.
    assert_eq!(pgstore::schema::version(&other).await.expect("version"), 0);
}

/// A URL with two hosts, the first one down: the connection goes to the second, and says
/// which answered.
#[tokio::test]
async fn a_url_with_two_hosts_connects_to_the_one_that_answers() {
    let pg = PgServer::start();
    let down = free_port();
    let two = DbUrl::parse(&format!(
        "postgres://meldkamer:s3cret@127.0.0.1:{down},127.0.0.1:{}/meldkamer?target_session_attrs=read-write",
        pg.port()
    ))
    .expect("url");
    assert!(!format!("{two} {two:?}").contains("s3cret"));
    let c = pgstore::connect(&two).await.expect("the second host answers");
    assert_eq!(
        pgstore::server_address(&c).await.expect("address"),
        format!("127.0.0.1:{}", pg.port())
    );
    // Only the host that is down: refused, the URL starred in the error.
    let one = DbUrl::parse(&format!("postgres://meldkamer:s3cret@127.0.0.1:{down}/meldkamer")).expect("url");
    let e = pgstore::connect(&one).await.expect_err("nobody answers");
    let text = format!("{e} {e:?}");
    assert!(text.contains("meldkamer:***@127.0.0.1"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

/// The audit log refuses UPDATE, DELETE and TRUNCATE; the protection check sees a disabled
/// trigger, a changed function and an extra trigger.
#[tokio::test]
async fn the_audit_log_is_append_only_on_postgres() {
    let pg = PgServer::start();
    let mut c = client(&pg).await;
    pgstore::schema::migrate(&mut c).await.expect("migrate");
    c.execute(
        "INSERT INTO audit_log (at_ms, actor, action, subject, detail, result, prev_hash, row_hash)
         VALUES (1, 'a', 'b', 'c', '', 'ok', $1, $1)",
        &[&vec![0u8; 32]],
    )
    .await
    .expect("an insert is allowed");
    for sql in [
        "UPDATE audit_log SET result = 'x'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ] {
        let e = c.batch_execute(sql).await.expect_err(sql);
        assert!(pgstore::describe(&e).contains("audit_log is append-only"), "{sql}: {e}");
    }
    assert!(pgstore::audit::triggers_intact(&c).await.expect("check"));
    pg.psql("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_delete");
    assert!(!pgstore::audit::triggers_intact(&c).await.expect("check"), "disabled");
    pg.psql("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_delete");
    assert!(pgstore::audit::triggers_intact(&c).await.expect("check"));
    pg.psql(
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$",
    );
    assert!(
        !pgstore::audit::triggers_intact(&c).await.expect("check"),
        "a do-nothing function"
    );
    pg.psql(
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'audit_log is append-only';
         END
         $$",
    );
    assert!(pgstore::audit::triggers_intact(&c).await.expect("check"), "restored");
    pg.psql(
        "CREATE FUNCTION quiet() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER audit_log_quiet BEFORE INSERT ON audit_log FOR EACH ROW EXECUTE FUNCTION quiet()",
    );
    assert!(
        !pgstore::audit::triggers_intact(&c).await.expect("check"),
        "another trigger"
    );
}

// --- store copy and audit verify on the copy ---------------------------------------------------

/// Every table's count and digest, SQLite against PostgreSQL.
async fn assert_same_rows(db: &Path, c: &tokio_postgres::Client) -> u64 {
    let sq = rusqlite::Connection::open(db).expect("sqlite");
    let mut total = 0;
    for t in copy::sqlite_tables(&sq).expect("tables") {
        let a = copy::digest(&copy::sqlite_rows(&sq, &t).expect("rows"));
        let b = copy::digest(&copy::pg_rows(c, &t).await.expect("rows"));
        assert_eq!(a, b, "{t}: the same rows on both sides (count, digest)");
        total += a.0;
    }
    total
}

fn table<'a>(r: &'a CopyReport, t: &str) -> &'a copy::TableReport {
    r.tables.iter().find(|x| x.table == t).expect("table in the report")
}

/// Frames, events and alarms through the receiver, operators, audit rows through the writer.
async fn traffic(d: &TestDaemon, first_zone: u32, n: u32) {
    for z in first_zone..first_zone + n {
        let f = plain(
            Token::SiaDcs,
            (z % 9999) as u16,
            "1234",
            &format!("#1234|Nri1/BA{z}"),
            ts(T0),
        );
        let r = tcp_exchange(d.tcp(), &f).await.expect("an answer");
        assert_eq!(token_of(&r), "ACK");
    }
    let writer = d.running.as_ref().expect("running").shared.writer.clone();
    for i in 0..5 {
        let subject = format!("alarm:{first_zone}-{i}");
        writer
            .run(move |tx| {
                audit::append(
                    tx,
                    T0.unix_timestamp() * 1000 + i,
                    &audit::AuditRecord {
                        actor: "olga",
                        action: "alarm_note",
                        subject: &subject,
                        detail: "copied to PostgreSQL",
                        result: "ok",
                        failures: None,
                    },
                )
            })
            .await
            .expect("audited");
    }
}

/// `audit verify --db DB` (on a thread of its own: the command runs its own runtime).
async fn verify_on(cfg: &Config, db: &str) -> (Result<(), AuditError>, String) {
    let args = AuditArgs {
        config: None,
        db: Some(db.to_string()),
        command: AuditCommand::Verify {
            anchor: None,
            heads: None,
        },
    };
    let cfg = cfg.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let r = meldkamer::cli::audit::run(&cfg, &args, &mut out);
        (r, String::from_utf8(out).expect("utf8"))
    })
    .await
    .expect("join")
}

/// The copy, end to end: a database built by the daemon (demo customers, sites, accounts and
/// contacts; frames, events and alarms from a panel; operators; keyed audit rows), copied
/// while the daemon runs, then again after it stopped: every table the same on both sides,
/// ids and chain included. Again: nothing copied, and said. New traffic, copied again: only
/// the new rows. New rows on PostgreSQL get ids after the copied ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_copy_moves_everything_idempotently_and_then_only_what_is_new() {
    let pg = PgServer::start();
    let mut d = TestDaemon::start_with("", |c| c.store.load_demo_data = true).await;
    let db = d.db_path();
    traffic(&d, 1, 20).await;
    {
        let conn = rusqlite::Connection::open(&db).expect("db");
        let h = meldkamer::operator::Role::Operator;
        let hasher = crate::operator::hasher(&d);
        for name in ["olga", "otto"] {
            meldkamer::operator::accounts::add(&conn, &hasher, name, h, "correct horse battery", 0).expect("operator");
        }
    }
    let target = url(&pg);
    let opts = CopyOptions {
        batch_rows: 7,
        ..CopyOptions::default()
    };
    // While the daemon runs and a panel keeps sending: the copy reads one snapshot (every
    // event with its frame, every alarm with its site), while new rows commit beside it.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let panel = {
        let (stop, tcp) = (stop.clone(), d.tcp());
        tokio::spawn(async move {
            let mut sent = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let z = 1000 + sent;
                let f = plain(
                    Token::SiaDcs,
                    (z % 9999) as u16,
                    "1234",
                    &format!("#1234|Nri1/BA{z}"),
                    ts(T0),
                );
                assert_eq!(token_of(&tcp_exchange(tcp, &f).await.expect("an answer")), "ACK");
                sent += 1;
            }
            sent
        })
    };
    let mut out = Vec::new();
    let first = copy::copy(&db, &target, opts, &mut out)
        .await
        .expect("copy while running");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let during = panel.await.expect("panel");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.contains("(schema created)"), "{text}");
    assert!(table(&first, "events").inserted >= 20, "{text}");
    assert!(during > 0, "frames were sent during the copy");
    d.stop().await;

    let mut out = Vec::new();
    copy::copy(&db, &target, opts, &mut out)
        .await
        .expect("copy after the stop");
    let c = client(&pg).await;
    let rows = assert_same_rows(&db, &c).await;
    let count = |t: &str| -> i64 {
        rusqlite::Connection::open(&db)
            .expect("db")
            .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .expect("count")
    };
    for t in [
        "customers",
        "sites",
        "accounts",
        "contacts",
        "frames",
        "events",
        "alarms",
        "operators",
        "audit_log",
    ] {
        assert!(count(t) > 0, "the test database has {t}");
    }
    assert!(rows > 100, "{rows}");

    // Again, by the binary: nothing to copy, and it says so.
    let run = Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(format!("sqlite:{}", db.display()))
        .arg("--to")
        .arg(pg.url())
        .output()
        .expect("meldkamer store copy");
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{text}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        text.contains("nothing to copy: PostgreSQL already had every row"),
        "{text}"
    );
    assert!(
        text.contains("events: ") && text.contains("nothing new"),
        "a line per table: {text}"
    );

    // New traffic: only the new rows are copied.
    let (frames, events, audit_rows) = (count("frames"), count("events"), count("audit_log"));
    d.restart().await;
    traffic(&d, 100, 3).await;
    d.stop().await;
    let mut out = Vec::new();
    let again = copy::copy(&db, &target, opts, &mut out)
        .await
        .expect("copy the new rows");
    assert_eq!(table(&again, "frames").inserted as i64, count("frames") - frames);
    assert_eq!(table(&again, "events").inserted as i64, count("events") - events);
    assert_eq!(
        table(&again, "audit_log").inserted as i64,
        count("audit_log") - audit_rows
    );
    assert_eq!(table(&again, "events").inserted, 3);
    assert_eq!(
        table(&again, "customers").inserted + table(&again, "customers").updated,
        0
    );
    assert_same_rows(&db, &c).await;

    // The identity sequences are past the copied ids, and past SQLite's AUTOINCREMENT counter
    // where rows were deleted from the end (the outbox never hands out an id twice).
    {
        let sq = rusqlite::Connection::open(&db).expect("db");
        sq.execute_batch(
            "INSERT INTO outbox (id, event_id, created_ms, json) SELECT 500, max(id), 0, '{}' FROM events;
             DELETE FROM outbox WHERE id = 500;",
        )
        .expect("an outbox row made and pruned");
    }
    copy::copy(&db, &target, opts, &mut Vec::new())
        .await
        .expect("copy again");
    let next_outbox: i64 = c
        .query_one(
            "INSERT INTO outbox (event_id, created_ms, json) SELECT max(id), 0, '{}' FROM events RETURNING id",
            &[],
        )
        .await
        .expect("an outbox row")
        .get(0);
    assert_eq!(next_outbox, 501, "after SQLite's AUTOINCREMENT counter");
    let max_event: i64 = c
        .query_one("SELECT max(id) FROM events", &[])
        .await
        .expect("max")
        .get(0);
    let next: i64 = c
        .query_one(
            "INSERT INTO events (frame_id, received_ms, account, seq, code_format, code, qualifier, description)
             SELECT id, 0, '1234', 1, 'sia', 'BA', 'new', 'x' FROM frames LIMIT 1 RETURNING id",
            &[],
        )
        .await
        .expect("a new event")
        .get(0);
    assert_eq!(next, max_event + 1);

    // The audit chain verifies on PostgreSQL, with the same key file, through the same walk.
    let cfg = d.cfg.clone();
    let (r, text) = verify_on(&cfg, &pg.url()).await;
    assert!(r.is_ok(), "{text} {r:?}");
    assert!(
        text.contains(&format!("audit log intact: {} rows (all keyed)", count("audit_log"))),
        "{text}"
    );
    // Changed behind the triggers' back (as superuser): verify names the row.
    pg.psql(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update;
         UPDATE audit_log SET detail = 'nothing to see' WHERE id = 3;
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update;",
    );
    let (r, text) = verify_on(&cfg, &pg.url()).await;
    assert!(matches!(r, Err(AuditError::Broken(Break::Content { id: 3 }))), "{r:?}");
    assert!(text.contains("audit log BROKEN at row #3"), "{text}");
    // SQLite's own chain is untouched and still verifies.
    let (r, text) = verify_on(&cfg, &format!("sqlite:{}", db.display())).await;
    assert!(r.is_ok(), "{text}");
}

/// A source at another schema level than the target is refused, and nothing is copied.
#[tokio::test]
async fn store_copy_refuses_another_schema_level() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let conn = fresh_sqlite(dir.path());
    conn.execute_batch("PRAGMA user_version = 18").expect("an older file");
    drop(conn);
    let e = copy::copy(
        &dir.path().join("fresh.db"),
        &url(&pg),
        CopyOptions::default(),
        &mut Vec::new(),
    )
    .await
    .expect_err("another level");
    let text = e.to_string();
    assert!(
        text.contains("SQLite database is at schema version 18, PostgreSQL at 19"),
        "{text}"
    );
    let c = client(&pg).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0);
}

// --- check-config and serve ---------------------------------------------------------------------

fn pg_config(dir: &Path, url: &str) -> PathBuf {
    let p = dir.join("meldkamer.toml");
    std::fs::write(
        &p,
        format!(
            "[store]\nbackend = \"postgres\"\nurl = {url:?}\npath = {:?}\n\n[receiver]\ntcp_listen = \"127.0.0.1:0\"\nudp_listen = \"127.0.0.1:0\"\n\n[metrics]\nlisten = \"\"\n",
            dir.join("m.db").display().to_string()
        ),
    )
    .expect("config");
    p
}

fn check_config(file: &Path) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(file)
        .output()
        .expect("check-config");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// check-config with a PostgreSQL store: which host answered, a rolled-back write, the schema
/// version, what `synchronous_commit` means for the ACK, the standby; the password starred.
#[test]
fn check_config_checks_a_postgres_store() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().expect("dir");
    let down = free_port();
    let url = format!(
        "postgres://meldkamer:s3cret@127.0.0.1:{down},127.0.0.1:{}/meldkamer?target_session_attrs=read-write",
        pg.port()
    );
    let (ok, text) = check_config(&pg_config(dir.path(), &url));
    assert!(ok, "{text}");
    assert!(!text.contains("s3cret"), "{text}");
    assert!(
        text.contains("PostgreSQL at postgres://meldkamer:***@127.0.0.1"),
        "{text}"
    );
    assert!(
        text.contains(&format!("ok   database reachable: 127.0.0.1:{} answered", pg.port())),
        "{text}"
    );
    assert!(text.contains("ok   database writable: a table created"), "{text}");
    assert!(text.contains("ok   database schema: empty"), "{text}");
    assert!(text.contains("ok   database synchronous_commit: on:"), "{text}");
    assert!(text.contains("WARN database standby: no synchronous standby"), "{text}");
    assert_eq!(
        pg.psql("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'meldkamer_check%'"),
        "0",
        "rolled back"
    );

    // Migrated, synchronous_commit off: the schema is this program's, the ACK warning is said.
    pg.psql("ALTER DATABASE meldkamer SET synchronous_commit = off");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut c = client(&pg).await;
        pgstore::schema::migrate(&mut c).await.expect("migrate");
    });
    let (ok, text) = check_config(&pg_config(dir.path(), &pg.url()));
    assert!(ok, "warnings do not fail the check: {text}");
    assert!(text.contains("ok   database writable: a row written"), "{text}");
    assert!(
        text.contains("ok   database schema: version 19, this program's"),
        "{text}"
    );
    assert!(
        text.contains("WARN database synchronous_commit: off: a commit returns before"),
        "{text}"
    );
    assert_eq!(
        pg.psql("SELECT count(*) FROM meta WHERE key = 'check_config_probe'"),
        "0",
        "rolled back"
    );

    // A synchronous standby named but none streaming: every commit would wait, and so would
    // every ACK. Said (the check's own write is rolled back, so it does not wait).
    pg.psql("ALTER SYSTEM SET synchronous_standby_names = 'standby1'");
    pg.psql("SELECT pg_reload_conf()");
    let (ok, text) = check_config(&pg_config(dir.path(), &pg.url()));
    assert!(ok, "{text}");
    assert!(
        text.contains("WARN database standby: synchronous_standby_names = 'standby1', but no synchronous standby is seen streaming"),
        "{text}"
    );

    // Nobody answers: FAIL, exit status 1.
    let (ok, text) = check_config(&pg_config(
        dir.path(),
        &format!("postgres://meldkamer:s3cret@127.0.0.1:{down}/meldkamer"),
    ));
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL database reachable: no host of postgres://meldkamer:***@"),
        "{text}"
    );
    assert!(!text.contains("s3cret"), "{text}");
}

/// `serve` with backend postgres refuses to start, says why, exits non-zero; a bad URL is
/// refused by the configuration check without showing its password.
#[test]
fn serve_refuses_postgres_until_it_is_built() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = pg_config(dir.path(), "postgres://meldkamer:s3cret@127.0.0.1:1/meldkamer");
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .output()
        .expect("serve");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("serving from PostgreSQL is not built yet (issue 23)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("only `meldkamer check-config`, `meldkamer store copy` and `meldkamer audit verify` work"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "no ready line");
    assert!(!dir.path().join("m.db").exists(), "no SQLite file made instead");

    // The library's entry point refuses too (it must not fall back to the SQLite file).
    let config = Config::load(&cfg).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let clock = std::sync::Arc::new(meldkamer::clock::ManualClock::new(T0));
    match rt.block_on(meldkamer::daemon::start(config, clock)) {
        Err(meldkamer::daemon::DaemonError::PostgresNotBuilt) => {}
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("the daemon started with a PostgreSQL configuration"),
    }
    assert!(!dir.path().join("m.db").exists(), "no SQLite file made instead");

    let bad = pg_config(dir.path(), "postgres://meldkamer:s3cret@127.0.0.1:notaport/meldkamer");
    let (ok, text) = check_config(&bad);
    assert!(!ok, "{text}");
    assert!(text.contains("store.url"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}
