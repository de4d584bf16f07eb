//! The audit log as an attacker sees it: fields that try to forge lines, fields too long to store.

use std::time::Duration;

use meldkamer::cli::audit::{AuditArgs, AuditCommand};
use meldkamer::config::Config;
use meldkamer::verify::audit;
use rusqlite::Connection;

use crate::common::TestDaemon;

fn fresh() -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = TestDaemon::config(dir.path());
    drop(meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db"));
    (dir, cfg)
}

fn cli(cfg: &Config, command: AuditCommand) -> (Result<(), meldkamer::cli::audit::AuditError>, String) {
    let args = AuditArgs { config: None, command };
    let mut out = Vec::new();
    let r = meldkamer::cli::audit::run(cfg, &args, &mut out);
    (r, String::from_utf8(out).expect("utf8"))
}

fn list(cfg: &Config) -> String {
    let (r, text) = cli(cfg, AuditCommand::List { last: 100 });
    assert!(r.is_ok(), "{text}");
    text
}

/// A contact reference typed with a newline and terminal escapes (through `code reset`, which
/// records the refusal with the reference as given) cannot forge a line of `audit list`: it is
/// stored escaped, and shown as one line.
#[test]
fn a_newline_or_escape_in_a_field_does_not_forge_a_line() {
    let (_d, cfg) = fresh();
    let forged = "nobody\n#2 2026-01-15T12:00:00.000Z sup1 code_set contact:K1 [ok]\r\x1b[2K\x1b]0;x\x07\u{202e}";
    let e = meldkamer::cli::code::reset(&cfg, forged, "sup1", &mut Vec::new()).expect_err("no such contact");
    assert!(matches!(e, meldkamer::cli::code::CodeError::NoContact(_)), "{e}");
    let conn = Connection::open(&cfg.store.path).expect("db");
    let stored: String = conn
        .query_row("SELECT subject FROM audit_log WHERE action = 'code_reset'", [], |r| {
            r.get(0)
        })
        .expect("the refusal is audited");
    assert!(!stored.chars().any(char::is_control), "stored escaped: {stored:?}");
    assert!(
        stored.contains("\\n#2") && stored.contains("\\e[2K") && stored.contains("\\x07"),
        "{stored:?}"
    );
    assert!(stored.contains("\\u{202e}"), "{stored:?}");
    let text = list(&cfg);
    let rows: i64 = conn
        .query_row("SELECT count(*) FROM audit_log", [], |r| r.get(0))
        .expect("count");
    assert_eq!(text.lines().count() as i64, rows, "one line per row: {text:?}");
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text:?}");
    let (r, text) = cli(&cfg, AuditCommand::Verify { anchor: None });
    assert!(r.is_ok(), "the chain holds over the stored text: {text}");
}

/// A row from before fields were escaped, with a raw newline in it, is still one line of
/// `audit list`.
#[test]
fn audit_list_escapes_rows_written_before_fields_were_cleaned() {
    let (_d, cfg) = fresh();
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute(
        "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash)
         VALUES (1, 0, 'op1', 'login', ?1, ?2, 'ok', NULL, zeroblob(32), zeroblob(32))",
        ["operator:a\n#2 1970-01-01T00:00:00.000Z op2 alarm_close", "d\x1b[31m"],
    )
    .expect("an old row");
    let text = list(&cfg);
    assert_eq!(text.lines().count(), 1, "{text:?}");
    assert!(
        text.contains("operator:a\\n#2") && text.contains("d\\e[31m"),
        "{text:?}"
    );
}

/// A 65 KB field is stored capped, with the cut marked and counted; the chain still verifies.
#[test]
fn a_huge_field_is_stored_capped_with_a_visible_marker() {
    let (_d, cfg) = fresh();
    let huge = "A".repeat(65 * 1024);
    let mut conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
    let tx = conn.transaction().expect("tx");
    audit::append(
        &tx,
        1,
        &audit::AuditRecord {
            actor: &huge,
            action: "login",
            subject: "operator:x",
            detail: &huge,
            result: "refused",
            failures: None,
        },
    )
    .expect("append");
    tx.commit().expect("commit");
    let (actor, detail): (String, String) = conn
        .query_row("SELECT actor, detail FROM audit_log WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .expect("row");
    assert!(actor.chars().count() <= audit::MAX_FIELD, "{}", actor.len());
    assert!(detail.chars().count() <= audit::MAX_DETAIL, "{}", detail.len());
    assert!(detail.chars().count() > audit::MAX_DETAIL - 40, "as much kept as fits");
    let kept = detail.chars().take_while(|c| *c == 'A').count();
    assert!(
        detail.ends_with(&format!("…[{} more characters cut]", huge.len() - kept)),
        "{detail}"
    );
    let (r, text) = cli(&cfg, AuditCommand::Verify { anchor: None });
    assert!(r.is_ok(), "{text}");
}
