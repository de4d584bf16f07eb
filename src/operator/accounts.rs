//! Operator accounts. Passwords are stored only as Argon2id PHC strings; a login fails the same
//! way for an unknown name, a wrong password, a disabled or a locked account, and repeated
//! failures lock the account for a while.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Role;
use crate::store::StoreError;

/// Consecutive failed logins before the account is locked.
pub const MAX_FAILED_LOGINS: i64 = 5;
/// How long a locked account stays locked.
pub const LOCK_MS: i64 = 15 * 60 * 1000;

/// An operator as listed (no password material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OperatorInfo {
    /// Opaque id.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Disabled.
    pub disabled: bool,
    /// Locked until (Unix ms), if locked.
    pub locked_until_ms: Option<i64>,
}

/// An authenticated operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Names are 1–64 characters of letters, digits, `.`, `-`, `_`.
    #[error("an operator name is 1 to 64 letters, digits, '.', '-' or '_'")]
    Name,
    /// Too short a password.
    #[error("a password needs at least 12 characters")]
    WeakPassword,
    /// The name is taken.
    #[error("an operator named {0} already exists")]
    Exists(String),
    /// No such operator.
    #[error("no operator named {0}")]
    NotFound(String),
    /// Hashing failed.
    #[error("password hashing failed")]
    Hash,
    /// Database.
    #[error("database error")]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for OperatorError {
    fn from(e: rusqlite::Error) -> Self {
        OperatorError::Store(e.into())
    }
}

fn hasher() -> argon2::Argon2<'static> {
    // Argon2id at the OWASP minimum (m=19 MiB, t=2, p=1): operator logins are rare.
    argon2::Argon2::default()
}

/// Hash a password to a PHC string.
pub fn hash_password(password: &str) -> Result<String, OperatorError> {
    use argon2::password_hash::PasswordHasher;
    hasher()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| OperatorError::Hash)
}

fn verify_password(password: &str, phc: &str) -> bool {
    use argon2::password_hash::PasswordVerifier;
    hasher().verify_password(password.as_bytes(), phc).is_ok()
}

/// A PHC string for a password nobody has, so an unknown name costs the same as a known one.
fn dummy_phc() -> &'static str {
    static D: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    D.get_or_init(|| hash_password("meldkamer dummy password for unknown names").unwrap_or_default())
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
}

/// Add an operator.
pub fn add(conn: &Connection, name: &str, role: Role, password: &str, now_ms: i64) -> Result<String, OperatorError> {
    if !valid_name(name) {
        return Err(OperatorError::Name);
    }
    if password.chars().count() < 12 {
        return Err(OperatorError::WeakPassword);
    }
    let exists: Option<i64> = conn
        .query_row("SELECT id FROM operators WHERE name = ?1", params![name], |r| r.get(0))
        .optional()?;
    if exists.is_some() {
        return Err(OperatorError::Exists(name.to_string()));
    }
    let phc = Zeroizing::new(hash_password(password)?);
    let id = crate::correlate::alarms::public_id();
    conn.execute(
        "INSERT INTO operators (public_id, name, role, password_phc, created_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![id, name, role.as_str(), phc.as_str(), now_ms],
    )?;
    Ok(id)
}

/// Disable (or re-enable) an operator.
pub fn set_disabled(conn: &Connection, name: &str, disabled: bool) -> Result<(), OperatorError> {
    let n = conn.execute(
        "UPDATE operators SET disabled = ?2 WHERE name = ?1",
        params![name, disabled],
    )?;
    if n == 0 {
        return Err(OperatorError::NotFound(name.to_string()));
    }
    Ok(())
}

/// Every operator.
pub fn list(conn: &Connection) -> Result<Vec<OperatorInfo>, OperatorError> {
    let mut stmt =
        conn.prepare("SELECT public_id, name, role, disabled, locked_until_ms FROM operators ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(OperatorInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            role: Role::parse(&r.get::<_, String>(2)?).unwrap_or(Role::Operator),
            disabled: r.get(3)?,
            locked_until_ms: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a login attempt found (computed outside the writer, recorded inside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Right password, usable account.
    Ok(Authenticated),
    /// Wrong password for an existing account (counts towards the lockout).
    WrongPassword {
        /// Row id.
        id: i64,
    },
    /// Unknown name, disabled or locked account (nothing to count).
    Refused,
}

/// Check a login. Always runs exactly one Argon2id verification.
pub fn check_login(conn: &Connection, name: &str, password: &str, now_ms: i64) -> Result<LoginCheck, OperatorError> {
    let row: Option<(i64, String, String, bool, Option<i64>)> = conn
        .query_row(
            "SELECT id, role, password_phc, disabled, locked_until_ms FROM operators WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((id, role, phc, disabled, locked_until)) = row else {
        let _ = verify_password(password, dummy_phc());
        return Ok(LoginCheck::Refused);
    };
    let phc = Zeroizing::new(phc);
    let ok = verify_password(password, &phc);
    if disabled || locked_until.is_some_and(|t| t > now_ms) {
        return Ok(LoginCheck::Refused);
    }
    if !ok {
        return Ok(LoginCheck::WrongPassword { id });
    }
    Ok(LoginCheck::Ok(Authenticated {
        id,
        name: name.to_string(),
        role: Role::parse(&role).unwrap_or(Role::Operator),
    }))
}

/// Record a login result: reset the failure count, or count a failure and lock at the limit.
/// Returns true if the account is now locked.
pub fn record_login(conn: &Connection, check: &LoginCheck, now_ms: i64) -> Result<bool, OperatorError> {
    match check {
        LoginCheck::Ok(a) => {
            conn.execute(
                "UPDATE operators SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
                params![a.id],
            )?;
            Ok(false)
        }
        LoginCheck::WrongPassword { id } => {
            let n: i64 = conn.query_row(
                "UPDATE operators SET failed_logins = failed_logins + 1 WHERE id = ?1 RETURNING failed_logins",
                params![id],
                |r| r.get(0),
            )?;
            if n >= MAX_FAILED_LOGINS {
                conn.execute(
                    "UPDATE operators SET locked_until_ms = ?2, failed_logins = 0 WHERE id = ?1",
                    params![id, now_ms + LOCK_MS],
                )?;
                return Ok(true);
            }
            Ok(false)
        }
        LoginCheck::Refused => Ok(false),
    }
}
