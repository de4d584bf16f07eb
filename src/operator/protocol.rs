//! The operator API protocol, shared by the server and the console: one JSON object per line in
//! each direction, every request and every result a Rust type, so a renamed field fails to
//! compile on both sides rather than at run time.
//!
//! ```text
//! → {"id":1,"op":"login","name":"alice","password":"…"}
//! ← {"id":1,"ok":true,"result":{"token":"…","role":"operator","name":"alice","expires":"…",…}}
//! → {"id":2,"token":"…","op":"queue"}
//! ← {"id":2,"ok":true,"result":{"alarms":[…]}}
//! → {"id":3,"token":"…","op":"subscribe"}
//! ← {"push":"queue","changed":[…]}                           (whenever the queue changes)
//! ← {"push":"session_ended","reason":"…"}                    (logout elsewhere, expiry, disable)
//! ← {"id":9,"ok":false,"error":{"kind":"forbidden","message":"…"}}
//! ```
//!
//! Each request's result type is fixed by [`Op::decode`]; the server answers with a [`Reply`]
//! of that type ([`Reply::answers`] checks it, and a test holds the two together). Each request's
//! least role is stated in [`Request::access`], an exhaustive match: a new request does not
//! compile until someone decides who may make it. What a request may do to the object it
//! names is decided by [`super::authz::authorize`].
//!
//! Identifiers are opaque random values. The `verify` request carries a candidate code in and
//! `login` a password; no response ever carries either out.

use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use super::Role;
use super::queries::{AlarmDetail, AlarmSummary, EventRow, OverdueAccount};
use crate::correlate::alarms::Disposition;

/// A request line. `id` is echoed in the response; `token` is required for everything but
/// login. A field that the request does not have is an error (a misspelt `disposition` must
/// not close an alarm with a default).
#[derive(Debug, Serialize)]
pub struct Envelope {
    /// Echoed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Session token from `login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The operation.
    #[serde(flatten)]
    pub request: Request,
}

impl<'de> Deserialize<'de> for Envelope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Envelope, D::Error> {
        use serde::de::Error;
        // `#[serde(flatten)]` cannot refuse unknown fields, so the line is read as a map, the
        // envelope's own fields are taken out and the rest must be exactly one request. The
        // map holds copies of what was typed: its strings are wiped before it is dropped.
        let mut v = serde_json::Value::deserialize(d)?;
        let parsed = (|| {
            let obj = v
                .as_object_mut()
                .ok_or_else(|| D::Error::custom("a request is a JSON object"))?;
            let id = match obj.remove("id") {
                None | Some(serde_json::Value::Null) => None,
                Some(x) => Some(x.as_u64().ok_or_else(|| D::Error::custom("id: a number"))?),
            };
            let token = match obj.remove("token") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(t)) => Some(t),
                Some(_) => return Err(D::Error::custom("token: a string")),
            };
            let request = Request::deserialize(&v).map_err(D::Error::custom)?;
            // Serde lets a request without fields (`queue`) carry any: every key given must be
            // one the request has (or null, for an optional field left out).
            let mut back = serde_json::to_value(&request).map_err(D::Error::custom)?;
            let unknown = match (&v, &back) {
                (serde_json::Value::Object(given), serde_json::Value::Object(known)) => given
                    .iter()
                    .find(|(k, x)| !known.contains_key(*k) && !x.is_null())
                    .map(|(k, _)| k.clone()),
                _ => None,
            };
            wipe(&mut back);
            if let Some(k) = unknown {
                return Err(D::Error::custom(format!("unknown field `{k}`")));
            }
            Ok(Envelope { id, token, request })
        })();
        wipe(&mut v);
        parsed
    }
}

/// Overwrite every string (and key) of a JSON value with zeros.
fn wipe(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(a) => a.iter_mut().for_each(wipe),
        serde_json::Value::Object(o) => {
            let map = std::mem::take(o);
            for (mut k, mut x) in map {
                k.zeroize();
                wipe(&mut x);
            }
        }
        _ => {}
    }
}

/// A secret typed by a person (password or phone code): zeroized on drop, never printed.
/// It serialises only because the console must send it to the server; nothing else writes a
/// request out.
#[derive(Deserialize, Serialize, Default)]
#[serde(transparent)]
pub struct Typed(String);

impl Typed {
    /// Wrap what was typed.
    pub fn new(s: &str) -> Typed {
        Typed(s.to_string())
    }

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

/// What the caller on the phone said when a contact was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    /// Answered (the conversation is in a note).
    Answered,
    /// Rang out.
    NoAnswer,
    /// Engaged.
    Busy,
    /// A message was left.
    Voicemail,
    /// Not this person's number.
    WrongNumber,
}

impl CallOutcome {
    /// Every outcome, in the order the console offers them.
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Answered,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::Voicemail,
        CallOutcome::WrongNumber,
    ];

    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Voicemail => "voicemail",
            CallOutcome::WrongNumber => "wrong_number",
        }
    }

    /// Parse the stable name.
    pub fn parse(s: &str) -> Option<CallOutcome> {
        CallOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// For people.
    pub fn label(&self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Voicemail => "voicemail",
            CallOutcome::WrongNumber => "wrong number",
        }
    }
}

/// The operations.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Log in.
    Login {
        /// Operator name.
        name: String,
        /// Password.
        password: Typed,
    },
    /// End the session (the alarms it handled go back to the queue).
    Logout,
    /// Who am I.
    Whoami,
    /// Open alarms in queue order (supervisors also see the supervisor queue).
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
    /// Take the alarm: in progress, with the caller as its one handler.
    Start {
        /// Alarm id.
        alarm: String,
    },
    /// Supervisor: take an alarm another operator handles, with a reason.
    Takeover {
        /// Alarm id.
        alarm: String,
        /// Why (audited).
        reason: String,
    },
    /// Give a taken alarm back to the queue.
    Release {
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
    /// Log a call to a contact and how it went.
    Call {
        /// Alarm id.
        alarm: String,
        /// Contact id.
        contact: String,
        /// The number dialled, if the contact has several.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        phone: Option<String>,
        /// How it went.
        outcome: CallOutcome,
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
    /// Put the alarm aside until a time: it leaves the queue and comes back by itself.
    Recall {
        /// Alarm id.
        alarm: String,
        /// In this many minutes (1 to 1440).
        minutes: u32,
        /// What to do then.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// Close with a disposition.
    Close {
        /// Alarm id.
        alarm: String,
        /// Disposition.
        disposition: Disposition,
        /// A note (required for `other` and `false_alarm`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
        /// Why mandatory procedure steps were not done (required while some are open).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        skipped_reason: Option<String>,
    },
    /// Supervisor: acknowledge several alarms (a mass event) with one reason, audited per alarm.
    BulkAcknowledge {
        /// Alarm ids.
        alarms: Vec<String>,
        /// Why.
        reason: String,
    },
    /// Supervisor: close several alarms with one disposition and reason, audited per alarm.
    /// Life-safety alarms are never closed in bulk.
    BulkClose {
        /// Alarm ids.
        alarms: Vec<String>,
        /// Disposition.
        disposition: Disposition,
        /// Why.
        reason: String,
    },
    /// Accounts whose reporting deadline has passed.
    Supervision,
    /// Customers, sites, alarms and events matching a text (account, reference, name, address).
    Search {
        /// What to look for.
        query: String,
        /// At most this many of each (default 100, max 1000).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Push queue changes on this connection from now on.
    Subscribe,
    /// Leave a note for the next shift.
    HandoverAdd {
        /// Text.
        text: String,
    },
    /// The handover notes of the last 24 hours.
    Handovers,
    /// Supervisor: reset a contact's phone code (it must be set again).
    ResetCode {
        /// Contact id.
        contact: String,
    },
    /// Admin: list operators.
    Operators,
    /// The schedule tab: sites late now, and the sites and accounts on test or out of service.
    Schedules,
    /// A one-off extension of a site's schedule ("we stay until 23:30 tonight"): the site may be
    /// open until then; ends by itself.
    Extend {
        /// Site reference.
        site: String,
        /// Until, Unix ms (after now, within 24 hours); or `until_local`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<i64>,
        /// Until `HH:MM` in the site's time zone, the next such time; or `until_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_local: Option<String>,
        /// What the caller said (audited).
        reason: String,
    },
    /// Supervisor: put a site, or an account number, on test or out of service until a time.
    Service {
        /// Site reference (or `account`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        /// Account number (or `site`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
        /// `test` or `out_of_service`.
        mode: crate::correlate::service::Mode,
        /// Until, Unix ms; or `minutes`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<i64>,
        /// For this many minutes from now; or `until_ms`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        minutes: Option<u32>,
        /// Why (audited).
        reason: String,
    },
    /// Supervisor: end the test or out-of-service period of a site or account now.
    ServiceEnd {
        /// Site reference (or `account`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        site: Option<String>,
        /// Account number (or `site`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<String>,
    },
}

/// Who may make a request at all (before the object it names is looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the API (only `login`).
    Anyone,
    /// A session of at least this role.
    Role(Role),
}

/// The name of each request, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Op {
    Login,
    Logout,
    Whoami,
    Queue,
    Alarm,
    Acknowledge,
    Start,
    Takeover,
    Release,
    Note,
    Step,
    Call,
    Verify,
    Recall,
    Close,
    BulkAcknowledge,
    BulkClose,
    Supervision,
    Search,
    Subscribe,
    HandoverAdd,
    Handovers,
    ResetCode,
    Operators,
    Schedules,
    Extend,
    Service,
    ServiceEnd,
}

impl Request {
    /// Which request.
    pub fn op(&self) -> Op {
        match self {
            Request::Login { .. } => Op::Login,
            Request::Logout => Op::Logout,
            Request::Whoami => Op::Whoami,
            Request::Queue => Op::Queue,
            Request::Alarm { .. } => Op::Alarm,
            Request::Acknowledge { .. } => Op::Acknowledge,
            Request::Start { .. } => Op::Start,
            Request::Takeover { .. } => Op::Takeover,
            Request::Release { .. } => Op::Release,
            Request::Note { .. } => Op::Note,
            Request::Step { .. } => Op::Step,
            Request::Call { .. } => Op::Call,
            Request::Verify { .. } => Op::Verify,
            Request::Recall { .. } => Op::Recall,
            Request::Close { .. } => Op::Close,
            Request::BulkAcknowledge { .. } => Op::BulkAcknowledge,
            Request::BulkClose { .. } => Op::BulkClose,
            Request::Supervision => Op::Supervision,
            Request::Search { .. } => Op::Search,
            Request::Subscribe => Op::Subscribe,
            Request::HandoverAdd { .. } => Op::HandoverAdd,
            Request::Handovers => Op::Handovers,
            Request::ResetCode { .. } => Op::ResetCode,
            Request::Operators => Op::Operators,
            Request::Schedules => Op::Schedules,
            Request::Extend { .. } => Op::Extend,
            Request::Service { .. } => Op::Service,
            Request::ServiceEnd { .. } => Op::ServiceEnd,
        }
    }

    /// Stable name for audit and logs.
    pub fn name(&self) -> &'static str {
        self.op().as_str()
    }

    /// The alarm this request names, if it names one.
    pub fn alarm(&self) -> Option<&str> {
        match self {
            Request::Alarm { alarm }
            | Request::Acknowledge { alarm }
            | Request::Start { alarm }
            | Request::Takeover { alarm, .. }
            | Request::Release { alarm }
            | Request::Note { alarm, .. }
            | Request::Step { alarm, .. }
            | Request::Call { alarm, .. }
            | Request::Verify { alarm, .. }
            | Request::Recall { alarm, .. }
            | Request::Close { alarm, .. } => Some(alarm),
            Request::Login { .. }
            | Request::Logout
            | Request::Whoami
            | Request::Queue
            | Request::BulkAcknowledge { .. }
            | Request::BulkClose { .. }
            | Request::Supervision
            | Request::Search { .. }
            | Request::Subscribe
            | Request::HandoverAdd { .. }
            | Request::Handovers
            | Request::ResetCode { .. }
            | Request::Operators
            | Request::Schedules
            | Request::Extend { .. }
            | Request::Service { .. }
            | Request::ServiceEnd { .. } => None,
        }
    }

    /// The site (by reference) or account (by number) this request names, if it names one:
    /// authorised against it by [`super::authz::authorize_target`].
    pub fn target(&self) -> Option<(Option<&str>, Option<&str>)> {
        match self {
            Request::Extend { site, .. } => Some((Some(site), None)),
            Request::Service { site, account, .. } | Request::ServiceEnd { site, account } => {
                Some((site.as_deref(), account.as_deref()))
            }
            _ => None,
        }
    }

    /// Who may make this request.
    pub fn access(&self) -> Access {
        self.op().access()
    }
}

impl Op {
    /// Every request name.
    pub const ALL: [Op; 28] = [
        Op::Login,
        Op::Logout,
        Op::Whoami,
        Op::Queue,
        Op::Alarm,
        Op::Acknowledge,
        Op::Start,
        Op::Takeover,
        Op::Release,
        Op::Note,
        Op::Step,
        Op::Call,
        Op::Verify,
        Op::Recall,
        Op::Close,
        Op::BulkAcknowledge,
        Op::BulkClose,
        Op::Supervision,
        Op::Search,
        Op::Subscribe,
        Op::HandoverAdd,
        Op::Handovers,
        Op::ResetCode,
        Op::Operators,
        Op::Schedules,
        Op::Extend,
        Op::Service,
        Op::ServiceEnd,
    ];

    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Logout => "logout",
            Op::Whoami => "whoami",
            Op::Queue => "queue",
            Op::Alarm => "alarm",
            Op::Acknowledge => "acknowledge",
            Op::Start => "start",
            Op::Takeover => "takeover",
            Op::Release => "release",
            Op::Note => "note",
            Op::Step => "step",
            Op::Call => "call",
            Op::Verify => "verify",
            Op::Recall => "recall",
            Op::Close => "close",
            Op::BulkAcknowledge => "bulk_acknowledge",
            Op::BulkClose => "bulk_close",
            Op::Supervision => "supervision",
            Op::Search => "search",
            Op::Subscribe => "subscribe",
            Op::HandoverAdd => "handover_add",
            Op::Handovers => "handovers",
            Op::ResetCode => "reset_code",
            Op::Operators => "operators",
            Op::Schedules => "schedules",
            Op::Extend => "extend",
            Op::Service => "service",
            Op::ServiceEnd => "service_end",
        }
    }

    /// The least role for each request. No default arm: a new request must be placed here.
    pub fn access(&self) -> Access {
        use Role::*;
        match self {
            Op::Login => Access::Anyone,
            Op::Logout
            | Op::Whoami
            | Op::Queue
            | Op::Alarm
            | Op::Acknowledge
            | Op::Start
            | Op::Release
            | Op::Note
            | Op::Step
            | Op::Call
            | Op::Verify
            | Op::Recall
            | Op::Close
            | Op::Supervision
            | Op::Search
            | Op::Subscribe
            | Op::HandoverAdd
            | Op::Handovers
            | Op::Schedules
            | Op::Extend => Access::Role(Operator),
            Op::Takeover | Op::BulkAcknowledge | Op::BulkClose | Op::ResetCode | Op::Service | Op::ServiceEnd => {
                Access::Role(Supervisor)
            }
            Op::Operators => Access::Role(Admin),
        }
    }

    /// Read a result of this request into its type.
    pub fn decode(&self, v: serde_json::Value) -> Result<Reply, serde_json::Error> {
        use serde_json::from_value as from;
        Ok(match self {
            Op::Login => Reply::Login(from(v)?),
            Op::Whoami => Reply::Whoami(from(v)?),
            Op::Queue => Reply::Queue(from(v)?),
            Op::Alarm => Reply::Alarm(Box::new(from(v)?)),
            Op::Logout
            | Op::Acknowledge
            | Op::Start
            | Op::Takeover
            | Op::Release
            | Op::Note
            | Op::Step
            | Op::Call
            | Op::Recall
            | Op::Close
            | Op::HandoverAdd
            | Op::ResetCode
            | Op::Extend
            | Op::Service
            | Op::ServiceEnd => Reply::Done(from(v)?),
            Op::Verify => Reply::Verify(from(v)?),
            Op::BulkAcknowledge | Op::BulkClose => Reply::Bulk(from(v)?),
            Op::Supervision => Reply::Supervision(from(v)?),
            Op::Search => Reply::Search(from(v)?),
            Op::Subscribe => Reply::Subscribed(from(v)?),
            Op::Handovers => Reply::Handovers(from(v)?),
            Op::Operators => Reply::Operators(from(v)?),
            Op::Schedules => Reply::Schedules(from(v)?),
        })
    }
}

/// A handover note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverNote {
    /// Written, Unix ms.
    pub at_ms: i64,
    /// By.
    pub author: String,
    /// Text.
    pub text: String,
}

/// `login`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginResult {
    /// Session token (send it with every request).
    pub token: String,
    /// Operator name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Expiry (RFC 3339).
    pub expires: String,
    /// Handover notes of the last 24 hours, newest first.
    #[serde(default)]
    pub handover: Vec<HandoverNote>,
}

/// `whoami`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhoamiResult {
    /// Operator name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Expiry (RFC 3339).
    pub expires: String,
}

/// `queue`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueResult {
    /// Open alarms in queue order (put-aside ones last, with their recall time).
    pub alarms: Vec<AlarmSummary>,
}

/// An action done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// Which action.
    pub done: Op,
}

/// How a verification went, as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOutcome {
    /// Accepted.
    Accepted,
    /// The duress code: say "thank you", hang up, dispatch.
    Duress,
    /// Not verified: handle the alarm as real.
    Rejected,
    /// Phone cancellation is locked for this customer: call back a registered number.
    Locked,
    /// The code was invalidated: call back a registered number.
    Invalidated,
}

/// `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyResult {
    /// The outcome.
    pub result: VerifyOutcome,
    /// After a rejection: wrong codes left before phone cancellation locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts_left: Option<u32>,
}

/// `bulk_acknowledge`, `bulk_close`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkResult {
    /// Alarms done.
    pub done: Vec<String>,
    /// Alarms left alone, with why.
    pub skipped: Vec<(String, String)>,
}

/// `supervision`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupervisionResult {
    /// Overdue account paths, longest overdue first.
    pub overdue: Vec<OverdueAccount>,
}

/// A customer site found by a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteHit {
    /// Customer reference.
    pub customer_ref: String,
    /// Customer name.
    pub customer_name: String,
    /// Site reference.
    pub site_ref: String,
    /// Site name and address.
    pub site: String,
    /// Its account numbers.
    pub accounts: Vec<String>,
}

/// `search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    /// Matching sites.
    pub sites: Vec<SiteHit>,
    /// Matching alarms, open and closed, newest first.
    pub alarms: Vec<AlarmSummary>,
    /// Events of a matching account, newest first.
    pub events: Vec<EventRow>,
}

/// `subscribe`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// Always true.
    pub subscribed: bool,
}

/// `handovers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoversResult {
    /// Newest first.
    pub notes: Vec<HandoverNote>,
}

/// `operators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorsResult {
    /// Every operator.
    pub operators: Vec<super::accounts::OperatorInfo>,
}

/// A site whose schedule is not kept now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LateSite {
    /// Site reference.
    pub site_ref: String,
    /// Site name and address.
    pub site: String,
    /// The kind (its category): `late_to_close`, `unexpected_opening`, `late_to_open`, `early_close`.
    pub kind: String,
    /// Since, Unix ms.
    pub since_ms: i64,
    /// The alarm it went to (its own, or the site's alarm it joined), while open.
    pub alarm: Option<String>,
}

/// `schedules`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulesResult {
    /// Sites late now (or opened outside their hours), longest first.
    pub late: Vec<LateSite>,
    /// Sites and accounts on test or out of service, and tests ended in the last day.
    pub periods: Vec<crate::correlate::service::PeriodView>,
}

/// A result, by request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// `login`.
    Login(LoginResult),
    /// `whoami`.
    Whoami(WhoamiResult),
    /// `queue`.
    Queue(QueueResult),
    /// `alarm`.
    Alarm(Box<AlarmDetail>),
    /// An action.
    Done(Done),
    /// `verify`.
    Verify(VerifyResult),
    /// Bulk actions.
    Bulk(BulkResult),
    /// `supervision`.
    Supervision(SupervisionResult),
    /// `search`.
    Search(SearchResult),
    /// `subscribe`.
    Subscribed(Subscribed),
    /// `handovers`.
    Handovers(HandoversResult),
    /// `operators`.
    Operators(OperatorsResult),
    /// `schedules`.
    Schedules(SchedulesResult),
}

impl Reply {
    /// Whether this is the result type of `op` ([`Op::decode`] reads it back as such).
    pub fn answers(&self, op: Op) -> bool {
        let v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        match op.decode(v) {
            Ok(back) => std::mem::discriminant(&back) == std::mem::discriminant(self),
            Err(_) => false,
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
    /// No such object (or not one the caller may see).
    NotFound,
    /// Malformed request.
    Invalid,
    /// Not possible in the current state (closed, handled by someone else, a missing factor).
    Conflict,
    /// Too many attempts: wait, or ask a supervisor.
    RateLimited,
    /// Our fault.
    Internal,
}

impl ErrorKind {
    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Conflict => "conflict",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error response body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    /// Result on success (its type is the request's, [`Op::decode`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Error on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
}

/// What the server sends without being asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "push", rename_all = "snake_case")]
pub enum Push {
    /// Alarms that changed (closed ones included, so a client can drop them).
    Queue {
        /// The alarms as they are now.
        changed: Vec<AlarmSummary>,
    },
    /// The session is over (logged out elsewhere, expired, operator disabled or role changed):
    /// log in again.
    SessionEnded {
        /// Why.
        reason: String,
    },
}

/// A line from the server.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServerMessage {
    /// A push.
    Push(Push),
    /// An answer.
    Response(Response),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_has_a_name_that_parses_back_and_a_role() {
        for op in Op::ALL {
            let v = serde_json::to_value(op).expect("serialise");
            assert_eq!(v, serde_json::json!(op.as_str()));
            let back: Op = serde_json::from_value(v).expect("parse");
            assert_eq!(back, op);
            let _ = op.access();
        }
        let names: std::collections::HashSet<_> = Op::ALL.iter().map(Op::as_str).collect();
        assert_eq!(names.len(), Op::ALL.len());
    }

    #[test]
    fn a_request_line_parses_into_its_op_and_unknown_fields_are_refused() {
        let e: Envelope =
            serde_json::from_str(r#"{"id":3,"token":"t","op":"close","alarm":"a","disposition":"dispatched"}"#)
                .expect("parse");
        assert_eq!(e.request.op(), Op::Close);
        assert_eq!(e.request.alarm(), Some("a"));
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"queue","extra":1}"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"close","alarm":"a","dispositon":"other"}"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"queue","id":"one"}"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"[1,2]"#).is_err());
        assert!(serde_json::from_str::<Envelope>(r#"{"op":"nope"}"#).is_err());
    }

    #[test]
    fn secrets_in_requests_never_print() {
        let e: Envelope =
            serde_json::from_str(r#"{"op":"login","name":"olga","password":"hunter2hunter2"}"#).expect("parse");
        let shown = format!("{e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn a_push_and_a_response_are_told_apart() {
        let p: ServerMessage = serde_json::from_str(r#"{"push":"session_ended","reason":"logged out"}"#).expect("push");
        assert!(matches!(p, ServerMessage::Push(Push::SessionEnded { .. })));
        let r: ServerMessage = serde_json::from_str(r#"{"id":1,"ok":true,"result":{"done":"note"}}"#).expect("resp");
        let ServerMessage::Response(r) = r else {
            panic!("a response")
        };
        let reply = Op::Note.decode(r.result.expect("result")).expect("decode");
        assert_eq!(reply, Reply::Done(Done { done: Op::Note }));
        assert!(reply.answers(Op::Note));
        assert!(!reply.answers(Op::Queue));
    }
}
