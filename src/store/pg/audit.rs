//! The audit log on PostgreSQL, read back for `meldkamer audit verify`: its rows in id order
//! (fed to the one chain check, [`crate::verify::audit::ChainWalk`]) and its append-only
//! protection. The protection is three triggers calling one PL/pgSQL function
//! (`schema_19.sql`): UPDATE and DELETE like SQLite's two, and TRUNCATE, which PostgreSQL has
//! and which fires no row trigger. They are checked by their full definitions and the
//! function's body, enabled, and no other trigger on the table (one that returns NULL before
//! INSERT would drop rows silently).

use tokio_postgres::Client;

use super::PgError;
use crate::verify::audit::{AuditKey, AuditRow, ChainReport, ChainWalk};

/// The triggers as `pg_get_triggerdef` shows them, with the schema-qualified table name it
/// prints replaced by `audit_log`.
const TRIGGERS: [(&str, &str); 3] = [
    (
        "audit_log_no_update",
        "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    ),
    (
        "audit_log_no_delete",
        "CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()",
    ),
    (
        "audit_log_no_truncate",
        "CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()",
    ),
];

/// The function's body, whitespace normalised.
const FUNCTION_BODY: &str = "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END";

fn normalise(sql: &str) -> String {
    sql.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Exactly the three triggers, as created, enabled, calling the function as created (in
/// PL/pgSQL), and no other trigger on the table.
pub async fn triggers_intact(client: &Client) -> Result<bool, PgError> {
    let rows = client
        .query(
            "SELECT t.tgname::text, pg_get_triggerdef(t.oid), t.tgenabled::text, p.prosrc, l.lanname::text,
                    p.proname::text
             FROM pg_trigger t
             JOIN pg_proc p ON p.oid = t.tgfoid
             JOIN pg_language l ON l.oid = p.prolang
             WHERE t.tgrelid = to_regclass('audit_log') AND NOT t.tgisinternal",
            &[],
        )
        .await?;
    if rows.len() != TRIGGERS.len() {
        return Ok(false);
    }
    // pg_get_triggerdef names the table with its schema, always.
    let qualified = client
        .query_one(
            "SELECT quote_ident(n.nspname) || '.audit_log' FROM pg_class c
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('audit_log')",
            &[],
        )
        .await?
        .get::<_, String>(0);
    Ok(TRIGGERS.iter().all(|(name, def)| {
        rows.iter().any(|r| {
            let (n, d, enabled, body, lang, function): (String, String, String, String, String, String) =
                (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            let d = normalise(&d).replace(&format!(" ON {qualified} "), " ON audit_log ");
            n == *name
                && d == *def
                // 'O': fires in normal sessions ('A': always); 'D' disabled, 'R' replica only.
                && (enabled == "O" || enabled == "A")
                && normalise(&body) == FUNCTION_BODY
                && lang == "plpgsql"
                && function == "audit_log_append_only"
        })
    }))
}

/// Rows in order, from `after` (exclusive).
pub async fn rows(client: &Client, after: i64, limit: i64) -> Result<Vec<AuditRow>, PgError> {
    let rows = client
        .query(
            "SELECT id, at_ms, actor, action, subject, detail, result, failures, prev_hash, row_hash, key_id
             FROM audit_log WHERE id > $1 ORDER BY id LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AuditRow {
            id: r.get(0),
            at_ms: r.get(1),
            actor: r.get(2),
            action: r.get(3),
            subject: r.get(4),
            detail: r.get(5),
            result: r.get(6),
            failures: r.get(7),
            prev_hash: r.get(8),
            row_hash: r.get(9),
            key_id: r.get(10),
        })
        .collect())
}

/// The key id of the newest keyed row and how many rows are keyed.
pub async fn keyed_rows(client: &Client) -> Result<Option<(String, i64)>, PgError> {
    let row = client
        .query_one(
            "SELECT (SELECT key_id FROM audit_log WHERE key_id IS NOT NULL ORDER BY id DESC LIMIT 1),
                    (SELECT count(*) FROM audit_log WHERE key_id IS NOT NULL)",
            &[],
        )
        .await?;
    let id: Option<String> = row.get(0);
    Ok(id.map(|id| (id, row.get(1))))
}

/// The newest row's id (0: none).
pub async fn last_id(client: &Client) -> Result<i64, PgError> {
    Ok(client
        .query_one("SELECT coalesce(max(id), 0) FROM audit_log", &[])
        .await?
        .get(0))
}

/// Recompute the chain on PostgreSQL: the rows read in batches and walked by the same check
/// as SQLite's ([`crate::verify::audit::verify`]).
pub async fn verify(
    client: &Client,
    key: Option<&AuditKey>,
    heads: &[(i64, [u8; 32])],
) -> Result<ChainReport, PgError> {
    let mut walk = ChainWalk::new(key, heads, triggers_intact(client).await?);
    loop {
        let batch = rows(client, walk.after(), 1000).await?;
        if batch.is_empty() || !walk.push_all(batch) {
            break;
        }
    }
    Ok(walk.finish())
}
