//! The audit log: who did what to which subject, when, with what result. Append-only (SQLite
//! triggers refuse UPDATE and DELETE) and hash-chained: each row stores
//! `SHA-256(domain ‖ id ‖ time ‖ actor ‖ action ‖ subject ‖ detail ‖ result ‖ failures ‖
//! previous row's hash)`, the first row chaining to 32 zero bytes. [`verify_chain`] recomputes
//! the chain and names the first row that does not fit.
//!
//! Every text field is stored escaped (control characters, DEL, C1, line separators and
//! bidirectional controls become `\n`, `\e`, `\x07`, `\u{202e}`…; a backslash becomes `\\`)
//! and capped ([`MAX_FIELD`], [`MAX_DETAIL`] characters, a cut marked `…[N more characters cut]`),
//! so `meldkamer audit list` can never print a forged line and one huge field cannot bloat the
//! log. The hash covers the stored text.
//!
//! Generic on purpose: code operations and verification attempts use it, and so does every
//! operator action. Callers never put a secret in it — not a code, not a candidate, not even
//! a hash of one (a short code's hash can be brute-forced).
//!
//! What a chain cannot show by itself: rows cut off at the end, or a whole rewritten chain.
//! For that, the head (`meldkamer audit verify` prints it) is copied regularly to a separate
//! system, and `--anchor ID:HASH` checks that an earlier head is still there, unchanged.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::StoreError;

/// The hash before the first row.
pub const GENESIS: [u8; 32] = [0; 32];

/// Longest actor, action, subject or result stored, in characters (after escaping).
pub const MAX_FIELD: usize = 128;
/// Longest detail stored, in characters (after escaping).
pub const MAX_DETAIL: usize = 1024;

/// The escape of a character that must not reach a terminal or a log line as itself: control
/// characters (C0, DEL, C1), line and paragraph separators, and the bidirectional formatting
/// characters that reorder what a reader sees. `None`: the character stands for itself.
fn escape_char(c: char) -> Option<String> {
    match c {
        '\n' => Some("\\n".into()),
        '\r' => Some("\\r".into()),
        '\t' => Some("\\t".into()),
        '\u{1b}' => Some("\\e".into()),
        '\0'..='\u{1f}' | '\u{7f}' => Some(format!("\\x{:02x}", u32::from(c))),
        '\u{80}'..='\u{9f}'
        | '\u{2028}'
        | '\u{2029}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => Some(format!("\\u{{{:04x}}}", u32::from(c))),
        _ => None,
    }
}

/// The stored form of one input character: itself, or an escape.
fn piece(c: char) -> Option<String> {
    if c == '\\' { Some("\\\\".into()) } else { escape_char(c) }
}

fn cut_marker(left: usize) -> String {
    format!("…[{left} more characters cut]")
}

/// A field as it is stored: every control character escaped (a backslash too, so the escapes
/// are unambiguous), at most `cap` characters, a cut marked visibly with how many input
/// characters were left out. An escape is never cut in half.
pub fn clean(s: &str, cap: usize) -> String {
    let width = |c: char| piece(c).map_or(1, |p| p.chars().count());
    let mut n = 0usize;
    let mut total = 0usize;
    for c in s.chars() {
        n += 1;
        total += width(c);
    }
    // The marker for the most that could be cut is the longest, so the cut below always fits.
    let budget = if total <= cap {
        usize::MAX
    } else {
        cap.saturating_sub(cut_marker(n).chars().count())
    };
    let mut out = String::with_capacity(s.len().min(cap.saturating_mul(4)));
    let (mut used, mut kept) = (0usize, 0usize);
    for c in s.chars() {
        let w = width(c);
        if used + w > budget {
            break;
        }
        match piece(c) {
            Some(p) => out.push_str(&p),
            None => out.push(c),
        }
        used += w;
        kept += 1;
    }
    if kept < n {
        out.push_str(&cut_marker(n - kept));
    }
    out
}

/// Control characters of a stored field escaped for showing (rows written before fields were
/// cleaned may hold them); backslashes stay as they are.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| escape_char(c).is_some()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match escape_char(c) {
            Some(p) => out.push_str(&p),
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One audit entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditRecord<'a> {
    /// Who: an operator id, `cli:USER`, `system`.
    pub actor: &'a str,
    /// What: `code_set`, `code_verify`, `alarm_close`, …
    pub action: &'a str,
    /// On what: `contact:REF`, `customer:REF`, `alarm:PUBLIC_ID`, …
    pub subject: &'a str,
    /// Context, never a secret.
    pub detail: &'a str,
    /// `ok`, `refused`, or the verification verdict.
    pub result: &'a str,
    /// A failure counter after the action, where there is one.
    pub failures: Option<i64>,
}

/// A stored row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain (1, 2, 3, … without gaps).
    pub id: i64,
    /// Unix ms.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub subject: String,
    /// Context.
    pub detail: String,
    /// Result.
    pub result: String,
    /// Failure counter.
    pub failures: Option<i64>,
    /// The previous row's hash.
    pub prev_hash: Vec<u8>,
    /// This row's hash.
    pub row_hash: Vec<u8>,
}

fn field(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// The hash of a row's content chained to the previous hash.
pub fn row_hash(id: i64, at_ms: i64, r: &AuditRecord<'_>, prev: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"meldkamer audit v1\0");
    h.update(id.to_be_bytes());
    h.update(at_ms.to_be_bytes());
    for s in [r.actor, r.action, r.subject, r.detail, r.result] {
        field(&mut h, s);
    }
    match r.failures {
        Some(n) => {
            h.update([1]);
            h.update(n.to_be_bytes());
        }
        None => h.update([0]),
    }
    h.update((prev.len() as u64).to_be_bytes());
    h.update(prev);
    h.finalize().into()
}

/// Append a record inside the caller's transaction (so the action and its record commit
/// together). Returns the row id.
/// Every text field is stored [`clean`]ed (control characters escaped, length capped: a log
/// line read back can never hold a second, forged line) and the hash is over the stored text.
pub fn append(tx: &Transaction<'_>, at_ms: i64, r: &AuditRecord<'_>) -> Result<i64, StoreError> {
    let (actor, action, subject, detail, result) = (
        clean(r.actor, MAX_FIELD),
        clean(r.action, MAX_FIELD),
        clean(r.subject, MAX_FIELD),
        clean(r.detail, MAX_DETAIL),
        clean(r.result, MAX_FIELD),
    );
    let r = &AuditRecord {
        actor: &actor,
        action: &action,
        subject: &subject,
        detail: &detail,
        result: &result,
        failures: r.failures,
    };
    let last: Option<(i64, Vec<u8>)> = tx
        .prepare_cached("SELECT id, row_hash FROM audit_log ORDER BY id DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let (id, prev) = match last {
        Some((id, h)) => (id + 1, h),
        None => (1, GENESIS.to_vec()),
    };
    let hash = row_hash(id, at_ms, r, &prev);
    tx.prepare_cached(
        "INSERT INTO audit_log (id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        id,
        at_ms,
        r.actor,
        r.action,
        r.subject,
        r.detail,
        r.result,
        r.failures,
        prev,
        hash.to_vec()
    ])?;
    Ok(id)
}

/// Rows in order, from `after` (exclusive).
pub fn rows(conn: &Connection, after: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash
         FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let v = stmt
        .query_map(params![after, limit], |r| {
            Ok(AuditRow {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                actor: r.get(2)?,
                action: r.get(3)?,
                subject: r.get(4)?,
                detail: r.get(5)?,
                result: r.get(6)?,
                failures: r.get(7)?,
                prev_hash: r.get(8)?,
                row_hash: r.get(9)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// Why a row breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    /// Ids are not consecutive.
    #[error("row #{id} follows row #{previous}: rows in between are missing")]
    Gap {
        /// This row.
        id: i64,
        /// The row before it.
        previous: i64,
    },
    /// The row's content does not match its hash.
    #[error("row #{id}: its content does not match its hash (the row was changed)")]
    Content {
        /// The row.
        id: i64,
    },
    /// The row does not chain to the one before it.
    #[error("row #{id}: it does not chain to the row before it (a row before it was changed, removed or inserted)")]
    Link {
        /// The row.
        id: i64,
    },
    /// An anchor (an earlier exported head) is not in the chain as recorded.
    #[error("anchor row #{id} is missing or has another hash (the log was cut or rewritten)")]
    Anchor {
        /// The anchored row.
        id: i64,
    },
}

impl Break {
    /// The row named.
    pub fn row(&self) -> i64 {
        match self {
            Break::Gap { id, .. } | Break::Content { id } | Break::Link { id } | Break::Anchor { id } => *id,
        }
    }
}

/// The outcome of checking the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// The last row and its hash.
    pub head: Option<(i64, [u8; 32])>,
    /// The first row that breaks the chain.
    pub broken: Option<Break>,
    /// The UPDATE/DELETE triggers are in place.
    pub triggers_intact: bool,
}

impl ChainReport {
    /// Intact: no break and the triggers in place.
    pub fn ok(&self) -> bool {
        self.broken.is_none() && self.triggers_intact
    }
}

/// Recompute the chain from the first row; stop at the first break. `anchor`: an earlier head
/// (row id and hash) that must still be there.
pub fn verify_chain(conn: &Connection, anchor: Option<(i64, [u8; 32])>) -> Result<ChainReport, StoreError> {
    let triggers: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'
         AND name IN ('audit_log_no_update', 'audit_log_no_delete') AND tbl_name = 'audit_log'",
        [],
        |r| r.get(0),
    )?;
    let mut report = ChainReport {
        rows: 0,
        head: None,
        broken: None,
        triggers_intact: triggers == 2,
    };
    let mut prev_id = 0i64;
    let mut prev_hash = GENESIS.to_vec();
    let mut anchor_seen = false;
    loop {
        let batch = rows(conn, prev_id, 1000)?;
        if batch.is_empty() {
            break;
        }
        for r in batch {
            report.rows += 1;
            if r.id != prev_id + 1 {
                report.broken = Some(Break::Gap {
                    id: r.id,
                    previous: prev_id,
                });
                return Ok(report);
            }
            let rec = AuditRecord {
                actor: &r.actor,
                action: &r.action,
                subject: &r.subject,
                detail: &r.detail,
                result: &r.result,
                failures: r.failures,
            };
            let expect = row_hash(r.id, r.at_ms, &rec, &r.prev_hash);
            if !bool::from(expect.as_slice().ct_eq(&r.row_hash)) {
                report.broken = Some(Break::Content { id: r.id });
                return Ok(report);
            }
            if !bool::from(r.prev_hash.as_slice().ct_eq(&prev_hash)) {
                report.broken = Some(Break::Link { id: r.id });
                return Ok(report);
            }
            if let Some((aid, ahash)) = anchor
                && aid == r.id
            {
                if !bool::from(ahash.as_slice().ct_eq(&r.row_hash)) {
                    report.broken = Some(Break::Anchor { id: aid });
                    return Ok(report);
                }
                anchor_seen = true;
            }
            prev_id = r.id;
            prev_hash = r.row_hash;
            report.head = Some((r.id, expect));
        }
    }
    if let Some((aid, _)) = anchor
        && !anchor_seen
    {
        report.broken = Some(Break::Anchor { id: aid });
    }
    Ok(report)
}

/// Parse an anchor `ID:HEX`.
pub fn parse_anchor(s: &str) -> Option<(i64, [u8; 32])> {
    let (id, h) = s.split_once(':')?;
    let id: i64 = id.trim().trim_start_matches('#').parse().ok()?;
    let mut out = [0u8; 32];
    hex::decode_to_slice(h.trim(), &mut out).ok()?;
    Some((id, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db_with(n: usize) -> Connection {
        let mut conn = Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        let tx = conn.transaction().expect("tx");
        for i in 0..n {
            append(
                &tx,
                1000 + i as i64,
                &AuditRecord {
                    actor: "op1",
                    action: "test",
                    subject: &format!("thing:{i}"),
                    detail: "",
                    result: "ok",
                    failures: (i % 2 == 0).then_some(i as i64),
                },
            )
            .expect("append");
        }
        tx.commit().expect("commit");
        conn
    }

    #[test]
    fn an_intact_chain_verifies_and_reports_its_head() {
        let conn = db_with(5);
        let r = verify_chain(&conn, None).expect("verify");
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.rows, 5);
        let (id, h) = r.head.expect("head");
        assert_eq!(id, 5);
        assert!(verify_chain(&conn, Some((id, h))).expect("anchor").ok());
        assert!(verify_chain(&conn, Some((3, h))).expect("anchor").broken.is_some());
        assert!(verify_chain(&conn, Some((9, h))).expect("anchor").broken.is_some());
        let empty = db_with(0);
        assert!(verify_chain(&empty, None).expect("verify").ok());
    }

    #[test]
    fn triggers_refuse_update_and_delete() {
        let conn = db_with(2);
        let e = conn
            .execute("UPDATE audit_log SET result = 'x' WHERE id = 1", [])
            .expect_err("no update");
        assert!(e.to_string().contains("append-only"), "{e}");
        conn.execute("DELETE FROM audit_log WHERE id = 2", [])
            .expect_err("no delete");
    }

    #[test]
    fn clean_escapes_every_control_character_and_backslashes() {
        assert_eq!(clean("op1", MAX_FIELD), "op1");
        assert_eq!(clean("a\nb\rc\td\u{1b}[2K", MAX_FIELD), "a\\nb\\rc\\td\\e[2K");
        assert_eq!(clean("\0\u{7}\u{7f}", MAX_FIELD), "\\x00\\x07\\x7f");
        assert_eq!(
            clean("\u{85}\u{9b}\u{2028}\u{202e}\u{2066}", MAX_FIELD),
            "\\u{0085}\\u{009b}\\u{2028}\\u{202e}\\u{2066}"
        );
        assert_eq!(
            clean("C:\\x\\n", MAX_FIELD),
            "C:\\\\x\\\\n",
            "a typed backslash-n is not an escape"
        );
        assert_eq!(clean("zoë ☃", MAX_FIELD), "zoë ☃");
        for c in (0u32..0x3000).filter_map(char::from_u32) {
            assert!(!clean(&c.to_string(), MAX_FIELD).chars().any(char::is_control), "{c:?}");
        }
    }

    #[test]
    fn clean_caps_with_a_counted_marker_and_never_cuts_an_escape() {
        let exact = "x".repeat(MAX_FIELD);
        assert_eq!(clean(&exact, MAX_FIELD), exact, "exactly the cap is kept whole");
        let over = "x".repeat(MAX_FIELD + 1);
        let c = clean(&over, MAX_FIELD);
        assert!(c.chars().count() <= MAX_FIELD);
        let kept = c.chars().take_while(|c| *c == 'x').count();
        assert_eq!(
            c,
            format!("{}…[{} more characters cut]", "x".repeat(kept), MAX_FIELD + 1 - kept)
        );
        // Escapes: each is kept whole or left out whole.
        let c = clean(&"\u{1b}".repeat(200), MAX_FIELD);
        assert!(c.chars().count() <= MAX_FIELD);
        let head = c.split('…').next().unwrap_or_default();
        assert_eq!(head.len() % 2, 0, "{c}");
        assert!(
            head.chars().collect::<Vec<_>>().chunks(2).all(|p| p == ['\\', 'e']),
            "{c}"
        );
        assert!(
            c.ends_with(&format!("[{} more characters cut]", 200 - head.len() / 2)),
            "{c}"
        );
        // Multi-byte characters count as one.
        let snow = "☃".repeat(MAX_FIELD);
        assert_eq!(clean(&snow, MAX_FIELD), snow);
        assert!(clean(&"☃".repeat(70_000), MAX_DETAIL).chars().count() <= MAX_DETAIL);
    }

    #[test]
    fn anchor_round_trips() {
        let h = [0xab; 32];
        assert_eq!(parse_anchor(&format!("7:{}", hex::encode(h))), Some((7, h)));
        assert_eq!(parse_anchor("7:zz"), None);
    }
}
