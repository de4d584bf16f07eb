//! Operator sessions, kept in the database so a daemon restart logs nobody out (the console
//! reconnects into the same session). Only the SHA-256 of a token is stored: a token is 256
//! random bits, so its hash cannot be turned back, and a copy of the database opens no
//! session.
//!
//! A session is live while it has not ended, has not expired, its operator is not disabled and
//! still has the role the session was opened with: `operator disable` and a role change end
//! the operator's sessions at once ([`end_for_operator`], from the CLI's own process), and
//! every request and every push looks the session up again ([`lookup`]).
//!
//! When a session ends, the alarms its operator was handling go back to the queue
//! ([`release_alarms`]), logged on each alarm.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::Role;
use super::authz::Caller;
use crate::correlate::alarms;
use crate::store::StoreError;

/// The stored form of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random token (64 hex characters), or `None` without OS randomness.
pub fn new_token() -> Option<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).ok()?;
    Some(hex::encode(raw))
}

/// Open a session; returns its row id.
pub fn create(
    tx: &Transaction<'_>,
    token: &str,
    operator_id: i64,
    role: Role,
    peer: &str,
    now_ms: i64,
    expires_ms: i64,
) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO sessions (token_hash, operator_id, role, peer, created_ms, expires_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            token_hash(token).to_vec(),
            operator_id,
            role.as_str(),
            peer,
            now_ms,
            expires_ms
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Why a token does not open a session now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dead {
    /// Never issued (or not by this database).
    Unknown,
    /// Ended (logout, disable, role change), with the reason recorded.
    Ended(String),
    /// Past its expiry.
    Expired,
    /// The operator was disabled.
    Disabled,
    /// The operator's role changed.
    RoleChanged,
}

impl Dead {
    /// For the operator.
    pub fn reason(&self) -> String {
        match self {
            Dead::Unknown => "no valid session: log in".into(),
            Dead::Ended(r) => format!("session ended ({r}): log in again"),
            Dead::Expired => "session expired: log in again".into(),
            Dead::Disabled => "session ended (operator disabled)".into(),
            Dead::RoleChanged => "session ended (role changed): log in again".into(),
        }
    }
}

/// The live session of a token, or why there is none. A session that is dead for a reason
/// that has not been recorded yet (expiry, a disabled operator) is left for [`sweep`].
pub fn lookup(conn: &Connection, token: &str, now_ms: i64) -> Result<Result<Caller, Dead>, StoreError> {
    let row: Option<(i64, i64, String, String, i64, Option<String>, String, bool)> = conn
        .prepare_cached(
            "SELECT s.id, s.operator_id, s.role, o.role, s.expires_ms, s.end_reason, o.name, o.disabled
             FROM sessions s JOIN operators o ON o.id = s.operator_id WHERE s.token_hash = ?1",
        )?
        .query_row(params![token_hash(token).to_vec()], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })
        .optional()?;
    let Some((id, operator_id, role, current_role, expires_ms, ended, name, disabled)) = row else {
        return Ok(Err(Dead::Unknown));
    };
    if let Some(why) = ended {
        return Ok(Err(Dead::Ended(why)));
    }
    if disabled {
        return Ok(Err(Dead::Disabled));
    }
    if role != current_role {
        return Ok(Err(Dead::RoleChanged));
    }
    if expires_ms <= now_ms {
        return Ok(Err(Dead::Expired));
    }
    let Some(role) = Role::parse(&role) else {
        return Ok(Err(Dead::RoleChanged));
    };
    Ok(Ok(Caller {
        session_id: id,
        operator_id,
        name,
        role,
        expires_ms,
    }))
}

/// End one session (if still open) and give its alarms back to the queue.
pub fn end(tx: &Transaction<'_>, session_id: i64, reason: &str, now_ms: i64) -> Result<usize, StoreError> {
    let n = tx.execute(
        "UPDATE sessions SET ended_ms = ?2, end_reason = ?3 WHERE id = ?1 AND ended_ms IS NULL",
        params![session_id, now_ms, reason],
    )?;
    release_alarms(tx, session_id, reason, now_ms)?;
    Ok(n)
}

/// End every open session of an operator (disabled, role changed). Returns how many.
pub fn end_for_operator(
    tx: &Transaction<'_>,
    operator_id: i64,
    reason: &str,
    now_ms: i64,
) -> Result<usize, StoreError> {
    let ids: Vec<i64> = tx
        .prepare("SELECT id FROM sessions WHERE operator_id = ?1 AND ended_ms IS NULL")?
        .query_map(params![operator_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &ids {
        end(tx, *id, reason, now_ms)?;
    }
    Ok(ids.len())
}

/// Record the end of every session that is over without being ended (expired, operator
/// disabled or role changed, e.g. by the CLI while the daemon runs) and release their alarms.
/// Returns how many ended.
pub fn sweep(tx: &Transaction<'_>, now_ms: i64) -> Result<usize, StoreError> {
    let over: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT s.id, CASE WHEN o.disabled THEN 'operator disabled'
                               WHEN o.role <> s.role THEN 'role changed'
                               ELSE 'expired' END
             FROM sessions s JOIN operators o ON o.id = s.operator_id
             WHERE s.ended_ms IS NULL AND (s.expires_ms <= ?1 OR o.disabled OR o.role <> s.role)",
        )?
        .query_map(params![now_ms], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for (id, why) in &over {
        end(tx, *id, why, now_ms)?;
    }
    Ok(over.len())
}

/// Give back to the queue every open alarm a session was handling: no owner, and in progress
/// becomes acknowledged (someone did look at it). Logged on each alarm.
pub fn release_alarms(tx: &Transaction<'_>, session_id: i64, reason: &str, now_ms: i64) -> Result<usize, StoreError> {
    let released: Vec<(i64, String)> = tx
        .prepare_cached("SELECT id, ifnull(owner, '') FROM alarms WHERE owner_session = ?1 AND state <> 'closed'")?
        .query_map(params![session_id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    tx.prepare_cached(
        "UPDATE alarms SET owner = NULL, owner_session = NULL,
                state = CASE WHEN state = 'in_progress' THEN 'acknowledged' ELSE state END
         WHERE owner_session = ?1 AND state <> 'closed'",
    )?
    .execute(params![session_id])?;
    for (id, who) in &released {
        alarms::log(
            tx,
            *id,
            now_ms,
            "system",
            "released",
            &format!("back in the queue: the session of {who} ended ({reason})"),
        )?;
    }
    Ok(released.len())
}
