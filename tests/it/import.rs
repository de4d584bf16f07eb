//! `meldkamer import` (issue "The operator's shift", items 15 and 16): every problem of a run
//! in one report, nothing written when there is one; and what an import does to a running
//! daemon's supervision.

use std::path::{Path, PathBuf};
use std::process::Command;

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
