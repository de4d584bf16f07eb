//! The operator side: operator accounts and sessions, the authenticated JSON-lines API the
//! console talks to (over a Unix socket, or TCP with TLS), and the read-side queries behind it.
//!
//! | module | what |
//! |---|---|
//! | [`protocol`] | typed requests, results and pushes, shared with the console; each request's role |
//! | [`authz`] | the one authorisation function every request passes (role × queue × object × state) |
//! | [`accounts`] | operators: add, disable, role, list, password check |
//! | [`sessions`] | sessions in the database: lookup, end, sweep; alarms released when a session ends |
//! | [`login`] | logins under attack: bounded hashing, per-peer delays, supervisor alerts |
//! | [`wire`] | the line framing, wiping each request line once parsed |
//! | [`queries`] | the alarm queue, one alarm in full, supervision view, search |
//! | [`listen`] | the listeners: Unix socket and TLS, through the one accept path |
//! | [`server`] | connections, dispatch, audit, queue subscription, the sweeper |
//!
//! Every action and every refusal is audited with the operator's name. Object identifiers are
//! random 128-bit values, never row ids, and never enough on their own: see [`authz`]. Nothing
//! can reveal a code.

pub mod accounts;
pub mod authz;
pub mod listen;
pub mod login;
pub mod protocol;
pub mod queries;
pub mod server;
pub mod sessions;
pub mod wire;

use serde::{Deserialize, Serialize};

/// What an operator may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Handles alarms.
    Operator,
    /// Also: the supervisor queue, code resets, unlocks.
    Supervisor,
    /// Also: operator accounts.
    Admin,
}

impl Role {
    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }

    /// Parse the stable name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "operator" => Some(Role::Operator),
            "supervisor" => Some(Role::Supervisor),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}
