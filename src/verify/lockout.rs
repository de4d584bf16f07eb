//! Throttling, persisted in SQLite so a restart forgets nothing:
//!
//! - per contact: consecutive rejected codes; at the threshold (default 5) phone cancellation
//!   is locked for the whole customer until a supervisor resets the code
//!   (`meldkamer code reset`). At 5 tries a random 6-digit code falls to a guesser once in
//!   200,000 lock cycles.
//! - per operator: rejected codes within the last hour across all customers; above the
//!   threshold (default 10) the supervisor is alerted (insider or social-engineering
//!   enumeration).
//!
//! A lock never blocks alarm handling: not verified means the alarm is handled as real.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::audit::{self, AuditRecord};
use crate::correlate::alarms::{self, AlarmSpec};
use crate::store::StoreError;

/// The thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Consecutive rejects of one contact that lock the customer.
    pub lockout_after: u32,
    /// Rejects per operator per hour above which the supervisor is alerted.
    pub operator_alert_per_hour: u32,
    /// Verifications per operator per hour, across customers, beyond which more are refused.
    pub operator_max_per_hour: u32,
    /// Priority of the supervisor alerts.
    pub alert_priority: u8,
}

impl Limits {
    /// From the configuration.
    pub fn from_config(cfg: &crate::config::Config) -> Limits {
        Limits {
            lockout_after: cfg.codes.lockout_after,
            operator_alert_per_hour: cfg.codes.operator_alert_rejects_per_hour,
            operator_max_per_hour: cfg.codes.operator_max_verifications_per_hour,
            alert_priority: cfg.alarms.supervisor_priority,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            lockout_after: 5,
            operator_alert_per_hour: 10,
            operator_max_per_hour: 30,
            alert_priority: 4,
        }
    }
}

/// Is phone cancellation locked for this customer?
pub fn is_locked(conn: &Connection, customer_id: i64) -> Result<bool, StoreError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM code_lockouts WHERE customer_id = ?1",
            params![customer_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Consecutive rejects of a contact.
pub fn consecutive_failures(conn: &Connection, contact_id: i64) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT consecutive FROM code_failures WHERE contact_id = ?1",
            params![contact_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Count a reject for a contact; lock the customer when the threshold is reached. Returns the
/// count after this reject and whether this reject locked the customer.
pub fn record_reject(
    tx: &Transaction<'_>,
    contact_id: i64,
    customer_id: i64,
    now: i64,
    limits: &Limits,
) -> Result<(i64, bool), StoreError> {
    let n: i64 = tx.query_row(
        "INSERT INTO code_failures (contact_id, consecutive, last_ms) VALUES (?1, 1, ?2)
         ON CONFLICT (contact_id) DO UPDATE SET consecutive = consecutive + 1, last_ms = excluded.last_ms
         RETURNING consecutive",
        params![contact_id, now],
        |r| r.get(0),
    )?;
    let mut locked_now = false;
    if n >= i64::from(limits.lockout_after) && !is_locked(tx, customer_id)? {
        tx.execute(
            "INSERT INTO code_lockouts (customer_id, locked_ms, contact_id) VALUES (?1, ?2, ?3)",
            params![customer_id, now, contact_id],
        )?;
        locked_now = true;
    }
    Ok((n, locked_now))
}

/// Count a reject for a contact that may not cancel this customer's alarm (unknown, of another
/// customer, or without the right to cancel), per customer, like a contact's: the answers to
/// such attempts then count down and lock exactly as a real contact's would, so they cannot
/// tell whether a contact exists or belongs to the alarm.
pub fn record_foreign_reject(
    tx: &Transaction<'_>,
    customer_id: i64,
    now: i64,
    limits: &Limits,
) -> Result<(i64, bool), StoreError> {
    let n: i64 = tx.query_row(
        "INSERT INTO code_failures_foreign (customer_id, consecutive, last_ms) VALUES (?1, 1, ?2)
         ON CONFLICT (customer_id) DO UPDATE SET consecutive = consecutive + 1, last_ms = excluded.last_ms
         RETURNING consecutive",
        params![customer_id, now],
        |r| r.get(0),
    )?;
    let mut locked_now = false;
    if n >= i64::from(limits.lockout_after) && !is_locked(tx, customer_id)? {
        tx.execute(
            "INSERT INTO code_lockouts (customer_id, locked_ms, contact_id) VALUES (?1, ?2, NULL)",
            params![customer_id, now],
        )?;
        locked_now = true;
    }
    Ok((n, locked_now))
}

/// The customer's count of [`record_foreign_reject`].
pub fn foreign_failures(conn: &Connection, customer_id: i64) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT consecutive FROM code_failures_foreign WHERE customer_id = ?1",
            params![customer_id],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Verification attempts by an operator in the hour up to `now`, whatever their verdict.
pub fn operator_attempts_last_hour(conn: &Connection, operator: &str, now: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM code_attempts WHERE operator = ?1 AND at_ms > ?2 - 3600000 AND at_ms <= ?2",
        params![operator, now],
        |r| r.get(0),
    )?)
}

/// An accepted code ends the run of rejects.
pub fn record_accept(tx: &Transaction<'_>, contact_id: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE code_failures SET consecutive = 0 WHERE contact_id = ?1",
        params![contact_id],
    )?;
    Ok(())
}

/// Codes by an operator in the hour up to `now` that were not verified: rejected, and also
/// those tried while the customer was locked or its codes invalidated (attempts already
/// recorded). A guesser of duress codes on a locked customer is counted like any other.
pub fn operator_rejects_last_hour(conn: &Connection, operator: &str, now: i64) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT count(*) FROM code_attempts WHERE operator = ?1
         AND (verdict = 'rejected' OR verdict = 'locked' OR verdict = 'invalidated') AND at_ms > ?2 - 3600000
         AND at_ms <= ?2",
        params![operator, now],
        |r| r.get(0),
    )?)
}

/// Raise (or join) a supervisor-queue alarm, audit it when it is new, and log a warning.
/// Returns the alarm id and whether it is new.
pub fn alert_supervisor(
    tx: &Transaction<'_>,
    join_key: &str,
    title: &str,
    subject: &str,
    limits: &Limits,
    now: i64,
) -> Result<(i64, bool), StoreError> {
    let existing: Option<i64> = tx
        .query_row(
            "SELECT id FROM alarms WHERE site_id IS NULL AND join_key = ?1 AND state <> 'closed'",
            params![join_key],
            |r| r.get(0),
        )
        .optional()?;
    let id = alarms::open_or_join(
        tx,
        &AlarmSpec::supervisor("", join_key, title, limits.alert_priority.clamp(1, 9)),
        false,
        now,
    )?
    .id;
    let new = existing.is_none();
    if new {
        audit::append(
            tx,
            now,
            &AuditRecord {
                actor: "system",
                action: "supervisor_alert",
                subject,
                detail: title,
                result: "raised",
                failures: None,
            },
        )?;
    }
    tracing::warn!(alert = join_key, new, title, "supervisor alert");
    Ok((id, new))
}
