//! Small errors of the command line and the shipped configuration (issue "The operator's
//! shift", item 16), each tested the way a user or a script meets it: the binary run with
//! pipes, the configuration file read as shipped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(dir: &Path) -> PathBuf {
    let path = dir.join("meldkamer.toml");
    let text = format!(
        "[receiver]\ntcp_listen = \"127.0.0.1:0\"\nudp_listen = \"127.0.0.1:0\"\n\n\
         [store]\npath = {:?}\n\n[metrics]\nlisten = \"\"\n\n[log]\nlevel = \"info\"\n",
        dir.join("meldkamer.db").display().to_string()
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// Before: two sends within one second took the same default sequence number (the clock in
/// seconds), so the receiver took the second for a retransmission of the first (ACKed, no
/// event), while the help said repeated sends are new events.
#[test]
fn sends_one_after_another_get_new_sequence_numbers() {
    let seqs: Vec<u64> = (0..3)
        .map(|_| {
            let out = Command::new(BIN)
                .args(["send", "--dry-run", "--account", "1234", "--sia", "BA,01"])
                .output()
                .expect("meldkamer send runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
            v["frame"]["seq"].as_u64().expect("seq")
        })
        .collect();
    assert!(
        seqs[0] != seqs[1] && seqs[1] != seqs[2] && seqs[0] != seqs[2],
        "{seqs:?}"
    );
    let help = Command::new(BIN).args(["send", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("tenths of a second"), "{help}");
    assert!(help.contains("retransmission"), "{help}");
}

/// Before: log lines written to a file or a pipe carried colour codes (`\x1b[2m…`), which
/// journald and log files show as garbage.
#[test]
fn logs_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meldkamer serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let log = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let ready = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let log = log.join().expect("stderr read");
    assert!(
        ready.is_ok_and(|l| l.starts_with("meldkamer ready ")),
        "no ready line; log:\n{log}"
    );
    assert!(log.contains("INFO"), "some log lines: {log}");
    assert!(!log.contains("\x1b["), "colour codes in a piped log:\n{log:?}");
}

/// Before: without a terminal, `operator add` failed with "reading the password: No such
/// device or address", or waited on a terminal the script did not watch.
#[test]
fn operator_add_without_a_terminal_says_to_use_password_stdin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let out = Command::new(BIN)
        .args(["operator", "add", "olga", "--role", "operator", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .output()
        .expect("meldkamer operator add runs");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a terminal") && stderr.contains("--password-stdin"),
        "{stderr}"
    );
    assert!(!dir.path().join("meldkamer.db").exists(), "nothing was written");
    // With --password-stdin it works without a terminal.
    let mut child = Command::new(BIN)
        .args([
            "operator",
            "add",
            "olga",
            "--role",
            "operator",
            "--password-stdin",
            "--config",
        ])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"a synthetic password for tests\n").expect("password");
    }
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `import --help` says how problems are reported and where the format is documented.
#[test]
fn import_help_names_the_report_and_the_format() {
    let out = Command::new(BIN).args(["import", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("FILE:LINE: ENTRY: FIELD: PROBLEM"), "{help}");
    assert!(help.contains("zones.csv"), "{help}");
    assert!(help.contains("fixtures/records/README.md"), "{help}");
    assert!(root().join("fixtures/records/README.md").exists());
}

/// Every file the shipped configuration's comments name exists (it named
/// `fixtures/demo/accounts.toml`, which never did).
#[test]
fn the_shipped_configuration_names_only_files_that_exist() {
    let text = std::fs::read_to_string(root().join("config/meldkamer.toml")).expect("config");
    let mut named = Vec::new();
    for line in text.lines().filter(|l| l.trim_start().starts_with('#')) {
        for word in line.split(|c: char| c.is_whitespace() || "(),`\"';".contains(c)) {
            let word = word.trim_end_matches(['.', ':']);
            let in_repo = ["fixtures/", "protocols/", "src/", "config/", "tests/", "docs/"]
                .iter()
                .any(|d| word.starts_with(d));
            let doc = word.ends_with(".md") && !word.contains('/');
            if in_repo || doc {
                named.push(word.to_string());
            }
        }
    }
    assert!(
        named.iter().any(|w| w == "fixtures/demo/records.toml"),
        "the demo data is named: {named:?}"
    );
    for w in &named {
        assert!(
            root().join(w).exists(),
            "config/meldkamer.toml names {w}, which does not exist"
        );
    }
}

/// `meldkamer service` (issue "Schedules", item 4): a site on test from the command line,
/// listed, refused without a target that exists, ended; every change audited as `cli:USER`.
#[test]
fn service_puts_a_site_on_test_lists_and_ends_it_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let records = root().join("fixtures/records/scenarios.toml");
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env("USER", "installer-desk")
            .output()
            .expect("meldkamer runs")
    };
    let out = run(&["service", "list"]);
    assert_eq!(out.status.code(), Some(1), "no database yet");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("import the records first"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("meldkamer.db").exists(), "not created by a list");
    let out = run(&["import", records.to_str().expect("path")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&[
        "service",
        "test",
        "--site",
        "S-1001",
        "--for",
        "2h",
        "--reason",
        "installer replaces the back door detector",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.starts_with("site S-1001: on test until "), "{said}");
    let out = run(&[
        "service",
        "out-of-service",
        "--account",
        "9999",
        "--for",
        "7d",
        "--reason",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no such site or account"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&[
        "service", "test", "--site", "S-1001", "--for", "2 weeks", "--reason", "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "a duration that does not read");
    let out = run(&[
        "service",
        "test",
        "--site",
        "S-1001",
        "--for",
        "106751991167d",
        "--reason",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "a duration past the end of time");
    let out = run(&[
        "service",
        "out-of-service",
        "--account",
        "2345",
        "--until",
        "2099-01-01T00:00:00Z",
        "--reason",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1), "further than 366 days");
    let out = run(&[
        "service",
        "out-of-service",
        "--account",
        "2345",
        "--for",
        "30d",
        "--reason",
        "shop refitted",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["service", "list"]);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains("site S-1001: on test until ") && listed.contains("by cli:installer-desk"),
        "{listed}"
    );
    assert!(
        listed.contains("account 2345: out of service until ") && listed.contains("shop refitted"),
        "{listed}"
    );
    let out = run(&["service", "end", "--site", "S-1001"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["service", "end", "--site", "S-1001"]);
    assert_eq!(out.status.code(), Some(1), "nothing left to end");
    let conn = rusqlite::Connection::open(dir.path().join("meldkamer.db")).expect("db");
    let audit: Vec<(String, String, String, String)> = conn
        .prepare("SELECT actor, action, subject, result FROM audit_log WHERE action LIKE 'service%' ORDER BY id")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let results: Vec<&str> = audit.iter().map(|a| a.3.as_str()).collect();
    assert_eq!(audit.len(), 6, "{audit:?}");
    assert!(audit.iter().all(|a| a.0 == "cli:installer-desk"), "{audit:?}");
    assert!(results[0].starts_with("ok: on test until "), "{results:?}");
    assert_eq!(audit[1].2, "account 9999 (unknown)");
    assert_eq!(results[1], "refused: no such site or account");
    assert!(
        results[2].starts_with("refused: out of service ends after now and within 366 days"),
        "{results:?}"
    );
    assert_eq!((audit[3].1.as_str(), audit[3].2.as_str()), ("service", "account 2345"));
    assert!(results[3].starts_with("ok: out of service until "), "{results:?}");
    assert_eq!((audit[4].1.as_str(), results[4]), ("service_end", "ok: period ended"));
    assert_eq!(
        results[5],
        "refused: the site or account is neither on test nor out of service"
    );
    let summary: String = conn
        .query_row("SELECT title FROM alarms WHERE category = 'test'", [], |r| r.get(0))
        .expect("the test's summary");
    assert_eq!(summary, "Test of site S-1001 ended: nothing came in");
}
