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
