//! The operator API messages: one JSON object per line in each direction.
//!
//! ```text
//! → {"id":1,"op":"login","name":"alice","password":"…"}
//! ← {"id":1,"ok":true,"result":{"token":"…","role":"operator","name":"alice","expires":"…"}}
//! → {"id":2,"token":"…","op":"queue"}
//! ← {"id":2,"ok":true,"result":{"alarms":[…]}}
//! → {"id":3,"token":"…","op":"subscribe"}
//! ← {"push":"queue","changed":[…],"closed":[…]}            (whenever the queue changes)
//! ← {"id":9,"ok":false,"error":{"kind":"forbidden","message":"…"}}
//! ```
//!
//! Identifiers are opaque random values. The `verify` request carries a candidate code in; no
//! response ever carries one out.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A request. `id` is echoed in the response; `token` is required for everything but login.
#[derive(Deserialize)]
pub struct Envelope {
    /// Echoed.
    #[serde(default)]
    pub id: Option<u64>,
    /// Session token from `login`.
    #[serde(default)]
    pub token: Option<String>,
    /// The operation.
    #[serde(flatten)]
    pub request: Request,
}

/// A secret typed by a person (password or phone code): zeroized on drop, never printed.
#[derive(Deserialize, Default)]
#[serde(transparent)]
pub struct Typed(String);

impl Typed {
    /// The characters, for hashing only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Typed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Typed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The operations.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Log in.
    Login {
        /// Operator name.
        name: String,
        /// Password.
        password: Typed,
    },
    /// End the session.
    Logout,
    /// Who am I.
    Whoami,
    /// Open alarms by priority, then age (supervisors also see the supervisor queue).
    Queue,
    /// One alarm in full.
    Alarm {
        /// Alarm id.
        alarm: String,
    },
    /// new → acknowledged.
    Acknowledge {
        /// Alarm id.
        alarm: String,
    },
    /// → in progress.
    Start {
        /// Alarm id.
        alarm: String,
    },
    /// Add a note.
    Note {
        /// Alarm id.
        alarm: String,
        /// Text.
        text: String,
    },
    /// Tick (or untick) a procedure step.
    Step {
        /// Alarm id.
        alarm: String,
        /// Step number (1-based).
        step: u32,
        /// Done.
        done: bool,
    },
    /// Verify a caller's phone cancellation code on an open alarm.
    Verify {
        /// Alarm id.
        alarm: String,
        /// Contact id.
        contact: String,
        /// What the caller said.
        code: Typed,
    },
    /// Close with a disposition.
    Close {
        /// Alarm id.
        alarm: String,
        /// Disposition (`cancelled_by_customer`, `dispatched`, …).
        disposition: String,
    },
    /// Accounts whose reporting deadline has passed.
    Supervision,
    /// Past events of an account.
    Search {
        /// Account number.
        account: String,
        /// At most this many (default 100, max 1000).
        #[serde(default)]
        limit: Option<u32>,
    },
    /// Push queue changes on this connection from now on.
    Subscribe,
    /// Supervisor: reset a contact's phone code (it must be set again).
    ResetCode {
        /// Contact id.
        contact: String,
    },
    /// Admin: list operators.
    Operators,
}

impl Request {
    /// Stable name for audit and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Login { .. } => "login",
            Request::Logout => "logout",
            Request::Whoami => "whoami",
            Request::Queue => "queue",
            Request::Alarm { .. } => "alarm",
            Request::Acknowledge { .. } => "acknowledge",
            Request::Start { .. } => "start",
            Request::Note { .. } => "note",
            Request::Step { .. } => "step",
            Request::Verify { .. } => "verify",
            Request::Close { .. } => "close",
            Request::Supervision => "supervision",
            Request::Search { .. } => "search",
            Request::Subscribe => "subscribe",
            Request::ResetCode { .. } => "reset_code",
            Request::Operators => "operators",
        }
    }

    /// The least role allowed to make this request.
    pub fn min_role(&self) -> super::Role {
        use super::Role::*;
        match self {
            Request::ResetCode { .. } => Supervisor,
            Request::Operators => Admin,
            _ => Operator,
        }
    }
}

/// Error classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No or expired session, or a failed login.
    Unauthorized,
    /// The role does not allow this.
    Forbidden,
    /// No such object.
    NotFound,
    /// Malformed request.
    Invalid,
    /// Not possible in the current state.
    Conflict,
    /// Our fault.
    Internal,
}

/// An error response body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    /// Class.
    pub kind: ErrorKind,
    /// Human message (never a secret).
    pub message: String,
}

impl ApiError {
    /// Build one.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }
}

/// A response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// The request id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Success.
    pub ok: bool,
    /// Result on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}
