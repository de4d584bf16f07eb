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
    meldkamer::verify::audit_key_from_config(&cfg).expect("audit key");
    (dir, cfg)
}

fn cli(cfg: &Config, command: AuditCommand) -> (Result<(), meldkamer::cli::audit::AuditError>, String) {
    let args = AuditArgs {
        config: None,
        db: None,
        command,
    };
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
    let (r, text) = cli(
        &cfg,
        AuditCommand::Verify {
            anchor: None,
            heads: None,
        },
    );
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
    let (r, text) = cli(
        &cfg,
        AuditCommand::Verify {
            anchor: None,
            heads: None,
        },
    );
    assert!(r.is_ok(), "{text}");
}

// --- The keyed chain and its published heads -------------------------------------------------

/// Append `n` rows (keyed with the audit key registered for the database).
fn append_rows(cfg: &Config, n: usize) {
    let mut conn = meldkamer::store::open_write(&cfg.store.path, Duration::from_secs(5)).expect("db");
    let tx = conn.transaction().expect("tx");
    for i in 0..n {
        audit::append(
            &tx,
            1_000 + i as i64,
            &audit::AuditRecord {
                actor: "op1",
                action: "code_verify",
                subject: &format!("contact:K{i}"),
                detail: "alarm:x",
                result: "rejected",
                failures: Some(i as i64),
            },
        )
        .expect("append");
    }
    tx.commit().expect("commit");
}

const NO_UPDATE: &str = "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;";
const NO_DELETE: &str = "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;";

/// What someone with write access to the database file (and without the audit key) can do:
/// take the protection off, recompute every row with `hash` (given the row, its previous
/// hash; returns the new hash and key id), and put the protection back exactly as it was.
fn rewrite(cfg: &Config, hash: impl Fn(&audit::AuditRow, &[u8]) -> ([u8; 32], Option<String>)) {
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
        .expect("drop");
    let rows = audit::rows(&conn, 0, 1_000_000).expect("rows");
    let mut prev = audit::GENESIS.to_vec();
    for r in rows {
        let (h, key_id) = hash(&r, &prev);
        conn.execute(
            "UPDATE audit_log SET prev_hash = ?1, row_hash = ?2, key_id = ?3 WHERE id = ?4",
            rusqlite::params![prev, h.to_vec(), key_id, r.id],
        )
        .expect("rewrite");
        prev = h.to_vec();
    }
    conn.execute_batch(&format!("{NO_UPDATE}\n{NO_DELETE}"))
        .expect("triggers back");
}

fn record(r: &audit::AuditRow) -> audit::AuditRecord<'_> {
    audit::AuditRecord {
        actor: &r.actor,
        action: &r.action,
        subject: &r.subject,
        detail: &r.detail,
        result: &r.result,
        failures: r.failures,
    }
}

fn verify_cli(cfg: &Config) -> (Result<(), meldkamer::cli::audit::AuditError>, String) {
    cli(
        cfg,
        AuditCommand::Verify {
            anchor: None,
            heads: None,
        },
    )
}

/// Publish the current head as the daemon does at start (into the heads file).
fn publish(cfg: &Config) {
    let clock = std::sync::Arc::new(meldkamer::clock::ManualClock::new(crate::common::T0));
    meldkamer::verify::published::Publisher::new(cfg, clock, Box::new(|_| {})).start();
}

/// The daemon publishes heads into the heads file, the log and the event stream, at start, every
/// `publish_every` rows and at shutdown; `audit verify` checks them all, and a tail cut off
/// below the last published head is reported against it.
#[tokio::test]
async fn the_daemon_publishes_heads_and_audit_verify_finds_a_cut_tail() {
    let dir = tempfile::tempdir().expect("dir");
    let stream = dir.path().join("events.jsonl");
    let s2 = stream.clone();
    let mut d = TestDaemon::start_with(crate::common::ACCOUNTS, move |c| {
        c.audit.publish_every = 5;
        c.event_stream.mode = meldkamer::config::EventStreamMode::File;
        c.event_stream.file = s2;
    })
    .await;
    let cfg = d.cfg.clone();
    let heads_file = cfg.audit.heads_path(&cfg.store);
    append_rows(&cfg, 12);
    let heads = || {
        meldkamer::verify::published::read_heads(&heads_file)
            .expect("heads")
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while heads().is_empty() {
        assert!(std::time::Instant::now() < deadline, "a head within seconds");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let published = heads();
    assert_eq!(published.len(), 1, "{published:?}");
    assert_eq!(published[0].0, 12, "the head once 5 rows or more came in");
    // The same head in the event stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let want = format!(
        "\"type\":\"audit_head\",\"id\":12,\"hash\":\"{}\"",
        hex::encode(published[0].1)
    );
    while !std::fs::read_to_string(&stream).unwrap_or_default().contains(&want) {
        assert!(std::time::Instant::now() < deadline, "the head in the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    append_rows(&cfg, 2);
    d.stop().await;
    let published = heads();
    assert_eq!(
        published.iter().map(|h| h.0).collect::<Vec<_>>(),
        [12, 14],
        "the shutdown head"
    );
    let (r, text) = verify_cli(&cfg);
    assert!(r.is_ok(), "{text}");
    assert!(
        text.contains("2 published heads") && text.contains("intact: 14 rows (all keyed)"),
        "{text}"
    );
    // Cut the last three rows off: the chain that is left is sound, but shorter than published.
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute_batch(&format!(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
         DELETE FROM audit_log WHERE id > 11; {NO_UPDATE} {NO_DELETE}"
    ))
    .expect("cut");
    assert!(
        audit::verify(&conn, audit::key_for(&conn).as_deref(), &[])
            .expect("verify")
            .ok(),
        "the chain alone cannot tell"
    );
    let (r, text) = verify_cli(&cfg);
    assert!(
        matches!(
            r,
            Err(meldkamer::cli::audit::AuditError::Broken(audit::Break::Cut {
                head: 14,
                last: 11
            }))
        ),
        "{r:?} {text}"
    );
    assert!(text.contains("last published head: 14:"), "{text}");
}

/// Recomputing the whole chain with plain SHA-256 (what `audit verify` accepted before the chain
/// was keyed) does not pass against a published head.
#[test]
fn a_chain_recomputed_with_plain_sha256_is_detected() {
    let (_d, cfg) = fresh();
    append_rows(&cfg, 6);
    publish(&cfg);
    assert!(verify_cli(&cfg).0.is_ok());
    rewrite(&cfg, |r, prev| (audit::row_hash(r.id, r.at_ms, &record(r), prev), None));
    let (r, text) = verify_cli(&cfg);
    assert!(
        matches!(
            r,
            Err(meldkamer::cli::audit::AuditError::Broken(audit::Break::Anchor {
                id: 6
            }))
        ),
        "{r:?} {text}"
    );
}

/// Recomputing the chain with another key is found from the first row, whether the rows name
/// the other key or claim the real one; so is a chain checked with the wrong key file.
#[test]
fn a_chain_recomputed_with_a_wrong_key_is_detected() {
    let (_d, cfg) = fresh();
    append_rows(&cfg, 4);
    let wrong = audit::AuditKey::from_bytes([0x42; 32]);
    let real_id = {
        let conn = Connection::open(&cfg.store.path).expect("db");
        audit::key_for(&conn).expect("registered").id().to_string()
    };
    rewrite(&cfg, |r, prev| {
        (
            audit::row_mac(&wrong, r.id, r.at_ms, &record(r), prev),
            Some(real_id.clone()),
        )
    });
    let (r, text) = verify_cli(&cfg);
    assert!(
        matches!(
            r,
            Err(meldkamer::cli::audit::AuditError::Broken(audit::Break::Content {
                id: 1
            }))
        ),
        "{r:?} {text}"
    );
    rewrite(&cfg, |r, prev| {
        (
            audit::row_mac(&wrong, r.id, r.at_ms, &record(r), prev),
            Some(wrong.id().to_string()),
        )
    });
    let (r, text) = verify_cli(&cfg);
    assert!(
        matches!(
            r,
            Err(meldkamer::cli::audit::AuditError::Key(
                audit::AuditKeyError::Other { .. }
            ))
        ),
        "the key file does not match the rows: {r:?} {text}"
    );
    let conn = Connection::open(&cfg.store.path).expect("db");
    let real = audit::key_for(&conn).expect("registered");
    assert!(matches!(
        audit::verify(&conn, Some(&real), &[]).expect("verify").broken,
        Some(audit::Break::OtherKey { id: 1, .. })
    ));
}

/// Triggers of the same names that do nothing do not pass for protection; neither does an
/// extra trigger on the table.
#[test]
fn do_nothing_triggers_with_the_same_names_are_detected() {
    let (_d, cfg) = fresh();
    append_rows(&cfg, 2);
    assert!(verify_cli(&cfg).0.is_ok());
    let conn = Connection::open(&cfg.store.path).expect("db");
    conn.execute_batch(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;
         CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT 1; END;
         CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT 'append-only'; END;",
    )
    .expect("replace");
    let (r, text) = verify_cli(&cfg);
    assert!(
        matches!(r, Err(meldkamer::cli::audit::AuditError::Triggers)),
        "{r:?} {text}"
    );
    conn.execute_batch(&format!(
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; {NO_UPDATE} {NO_DELETE}"
    ))
    .expect("restore");
    assert!(verify_cli(&cfg).0.is_ok(), "the exact statements, however spaced, pass");
    conn.execute_batch("CREATE TRIGGER audit_log_extra AFTER INSERT ON audit_log BEGIN SELECT 1; END;")
        .expect("extra");
    assert!(matches!(
        verify_cli(&cfg).0,
        Err(meldkamer::cli::audit::AuditError::Triggers)
    ));
}

/// A TCP subscriber of the event stream gets each audit head as it is published.
#[tokio::test]
async fn tcp_stream_subscribers_get_audit_heads() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut d = TestDaemon::start_with(crate::common::ACCOUNTS, |c| {
        c.audit.publish_every = 1;
        c.event_stream.mode = meldkamer::config::EventStreamMode::Tcp;
        c.event_stream.listen = "127.0.0.1:0".into();
    })
    .await;
    let addr = d.running.as_ref().and_then(|r| r.event_stream_addr).expect("stream");
    let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut lines = BufReader::new(s).lines();
    let next = async |lines: &mut tokio::io::Lines<BufReader<tokio::net::TcpStream>>| -> serde_json::Value {
        let l = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("a line in time")
            .expect("read")
            .expect("open");
        serde_json::from_str(&l).expect("JSON")
    };
    assert_eq!(next(&mut lines).await["type"], "hello");
    append_rows(&d.cfg, 1);
    let head = next(&mut lines).await;
    assert_eq!(
        (head["type"].as_str(), head["id"].as_i64()),
        (Some("audit_head"), Some(1)),
        "{head}"
    );
    assert_eq!(head["hash"].as_str().map(str::len), Some(64));
    d.stop().await;
}
