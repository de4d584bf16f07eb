//! Operator accounts. Passwords are stored only as Argon2id PHC strings; a login fails the same
//! way for an unknown name, a wrong password and a disabled account. Nothing locks an account
//! after failed logins (that let anyone who reached the port keep every operator out): failures
//! slow down the peer that makes them ([`super::login`]).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Role;
use crate::store::StoreError;

/// An operator as listed (no password material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct OperatorInfo {
    /// Opaque id.
    pub id: String,
    /// Login name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Disabled.
    pub disabled: bool,
    /// Failed logins since the last successful one.
    pub failed_logins: i64,
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

/// Disable (or re-enable) an operator. Disabling ends the operator's sessions at once (their
/// alarms go back to the queue). Returns how many sessions ended.
pub fn set_disabled(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    disabled: bool,
    now_ms: i64,
) -> Result<usize, OperatorError> {
    let id: Option<i64> = tx
        .query_row(
            "UPDATE operators SET disabled = ?2 WHERE name = ?1 RETURNING id",
            params![name, disabled],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Err(OperatorError::NotFound(name.to_string()));
    };
    if !disabled {
        return Ok(0);
    }
    Ok(super::sessions::end_for_operator(tx, id, "operator disabled", now_ms)?)
}

/// Change an operator's role. Ends the operator's sessions at once: a session carries the role
/// it was opened with. Returns how many sessions ended.
pub fn set_role(tx: &rusqlite::Transaction<'_>, name: &str, role: Role, now_ms: i64) -> Result<usize, OperatorError> {
    let id: Option<i64> = tx
        .query_row(
            "UPDATE operators SET role = ?2 WHERE name = ?1 RETURNING id",
            params![name, role.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Err(OperatorError::NotFound(name.to_string()));
    };
    Ok(super::sessions::end_for_operator(tx, id, "role changed", now_ms)?)
}

/// Every operator.
pub fn list(conn: &Connection) -> Result<Vec<OperatorInfo>, OperatorError> {
    let mut stmt =
        conn.prepare("SELECT public_id, name, role, disabled, failed_logins FROM operators ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        Ok(OperatorInfo {
            id: r.get(0)?,
            name: r.get(1)?,
            role: Role::parse(&r.get::<_, String>(2)?).unwrap_or(Role::Operator),
            disabled: r.get(3)?,
            failed_logins: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// What a login attempt found (computed outside the writer, recorded inside it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Right password, usable account.
    Ok(Authenticated),
    /// Wrong password for an existing account.
    WrongPassword {
        /// Row id.
        id: i64,
    },
    /// A disabled account (right or wrong password alike).
    Disabled {
        /// Row id.
        id: i64,
    },
    /// No operator of that name.
    Unknown,
}

/// Check a login. Always runs exactly one Argon2id verification, whether the name exists or
/// not, so neither the answer nor its time tells which names exist.
pub fn check_login(conn: &Connection, name: &str, password: &str) -> Result<LoginCheck, OperatorError> {
    let row: Option<(i64, String, String, bool)> = conn
        .query_row(
            "SELECT id, role, password_phc, disabled FROM operators WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((id, role, phc, disabled)) = row else {
        let _ = verify_password(password, dummy_phc());
        return Ok(LoginCheck::Unknown);
    };
    let phc = Zeroizing::new(phc);
    let ok = verify_password(password, &phc);
    if disabled {
        return Ok(LoginCheck::Disabled { id });
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

/// Record a login result: reset the failure count, or count a failure (shown by `operator
/// list`; it locks nothing).
pub fn record_login(conn: &Connection, check: &LoginCheck) -> Result<(), StoreError> {
    match check {
        LoginCheck::Ok(a) => {
            conn.execute(
                "UPDATE operators SET failed_logins = 0, locked_until_ms = NULL WHERE id = ?1",
                params![a.id],
            )?;
        }
        LoginCheck::WrongPassword { id } | LoginCheck::Disabled { id } => {
            conn.execute(
                "UPDATE operators SET failed_logins = failed_logins + 1 WHERE id = ?1",
                params![id],
            )?;
        }
        LoginCheck::Unknown => {}
    }
    Ok(())
}

/// Whether a name could be an operator's at all (else it is not looked up, and a login with it
/// costs no password check).
pub fn plausible_name(name: &str) -> bool {
    valid_name(name)
}
