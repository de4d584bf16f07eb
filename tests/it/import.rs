//! `meldkamer import` (issue "The operator's shift", items 15 and 16): every problem of a run
//! in one report, nothing written when there is one; and what an import does to a running
//! daemon's supervision.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use meldkamer::clock::{ManualClock, unix_ms};
use meldkamer::config::Config;
use meldkamer::correlate::supervision::Supervisor;
use meldkamer::correlate::{CorrelateConfig, Correlator};
use meldkamer::daemon;
use meldkamer::protocol::frame::Token;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("meldkamer.toml");
    let text = format!(
        "[store]\npath = {:?}\nload_demo_data = false\n",
        dir.join("meldkamer.db").display().to_string()
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn import(config: &Path, files: &[&Path]) -> std::process::Output {
    Command::new(BIN)
        .arg("import")
        .arg("--config")
        .arg(config)
        .args(files)
        .output()
        .expect("meldkamer import runs")
}

fn count(db: &Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).expect("db");
    conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .expect("count")
}

/// Before: the first problem stopped the run, so fixing a file of customer records took one
/// run per mistake. Now every problem of every file, sorted, counted, and nothing written.
#[test]
fn import_reports_every_problem_of_every_file_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let base = dir.path().join("base.toml");
    std::fs::write(
        &base,
        "[[customer]]\nref = \"C1\"\nname = \"Synthetic BV\"\n\n\
         [[site]]\nref = \"S1\"\ncustomer = \"C1\"\naddress = \"Teststraat 1\"\n",
    )
    .expect("write");
    let out = import(&cfg, &[&base]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let toml = dir.path().join("more.toml");
    std::fs::write(
        &toml,
        "[[account]]\naccount = \"1234\"\nsite = \"S1\"\nats_category = \"SP9\"\n\n\
         [[contact]]\nref = \"K1\"\ncustomer = \"C9\"\nname = \"K. Tester\"\n",
    )
    .expect("write");
    let zones = dir.path().join("zones.csv");
    std::fs::write(
        &zones,
        "site,number,description,type\nS1,3,Back door,entry/exit\nS1,003,Front door,entry/exit\nS1,12345,Hall,smoke\n",
    )
    .expect("write");
    let out = import(&cfg, &[&zones, &toml]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (t, z) = (toml.display(), zones.display());
    let want = format!(
        "error: nothing was imported:\n\
         {t}:1: account 1234: ats_category: \"SP9\" is not SP1…SP6 or DP1…DP4\n\
         {t}:6: contact K1: customer: no customer with ref \"C9\" (in this import or the database)\n\
         {z}:3: zone 3 of site S1: number: listed twice (first at {z}:2)\n\
         {z}:4: zone 12345 of site S1: number: a zone number is digits only, 0 to 9999 (leading zeros are ignored: 003 is 3)\n\
         {z}:4: zone 12345 of site S1: type: \"smoke\" is not a zone type (entry/exit, instant, interior, burglary, 24h, fire, hold-up, panic, medical, environmental, tamper, technical, key switch, other)\n\
         5 problems\n"
    );
    assert_eq!(stderr, want);
    assert!(out.stdout.is_empty());
    let db = dir.path().join("meldkamer.db");
    assert_eq!(
        (count(&db, "accounts"), count(&db, "zones"), count(&db, "contacts")),
        (0, 0, 0)
    );

    // Files with problems do not create a database that did not exist.
    let fresh = tempfile::tempdir().expect("tempdir");
    let out = import(&config(fresh.path()), &[&zones]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!fresh.path().join("meldkamer.db").exists());
}

// ---------------------------------------------------------------------------------------------
// An import and supervision.

/// A customer whose transmitter reports every 90 s at most (SP5).
const SUPERVISED: &str = r#"
[[customer]]
ref = "C1"
name = "Synthetic BV"

[[site]]
ref = "S1"
customer = "C1"
address = "Teststraat 1"

[[account]]
account = "1234"
site = "S1"
ats_category = "SP5"
"#;

/// The records, imported as of T0: a silent account is supervised from its creation.
fn import_at_t0(cfg: &Config) {
    let r = meldkamer::records::parse_toml(SUPERVISED, "test").expect("records");
    let mut conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
    let seal = meldkamer::store::sealed::key_from_config(cfg, &conn, false).expect("keys file");
    meldkamer::records::apply_at(&mut conn, &r, unix_ms(T0), &seal).expect("import");
}

/// A daemon whose supervisor the test drives, tick by tick, on the manual clock.
async fn supervised_daemon() -> (TestDaemon, Supervisor) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TestDaemon::config(dir.path());
    import_at_t0(&cfg);
    let clock = Arc::new(ManualClock::new(T0));
    let hook = Box::new(Correlator::new(CorrelateConfig { supervisor_priority: 4 }));
    let mut running = daemon::start_with_hook(cfg.clone(), clock.clone(), hook, false)
        .await
        .expect("daemon starts");
    let supervisor = running.supervisor.take().expect("the test drives the supervisor");
    let d = TestDaemon {
        dir,
        running: Some(running),
        clock,
        cfg,
    };
    (d, supervisor)
}

fn generation(d: &TestDaemon) -> i64 {
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    meldkamer::store::accounts::generation(&conn).expect("generation")
}

/// Communication-lost alarms open, "deadline missed" and "repeated" lines in the alarm log.
fn lost_alarms(d: &TestDaemon) -> (i64, i64, i64) {
    (
        d.query_i64("SELECT count(*) FROM alarms WHERE category = 'communication' AND state <> 'closed'"),
        d.query_i64("SELECT count(*) FROM alarm_log WHERE action = 'deadline_missed'"),
        d.query_i64("SELECT count(*) FROM alarm_log WHERE action = 'repeated'"),
    )
}

fn at(secs: i64) -> i64 {
    unix_ms(T0) + secs * 1000
}

/// Before: an import bumps the accounts generation, the supervisor reloads its deadlines from
/// scratch and forgets which silences it already alarmed, so every account whose alarm was
/// open was "lost" again: a second warning in the log, a second "deadline missed" and a
/// "repeated" line on the open alarm, its last event time moved; an alarm an operator had
/// closed came back as a new one. Now a reload keeps what it knew.
#[tokio::test]
async fn an_import_does_not_raise_an_open_communication_lost_alarm_again() {
    let (d, mut sup) = supervised_daemon().await;
    assert!(sup.tick(at(89), generation(&d)).await.is_empty());
    assert_eq!(sup.tick(at(91), generation(&d)).await.len(), 1, "90 s of silence");
    assert_eq!(lost_alarms(&d), (1, 1, 0));

    let before = generation(&d);
    import_at_t0(&d.cfg);
    assert_ne!(
        generation(&d),
        before,
        "an import bumps the generation: the supervisor reloads"
    );
    assert!(
        sup.tick(at(92), generation(&d)).await.is_empty(),
        "the same silence, raised again"
    );
    assert!(sup.tick(at(300), generation(&d)).await.is_empty());
    assert_eq!(lost_alarms(&d), (1, 1, 0));

    // Closed by an operator while the panel is still silent: an import does not open another.
    let conn = rusqlite::Connection::open(d.db_path()).expect("db");
    conn.execute("UPDATE alarms SET state = 'closed', closed_ms = ?1", [at(310)])
        .expect("close");
    import_at_t0(&d.cfg);
    assert!(sup.tick(at(320), generation(&d)).await.is_empty());
    assert_eq!(lost_alarms(&d), (0, 1, 0));

    // Traffic re-arms the deadline, and a new silence is a new alarm, import or not.
    d.clock.set(T0 + time::Duration::seconds(400));
    let poll = plain(Token::Null, 1, "1234", "", None);
    assert_eq!(
        tcp_exchange(d.tcp(), &poll).await.as_deref().map(token_of).as_deref(),
        Some("ACK")
    );
    assert!(sup.tick(at(401), generation(&d)).await.is_empty());
    import_at_t0(&d.cfg);
    assert!(
        sup.tick(at(480), generation(&d)).await.is_empty(),
        "heard from 80 s ago"
    );
    assert_eq!(
        sup.tick(at(491), generation(&d)).await.len(),
        1,
        "silent again for 90 s"
    );
    assert_eq!(lost_alarms(&d), (1, 2, 0));
    let mut d = d;
    d.stop().await;
}

/// Schedules from CSV (issue "Schedules", item 1): the four files of `fixtures/records/README.md`
/// import beside a TOML file of sites; a second run with a bad row in each file names each row
/// (file and line) and writes nothing, so the first import stands.
#[test]
fn schedules_import_from_csv_with_row_level_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let base = dir.path().join("base.toml");
    std::fs::write(
        &base,
        "[[customer]]\nref = \"C1\"\nname = \"Synthetic BV\"\n\n\
         [[site]]\nref = \"S-1001\"\ncustomer = \"C1\"\naddress = \"Teststraat 1\"\n",
    )
    .expect("write");
    let write = |name: &str, text: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let schedules = write(
        "schedules.csv",
        "site,time_zone,holidays,late_to_open\nS-1001,Europe/Amsterdam,NL,yes\n",
    );
    let windows = write(
        "schedule_windows.csv",
        "site,days,open,close,grace\nS-1001,mon-fri,08:00,18:00,15\nS-1001,sat,22:00,02:00,15\n",
    );
    let holidays = write("holidays.csv", "calendar,date,name\nNL,2026-04-27,King's Day\n");
    let exceptions = write(
        "schedule_exceptions.csv",
        "site,from,to,hours,grace,reason\nS-1001,2026-07-20,2026-08-07,,,Summer closure\n\
         S-1001,2026-12-24,,08:00-14:00,15,Christmas Eve\n",
    );
    let out = import(&cfg, &[&base, &schedules, &windows, &holidays, &exceptions]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let db = dir.path().join("meldkamer.db");
    let conn = rusqlite::Connection::open(&db).expect("db");
    let s: (String, String, bool, bool) = conn
        .query_row(
            "SELECT time_zone, holidays, late_to_open, early_close FROM schedules",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .expect("schedule");
    assert_eq!(s, ("Europe/Amsterdam".into(), "NL".into(), true, false));
    let w: Vec<(i64, i64, i64, i64)> = conn
        .prepare("SELECT days, open_min, close_min, grace_min FROM schedule_windows ORDER BY open_min")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(w, [(0b1_1111, 480, 1080, 15), (0b10_0000, 1320, 120, 15)]);
    let e: Vec<(String, String, String)> = conn
        .prepare("SELECT from_date, to_date, hours FROM schedule_exceptions ORDER BY from_date")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        e,
        [
            ("2026-07-20".into(), "2026-08-07".into(), String::new()),
            ("2026-12-24".into(), "2026-12-24".into(), "08:00-14:00".into())
        ]
    );
    assert_eq!(count(&db, "holidays"), 1);

    let schedules = write(
        "schedules.csv",
        "site,time_zone,holidays,late_to_open\nS-1001,Europe/Amsterdam,NL,yes\nS-1001,Mars/Olympus,,\n",
    );
    let windows = write(
        "schedule_windows.csv",
        "site,days,open,close,grace\nS-1001,mon-fri,08:00,18:00,15\nS-1001,sat,9:00,13:00,300\n",
    );
    let holidays = write("holidays.csv", "calendar,date,name\nNL,27-04-2026,King's Day\n");
    let exceptions = write(
        "schedule_exceptions.csv",
        "site,from,to,hours,grace,reason\nS-9999,2026-07-20,2026-08-07,,,Summer closure\n",
    );
    let out = import(&cfg, &[&schedules, &windows, &holidays, &exceptions]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for (file, line, what) in [
        (&schedules, 3, "schedule of site S-1001: "),
        (&schedules, 3, "time_zone: \"Mars/Olympus\" is not a time zone"),
        (&windows, 3, "open: \"9:00\" is not a time of day"),
        (&windows, 3, "grace: minutes, 0 to 240"),
        (&holidays, 2, "date: \"27-04-2026\" is not a date"),
        (&exceptions, 2, "S-9999"),
    ] {
        let prefix = format!("{}:{line}: ", file.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(what)),
            "{prefix}… {what}:\n{stderr}"
        );
    }
    assert_eq!(
        (
            count(&db, "schedules"),
            count(&db, "schedule_windows"),
            count(&db, "holidays"),
            count(&db, "schedule_exceptions")
        ),
        (1, 2, 1, 2),
        "nothing of the second run written"
    );
}
