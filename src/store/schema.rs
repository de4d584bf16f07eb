//! Schema and migrations, keyed by `PRAGMA user_version`. Each step runs in its own
//! transaction; a database from a newer version is refused rather than guessed at.

use rusqlite::Connection;

use super::StoreError;

/// The migrations, in order. Index + 1 is the version a step produces.
const MIGRATIONS: &[&str] = &[
    // 1: the receiver: accounts (transmitters) and every frame received.
    r#"
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    INSERT INTO meta (key, value) VALUES ('accounts_generation', '0');

    -- One row per transmitter account (panel path). receiver/line '' mean "any".
    CREATE TABLE accounts (
        id                    INTEGER PRIMARY KEY,
        account               TEXT NOT NULL,
        receiver              TEXT NOT NULL DEFAULT '',
        line                  TEXT NOT NULL DEFAULT '',
        dc09_key              BLOB,
        key_format            TEXT CHECK (key_format IN ('hex', 'ascii')),
        require_encryption    INTEGER NOT NULL DEFAULT 0,
        quirk_crc_binary      INTEGER NOT NULL DEFAULT 0,
        quirk_cr_in_crc       INTEGER NOT NULL DEFAULT 0,
        quirk_trailing_nul    INTEGER NOT NULL DEFAULT 0,
        check_plain_timestamp INTEGER NOT NULL DEFAULT 0,
        ack_separator         INTEGER NOT NULL DEFAULT 0,
        enabled               INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account, receiver, line),
        CHECK ((dc09_key IS NULL) = (key_format IS NULL)),
        CHECK (require_encryption = 0 OR dc09_key IS NOT NULL)
    );

    -- Last valid traffic per account (supervision).
    CREATE TABLE account_status (
        account_id    INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
        last_seen_ms  INTEGER NOT NULL
    );

    -- Every frame (and every run of garbage) a panel sent, with what we answered.
    CREATE TABLE frames (
        id            INTEGER PRIMARY KEY,
        received_ms   INTEGER NOT NULL,
        transport     TEXT NOT NULL CHECK (transport IN ('tcp', 'udp')),
        peer          TEXT NOT NULL,
        raw           BLOB NOT NULL,
        outcome       TEXT NOT NULL CHECK (outcome IN ('accepted', 'retransmission', 'refused', 'silent', 'garbage')),
        reason        TEXT,
        detail        TEXT,
        token         TEXT,
        encrypted     INTEGER,
        account       TEXT,
        receiver      TEXT,
        line          TEXT,
        seq           INTEGER,
        account_id    INTEGER,
        skew_s        INTEGER,
        response      BLOB,
        response_kind TEXT,
        duplicate_of  INTEGER,
        dedupe_key    BLOB
    );

    -- Every event of every accepted frame.
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        frame_id      INTEGER NOT NULL REFERENCES frames(id),
        received_ms   INTEGER NOT NULL,
        account       TEXT NOT NULL,
        account_id    INTEGER,
        receiver      TEXT,
        line          TEXT,
        seq           INTEGER NOT NULL,
        code_format   TEXT NOT NULL CHECK (code_format IN ('sia', 'cid')),
        code          TEXT NOT NULL,
        qualifier     TEXT NOT NULL,
        category      TEXT,
        kind          TEXT,
        priority      INTEGER,
        description   TEXT NOT NULL,
        zone          TEXT,
        user_no       TEXT,
        area          TEXT,
        text          TEXT,
        occurred_ms   INTEGER,
        sent_ms       INTEGER,
        old           INTEGER NOT NULL DEFAULT 0,
        xdata         TEXT
    );
    CREATE INDEX events_by_account ON events (account, id);
    "#,
];

/// The schema version this program writes.
pub fn current_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Bring the schema up to the current version.
pub fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let supported = current_version();
    if found > supported {
        return Err(StoreError::TooNew { found, supported });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;\n{step}\nPRAGMA user_version = {version};\nCOMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_empty_and_is_idempotent() {
        let conn = Connection::open_in_memory().expect("db");
        migrate(&conn).expect("migrate");
        migrate(&conn).expect("again");
        let v: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("v");
        assert_eq!(v, current_version());
    }

    #[test]
    fn refuses_newer_schema() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch("PRAGMA user_version = 999").expect("set");
        assert!(matches!(migrate(&conn), Err(StoreError::TooNew { found: 999, .. })));
    }
}
