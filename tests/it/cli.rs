//! Small errors of the command line and the shipped configuration (issue "The operator's
//! shift", item 16), each tested the way a user or a script meets it: the binary run with
//! pipes, the configuration file read as shipped.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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
