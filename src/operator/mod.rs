//! The operator side: operator accounts, the authenticated JSON-lines API the console talks to
//! (over a Unix socket, or TCP with TLS), and the read-side queries behind it.
//!
//! | module | what |
//! |---|---|
//! | [`accounts`] | operators: add, disable, list, password check with lockout |
//! | [`api`] | request and response messages |
//! | [`queries`] | the alarm queue, one alarm in full, supervision view, event search |
//! | [`listen`] | the listeners: Unix socket and TLS |
//! | [`server`] | sessions, authorisation, dispatch, queue subscription |
//!
//! Every request is authorised by role and every action is audited with the operator's name.
//! Object identifiers are random 128-bit values, never row ids. Nothing can reveal a code.

pub mod accounts;
pub mod api;
pub mod listen;
pub mod queries;
pub mod server;

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
