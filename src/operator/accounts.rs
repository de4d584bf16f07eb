//! Operator accounts. Passwords are stored only as Argon2id PHC strings; a login fails the same
//! way for an unknown name, a wrong password and a disabled account. Nothing locks an account
//! after failed logins (that let anyone who reached the port keep every operator out): failures
//! slow down the peer that makes them ([`super::login`]).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use zeroize::Zeroizing;

use super::Role;
use crate::store::StoreError;
use crate::verify::hash::{Check, Hasher, NewVerifier, Stored};

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
    /// A new verifier for the password, when the stored one was made without the pepper or
    /// with a retired one (stored by [`record_login`]).
    pub rehash: Option<NewVerifier>,
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

/// A PHC string for a password nobody has (unkeyed, at the password cost), checked for an
/// unknown name so that it costs the same as a known one.
fn dummy_phc() -> &'static str {
    static D: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    D.get_or_init(|| {
        use argon2::password_hash::PasswordHasher;
        argon2::Argon2::default()
            .hash_password(b"meldkamer dummy password for unknown names")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// A password's verifier, keyed with the pepper (via the codes' hasher, [`Hasher::hash_password`]).
fn verifier(hasher: &Hasher, password: &str) -> Result<(Zeroizing<String>, String), OperatorError> {
    if password.chars().count() < 12 {
        return Err(OperatorError::WeakPassword);
    }
    let v = hasher.hash_password(password).map_err(|_| OperatorError::Hash)?;
    Ok((Zeroizing::new(v.phc), v.pepper_id))
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || ".-_".contains(c))
}

/// Add an operator. The password is stored only as a peppered Argon2id verifier.
pub fn add(
    conn: &Connection,
    hasher: &Hasher,
    name: &str,
    role: Role,
    password: &str,
    now_ms: i64,
) -> Result<String, OperatorError> {
    if !valid_name(name) {
        return Err(OperatorError::Name);
    }
    let exists: Option<i64> = conn
        .query_row("SELECT id FROM operators WHERE name = ?1", params![name], |r| r.get(0))
        .optional()?;
    if exists.is_some() {
        return Err(OperatorError::Exists(name.to_string()));
    }
    let (phc, pepper_id) = verifier(hasher, password)?;
    let id = crate::correlate::alarms::public_id();
    conn.execute(
        "INSERT INTO operators (public_id, name, role, password_phc, pepper_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, name, role.as_str(), phc.as_str(), pepper_id, now_ms],
    )?;
    Ok(id)
}

/// Give an operator a new password (a forgotten one, or after the pepper was lost). Ends the
/// operator's sessions: whoever knew the old password is logged out. Returns how many ended.
pub fn set_password(
    tx: &rusqlite::Transaction<'_>,
    hasher: &Hasher,
    name: &str,
    password: &str,
    now_ms: i64,
) -> Result<usize, OperatorError> {
    let (phc, pepper_id) = verifier(hasher, password)?;
    let id: Option<i64> = tx
        .query_row(
            "UPDATE operators SET password_phc = ?2, pepper_id = ?3, failed_logins = 0 WHERE name = ?1 RETURNING id",
            params![name, phc.as_str(), pepper_id],
            |r| r.get(0),
        )
        .optional()?;
    let Some(id) = id else {
        return Err(OperatorError::NotFound(name.to_string()));
    };
    Ok(super::sessions::end_for_operator(tx, id, "password changed", now_ms)?)
}

/// Operators whose password verifier needs a pepper that is not loaded (they cannot log in
/// until `meldkamer operator password NAME`).
pub fn unusable_passwords(conn: &Connection, hasher: &Hasher) -> Result<Vec<String>, OperatorError> {
    let rows: Vec<(String, String)> = conn
        .prepare("SELECT name, pepper_id FROM operators WHERE pepper_id IS NOT NULL AND NOT disabled ORDER BY name")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    Ok(rows
        .into_iter()
        .filter(|(_, p)| !hasher.knows_pepper(p))
        .map(|(n, _)| n)
        .collect())
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
    /// The stored verifier needs a pepper that is not loaded.
    Unusable {
        /// Row id.
        id: i64,
    },
}

/// Check a login. Always runs exactly one Argon2id verification, whether the name exists or
/// not, so neither the answer nor its time tells which names exist.
pub fn check_login(
    conn: &Connection,
    hasher: &Hasher,
    name: &str,
    password: &str,
) -> Result<LoginCheck, OperatorError> {
    let row: Option<(i64, String, String, Option<String>, bool)> = conn
        .query_row(
            "SELECT id, role, password_phc, pepper_id, disabled FROM operators WHERE name = ?1",
            params![name],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .optional()?;
    let Some((id, role, phc, pepper_id, disabled)) = row else {
        let _ = hasher.check_password(
            &Stored {
                phc: dummy_phc().to_string(),
                pepper_id: String::new(),
            },
            password,
        );
        return Ok(LoginCheck::Unknown);
    };
    let stored = Stored {
        phc,
        pepper_id: pepper_id.unwrap_or_default(),
    };
    let check = hasher.check_password(&stored, password);
    drop(Zeroizing::new(stored.phc));
    if disabled {
        return Ok(LoginCheck::Disabled { id });
    }
    let rehash = match check {
        Check::Match { rehash: true } => Some(hasher.hash_password(password).map_err(|_| OperatorError::Hash)?),
        Check::Match { rehash: false } => None,
        Check::Unusable => return Ok(LoginCheck::Unusable { id }),
        Check::NoMatch | Check::Absent => return Ok(LoginCheck::WrongPassword { id }),
    };
    Ok(LoginCheck::Ok(Authenticated {
        id,
        name: name.to_string(),
        role: Role::parse(&role).unwrap_or(Role::Operator),
        rehash,
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
            if let Some(v) = &a.rehash {
                conn.execute(
                    "UPDATE operators SET password_phc = ?2, pepper_id = ?3 WHERE id = ?1",
                    params![a.id, v.phc, v.pepper_id],
                )?;
            }
        }
        LoginCheck::WrongPassword { id } | LoginCheck::Disabled { id } | LoginCheck::Unusable { id } => {
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
