//! Small errors of the command line and the shipped configuration (issue "The operator's
//! shift", item 16), each tested the way a user or a script meets it: the binary run with
//! pipes, the configuration file read as shipped.

use std::path::PathBuf;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_meldkamer");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
