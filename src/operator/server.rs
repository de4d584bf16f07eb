//! The operator API server: JSON lines ([`super::wire`]) over a Unix socket (owner-only) and,
//! when configured, over TCP with TLS. Sessions live in the database ([`super::sessions`]);
//! every request passes the one authorisation function ([`super::authz::authorize`]), with the
//! facts of the alarm it names read in the same transaction as the action; every action (and
//! every refusal) is audited with the operator's name.
//!
//! A connection must log in (or present a live session) within
//! [`ApiSettings::login_timeout`], and one that makes no request for
//! [`ApiSettings::idle_timeout`] is closed unless it holds a queue subscription, which lasts
//! while its session lives. Logins are bounded and slowed down per peer ([`super::login`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rusqlite::Connection;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Role;
use super::accounts::{self, LoginCheck};
use super::authz::{self, AlarmFacts, Caller, Denied};
use super::login::{LoginGate, LoginLimits};
use super::protocol::{
    ApiError, BulkResult, Done, Envelope, ErrorKind, HandoverNote, HandoversResult, LoginResult, Op, OperatorsResult,
    Push, QueueResult, Reply, Request, Response, Subscribed, SupervisionResult, VerifyOutcome, VerifyResult,
    WhoamiResult,
};
use super::queries;
use super::sessions;
use super::wire::{JsonLines, WireError};
use crate::clock::{Clock, rfc3339_ms, unix_ms};
use crate::correlate::alarms::{self, ActionError, Closing, Handler};
use crate::store::StoreError;
use crate::store::writer::WriterHandle;

/// Largest request line.
pub const MAX_LINE: usize = super::wire::MAX_LINE;

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Database.
    pub db: PathBuf,
    /// Session lifetime.
    pub session_ttl_ms: i64,
    /// Cancellation window for the two factors.
    pub cancel_window_ms: i64,
    /// A connection that has not logged in by then is closed.
    pub login_timeout: Duration,
    /// A connection without a subscription that makes no request for this long is closed.
    pub idle_timeout: Duration,
    /// Priority of the supervisor alerts raised here (failed logins).
    pub alert_priority: u8,
    /// Login bounds.
    pub login: LoginLimits,
}

impl ApiSettings {
    /// Settings with the defaults for everything but the database and the two durations that
    /// come from `[operator]` and `[alarms]`.
    pub fn new(db: PathBuf, session_ttl_ms: i64, cancel_window_ms: i64) -> ApiSettings {
        ApiSettings {
            db,
            session_ttl_ms,
            cancel_window_ms,
            login_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(900),
            alert_priority: 4,
            login: LoginLimits::default(),
        }
    }
}

/// Shared state of all API connections.
pub struct ApiState {
    /// Settings.
    pub settings: ApiSettings,
    /// The writer.
    pub writer: WriterHandle,
    /// Injected clock.
    pub clock: Arc<dyn Clock>,
    /// Commit notifications.
    pub changes: watch::Receiver<u64>,
    /// Phone code verification (its hasher, keyed with the pepper, also checks passwords).
    pub verifier: Arc<crate::verify::CodeService>,
    /// Login bounds and throttling.
    pub login: LoginGate,
}

impl ApiState {
    /// New state.
    pub fn new(
        settings: ApiSettings,
        writer: WriterHandle,
        clock: Arc<dyn Clock>,
        changes: watch::Receiver<u64>,
        verifier: Arc<crate::verify::CodeService>,
    ) -> ApiState {
        let login = LoginGate::new(settings.login);
        ApiState {
            settings,
            writer,
            clock,
            changes,
            verifier,
            login,
        }
    }

    fn now(&self) -> i64 {
        unix_ms(self.clock.now())
    }

    async fn read<T: Send + 'static, E: std::fmt::Display>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Result<T, ApiError> {
        let db = self.settings.db.clone();
        tokio::task::spawn_blocking(move || -> Result<T, ApiError> {
            let conn = crate::store::open_read(&db, Duration::from_secs(5))
                .map_err(|e| ApiError::new(ErrorKind::Internal, format!("database: {e}")))?;
            f(&conn).map_err(|e| ApiError::new(ErrorKind::Internal, format!("database: {e}")))
        })
        .await
        .map_err(|_| ApiError::new(ErrorKind::Internal, "worker failed"))?
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.writer
            .run(f)
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("store: {e}")))
    }

    /// The live session of a token, looked up afresh: a disabled operator, a changed role, an
    /// expiry or a logout elsewhere ends it at once.
    pub async fn caller(&self, token: Option<&str>) -> Result<Caller, ApiError> {
        let Some(token) = token.map(str::to_string) else {
            return Err(ApiError::new(ErrorKind::Unauthorized, "no valid session: log in"));
        };
        let now = self.now();
        self.read(move |c| sessions::lookup(c, &token, now))
            .await?
            .map_err(|dead| ApiError::new(ErrorKind::Unauthorized, dead.reason()))
    }
}

/// Record an operator action (or refusal) in the audit log, in the same transaction.
fn audit(
    tx: &rusqlite::Transaction<'_>,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    result: &str,
) -> Result<(), StoreError> {
    crate::verify::audit::append(
        tx,
        at_ms,
        &crate::verify::audit::AuditRecord {
            actor,
            action,
            subject,
            detail: "",
            result,
            failures: None,
        },
    )
    .map(|_| ())
}

fn denied(d: Denied) -> ApiError {
    match d {
        Denied::Forbidden { .. } => ApiError::new(ErrorKind::Forbidden, d.to_string()),
        Denied::NotFound | Denied::NoSuchTarget => ApiError::new(ErrorKind::NotFound, d.to_string()),
        Denied::Conflict(m) => ApiError::new(ErrorKind::Conflict, m),
    }
}

fn action_error(e: ActionError) -> ApiError {
    match e {
        ActionError::NotFound | ActionError::NoContact => ApiError::new(ErrorKind::NotFound, e.to_string()),
        ActionError::Invalid(m) => ApiError::new(ErrorKind::Invalid, m),
        ActionError::Store(m) => ApiError::new(ErrorKind::Internal, m),
        other => ApiError::new(ErrorKind::Conflict, other.to_string()),
    }
}

fn done(op: Op) -> Reply {
    Reply::Done(Done { done: op })
}

/// Handle one request from `peer` (`local` for the Unix socket, `tls:ADDRESS` over TLS).
pub async fn handle(state: &ApiState, peer: &str, env: Envelope) -> Response {
    let id = env.id;
    match dispatch(state, peer, env).await {
        Ok((reply, _)) => Response {
            id,
            ok: true,
            result: Some(serde_json::to_value(reply).unwrap_or(serde_json::Value::Null)),
            error: None,
        },
        Err(e) => Response {
            id,
            ok: false,
            result: None,
            error: Some(e),
        },
    }
}

/// The outcome of a request, with the session it ran in (for the connection's subscription).
type Dispatched = Result<(Reply, Option<Caller>), ApiError>;

async fn dispatch(state: &ApiState, peer: &str, env: Envelope) -> Dispatched {
    let token = env.token;
    let req = env.request;
    if let Request::Login { name, password } = req {
        return login(state, peer, name, password).await.map(|r| (r, None));
    }
    let caller = state.caller(token.as_deref()).await?;
    let reply = match req.alarm() {
        // Requests that name an alarm are authorised against it inside their transaction.
        Some(_) => alarm_request(state, &caller, req).await?,
        None => {
            if let Err(d) = authz::authorize(&caller, &req, None) {
                let (name, what, now) = (caller.name.clone(), req.name(), state.now());
                let result = format!("refused: forbidden: {d}");
                let _ = state
                    .write(move |tx| audit(tx, now, &name, what, "role", &result))
                    .await;
                warn!(operator = %caller.name, request = req.name(), "request refused: role");
                return Err(denied(d));
            }
            other_request(state, &caller, req).await?
        }
    };
    Ok((reply, Some(caller)))
}

async fn login(
    state: &ApiState,
    peer: &str,
    name: String,
    password: super::protocol::Typed,
) -> Result<Reply, ApiError> {
    let now = state.now();
    if let Err(r) = state.login.check(peer, &name, now) {
        warn!(peer, "login refused: this peer must wait");
        return Err(ApiError::new(ErrorKind::RateLimited, r.message()));
    }
    let check = if accounts::plausible_name(&name) {
        let permit = state
            .login
            .permit()
            .await
            .map_err(|r| ApiError::new(ErrorKind::RateLimited, r.message()))?;
        let (n, hasher) = (name.clone(), state.verifier.hasher().clone());
        let check = state
            .read(move |c| {
                let c = accounts::check_login(c, &hasher, &n, password.expose());
                drop(password);
                c
            })
            .await?;
        drop(permit);
        check
    } else {
        drop(password);
        LoginCheck::Unknown
    };
    let (ttl, peer_s) = (state.settings.session_ttl_ms, peer.to_string());
    if let LoginCheck::Ok(a) = check {
        state.login.succeeded(peer, &name);
        let token = sessions::new_token()
            .ok_or_else(|| ApiError::new(ErrorKind::Internal, "no randomness for a session token"))?;
        let (t, a2) = (token.clone(), a.clone());
        let handover = state
            .write(move |tx| {
                accounts::record_login(tx, &LoginCheck::Ok(a2.clone()))?;
                sessions::create(tx, &t, a2.id, a2.role, &peer_s, now, now + ttl)?;
                audit(tx, now, &a2.name, "login", &format!("session peer:{peer_s}"), "ok")?;
                Ok(handover_notes(tx, now)?)
            })
            .await?;
        info!(operator = %a.name, role = a.role.as_str(), peer, "operator logged in");
        return Ok(Reply::Login(LoginResult {
            token,
            name: a.name,
            role: a.role,
            expires: rfc3339_ms(now + ttl),
            handover,
        }));
    }
    let verdict = state.login.failed(peer, &name, now);
    let known = matches!(check, LoginCheck::WrongPassword { .. } | LoginCheck::Disabled { .. });
    // An unknown name is never stored as typed: it may be a password typed into the name
    // field. Its keyed pseudonym lines repeated attempts up without revealing it.
    let typed = name.clone();
    let limits = crate::verify::Limits {
        alert_priority: state.settings.alert_priority,
        ..crate::verify::Limits::default()
    };
    state
        .write(move |tx| {
            let actor = if known {
                typed
            } else {
                crate::verify::audit::key_for(tx).map_or_else(
                    || "(unknown name)".to_string(),
                    |k| crate::verify::audit::pseudonym(&k, &typed),
                )
            };
            accounts::record_login(tx, &check)?;
            audit(tx, now, &actor, "login", &format!("session peer:{peer_s}"), "refused")?;
            if verdict.alert && known {
                crate::verify::lockout::alert_supervisor(
                    tx,
                    &format!("login-failures:operator:{actor}"),
                    &format!(
                        "Repeated failed logins for operator {actor}: {} within the hour (latest from {peer_s})",
                        verdict.name_failures
                    ),
                    &format!("operator:{actor}"),
                    &limits,
                    now,
                )?;
            }
            if verdict.peer_alert {
                crate::verify::lockout::alert_supervisor(
                    tx,
                    &format!("login-failures:peer:{peer_s}"),
                    &format!("Repeated failed logins from {peer_s} (several names)"),
                    &format!("peer:{peer_s}"),
                    &limits,
                    now,
                )?;
            }
            Ok(())
        })
        .await?;
    warn!(peer, "operator login refused");
    Err(ApiError::new(ErrorKind::Unauthorized, "login refused"))
}

/// Handover notes of the 24 hours up to `now`, newest first.
fn handover_notes(conn: &Connection, now: i64) -> rusqlite::Result<Vec<HandoverNote>> {
    conn.prepare_cached(
        "SELECT at_ms, author, text FROM handover_notes WHERE at_ms > ?1 - 86400000 ORDER BY id DESC LIMIT 20",
    )?
    .query_map([now], |r| {
        Ok(HandoverNote {
            at_ms: r.get(0)?,
            author: r.get(1)?,
            text: r.get(2)?,
        })
    })?
    .collect()
}

/// A request that names an alarm: the alarm's facts are read and authorised in the
/// transaction that acts on it (a read for `alarm`, the writer's for every change).
async fn alarm_request(state: &ApiState, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let Some(public_id) = req.alarm().map(str::to_string) else {
        return Err(ApiError::new(ErrorKind::Invalid, "no alarm named"));
    };
    let now = state.now();
    if let Request::Alarm { .. } = req {
        let (c, p) = (caller.clone(), public_id.clone());
        let shown = state
            .read(
                move |conn| -> rusqlite::Result<Result<Option<queries::AlarmDetail>, Denied>> {
                    let facts = queries::alarm_facts(conn, &p)?;
                    match authz::authorize(&c, &req, facts.as_ref()) {
                        Ok(_) => Ok(Ok(match facts {
                            Some(f) => queries::alarm_detail_at(conn, f.id, now)?,
                            None => None,
                        })),
                        Err(d) => Ok(Err(d)),
                    }
                },
            )
            .await?;
        return match shown {
            Ok(Some(d)) => Ok(Reply::Alarm(Box::new(d))),
            Ok(None) => Err(denied(Denied::NotFound)),
            Err(d) => {
                refused(state, caller, Op::Alarm, &public_id, &d, now).await;
                Err(denied(d))
            }
        };
    }
    if let Request::Verify { alarm, contact, code } = req {
        // Authorised (and taken) in the writer first; the hashing runs outside it, and the
        // verification's own transaction refuses an alarm another operator has taken since.
        let probe = Request::Verify {
            alarm: alarm.clone(),
            contact: contact.clone(),
            code: super::protocol::Typed::default(),
        };
        act(state, caller, probe, now).await?;
        return verify(state, caller, alarm, contact, code).await;
    }
    let op = req.op();
    act(state, caller, req, now).await?;
    Ok(done(op))
}

/// Audit a refusal on an alarm the caller named.
async fn refused(state: &ApiState, caller: &Caller, op: Op, alarm: &str, d: &Denied, now: i64) {
    let e = denied(d.clone());
    let (name, subject, result) = (
        caller.name.clone(),
        format!("alarm {alarm}"),
        format!("refused: {}: {}", e.kind.as_str(), e.message),
    );
    let _ = state
        .write(move |tx| audit(tx, now, &name, op.as_str(), &subject, &result))
        .await;
    warn!(operator = %caller.name, request = op.as_str(), "request refused: {d}");
}

/// Authorise `req` against its alarm and apply it, in one writer transaction, audited.
async fn act(state: &ApiState, caller: &Caller, req: Request, now: i64) -> Result<(), ApiError> {
    let c = caller.clone();
    let op = req.op();
    let window = state.settings.cancel_window_ms;
    let r = state
        .write(move |tx| {
            let public_id = req.alarm().unwrap_or_default().to_string();
            let facts = queries::alarm_facts(tx, &public_id)?;
            let outcome = match (authz::authorize(&c, &req, facts.as_ref()), facts) {
                (Err(d), _) => Err(denied(d)),
                (Ok(_), None) => Err(denied(Denied::NotFound)),
                (Ok(grant), Some(facts)) => {
                    let h = Handler {
                        name: &c.name,
                        session: Some(c.session_id),
                    };
                    let taken = if grant.takes && op != Op::Start && op != Op::Takeover {
                        alarms::take(tx, facts.id, h, &format!("taken by {} ({})", c.name, op.as_str()), now)
                    } else {
                        Ok(())
                    };
                    taken
                        .and_then(|()| apply(tx, &req, &facts, h, now, window))
                        .map_err(action_error)
                }
            };
            let result = match &outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("refused: {}: {}", e.kind.as_str(), e.message),
            };
            audit(tx, now, &c.name, op.as_str(), &format!("alarm {public_id}"), &result)?;
            Ok(outcome)
        })
        .await?;
    if let Err(e) = &r {
        warn!(operator = %caller.name, request = op.as_str(), error = %e.message, "request refused");
    }
    r
}

/// Apply an authorised alarm request inside the writer's transaction.
fn apply(
    tx: &rusqlite::Transaction<'_>,
    req: &Request,
    facts: &AlarmFacts,
    h: Handler<'_>,
    now: i64,
    cancel_window_ms: i64,
) -> Result<(), ActionError> {
    let id = facts.id;
    match req {
        Request::Acknowledge { .. } => alarms::acknowledge(tx, id, h.name, now),
        Request::Start { .. } => alarms::start_handling(tx, id, h, now),
        Request::Takeover { reason, .. } => {
            let reason = reason.trim();
            if reason.is_empty() || reason.len() > alarms::MAX_NOTE {
                return Err(ActionError::Invalid("a takeover needs a reason".into()));
            }
            let from = facts.owner.as_deref().unwrap_or("nobody");
            alarms::take(tx, id, h, &format!("taken over from {from}: {reason}"), now)
        }
        Request::Release { .. } => alarms::release(tx, id, h.name, now),
        Request::Note { text, .. } => alarms::note(tx, id, h.name, text, now),
        Request::Step { step, done, .. } => alarms::tick_step(tx, id, *step, *done, h.name, now),
        Request::Call {
            contact,
            phone,
            outcome,
            ..
        } => alarms::record_call(tx, id, contact, phone.as_deref(), outcome.as_str(), h.name, now),
        Request::Recall { minutes, note, .. } => {
            alarms::recall(tx, id, h.name, *minutes, note.as_deref(), now).map(|_| ())
        }
        Request::Close {
            disposition,
            note,
            skipped_reason,
            ..
        } => alarms::close(
            tx,
            id,
            h.name,
            *disposition,
            Closing {
                note: note.as_deref(),
                skipped_reason: skipped_reason.as_deref(),
            },
            now,
            cancel_window_ms,
        ),
        // Verification is authorised here as a `start` and carried out by the code service.
        Request::Verify { .. } => Ok(()),
        Request::Login { .. }
        | Request::Logout
        | Request::Whoami
        | Request::Queue
        | Request::Alarm { .. }
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
        | Request::ServiceEnd { .. } => Err(ActionError::Invalid("not an alarm action".into())),
    }
}

async fn verify(
    state: &ApiState,
    caller: &Caller,
    alarm: String,
    contact: String,
    code: super::protocol::Typed,
) -> Result<Reply, ApiError> {
    let v = state.verifier.clone();
    let candidate = crate::verify::Code::new(code.expose());
    drop(code);
    let req = crate::verify::VerifyRequest {
        alarm,
        contact,
        operator: caller.name.clone(),
    };
    use crate::verify::VerifyError as E;
    let recorded = v.verify(req, candidate).await.map_err(|e| match e {
        E::NoSuchAlarm => ApiError::new(ErrorKind::NotFound, e.to_string()),
        E::RateLimited(_) => ApiError::new(ErrorKind::RateLimited, e.to_string()),
        E::Store(_) | E::Hash(_) | E::Interrupted => ApiError::new(ErrorKind::Internal, e.to_string()),
        other => ApiError::new(ErrorKind::Conflict, other.to_string()),
    })?;
    use crate::verify::Verdict;
    // The operator is told the truth (a duress code is shown as duress, with what to do); what
    // the caller hears is the operator's job: "thank you" either way.
    let result = match recorded.verdict {
        Verdict::Accepted => VerifyOutcome::Accepted,
        Verdict::Duress => VerifyOutcome::Duress,
        Verdict::Rejected => VerifyOutcome::Rejected,
        Verdict::Locked => VerifyOutcome::Locked,
        Verdict::Invalidated => VerifyOutcome::Invalidated,
    };
    let attempts_left = (recorded.verdict == Verdict::Rejected).then(|| {
        let limit = i64::from(v.limits().lockout_after);
        (limit - recorded.failures.unwrap_or(0)).max(0) as u32
    });
    Ok(Reply::Verify(VerifyResult { result, attempts_left }))
}

/// Requests that name no alarm (already authorised by role).
async fn other_request(state: &ApiState, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    let now = state.now();
    let supervisor = caller.role >= Role::Supervisor;
    Ok(match req {
        Request::Logout => {
            let (id, name) = (caller.session_id, caller.name.clone());
            state
                .write(move |tx| {
                    sessions::end(tx, id, "logout", now)?;
                    audit(tx, now, &name, "logout", "session", "ok")
                })
                .await?;
            done(Op::Logout)
        }
        Request::Whoami => Reply::Whoami(WhoamiResult {
            name: caller.name.clone(),
            role: caller.role,
            expires: rfc3339_ms(caller.expires_ms),
        }),
        Request::Queue => Reply::Queue(QueueResult {
            alarms: state.read(move |c| queries::queue(c, supervisor)).await?,
        }),
        Request::BulkAcknowledge { alarms, reason } => {
            bulk(state, caller, Op::BulkAcknowledge, alarms, None, reason).await?
        }
        Request::BulkClose {
            alarms,
            disposition,
            reason,
        } => bulk(state, caller, Op::BulkClose, alarms, Some(disposition), reason).await?,
        Request::Supervision => Reply::Supervision(SupervisionResult {
            overdue: state.read(move |c| queries::overdue(c, now)).await?,
        }),
        Request::Search { query, limit } => {
            if query.trim().is_empty() || query.len() > 100 {
                return Err(ApiError::new(ErrorKind::Invalid, "search for 1 to 100 characters"));
            }
            Reply::Search(
                state
                    .read(move |c| queries::search(c, &query, limit.unwrap_or(100), supervisor))
                    .await?,
            )
        }
        Request::Subscribe => Reply::Subscribed(Subscribed { subscribed: true }),
        Request::HandoverAdd { text } => {
            let text = text.trim().to_string();
            if text.is_empty() || text.len() > alarms::MAX_NOTE {
                return Err(ApiError::new(
                    ErrorKind::Invalid,
                    format!("a handover note is 1 to {} characters", alarms::MAX_NOTE),
                ));
            }
            let name = caller.name.clone();
            state
                .write(move |tx| {
                    tx.execute(
                        "INSERT INTO handover_notes (at_ms, author, text) VALUES (?1, ?2, ?3)",
                        rusqlite::params![now, name, text],
                    )?;
                    audit(tx, now, &name, "handover_add", "handover", "ok")
                })
                .await?;
            done(Op::HandoverAdd)
        }
        Request::Handovers => Reply::Handovers(HandoversResult {
            notes: state.read(move |c| handover_notes(c, now)).await?,
        }),
        Request::ResetCode { contact } => {
            let name = caller.name.clone();
            let found = state
                .write(move |tx| {
                    let reference: Option<String> = rusqlite::OptionalExtension::optional(tx.query_row(
                        "SELECT ref FROM contacts WHERE public_id = ?1",
                        rusqlite::params![contact],
                        |r| r.get(0),
                    ))?;
                    let Some(reference) = reference else {
                        audit(
                            tx,
                            now,
                            &name,
                            "reset_code",
                            "contact unknown",
                            "refused: no such contact",
                        )?;
                        return Ok(false);
                    };
                    let Some(cref) = crate::verify::codes::contact_by_ref(tx, &reference)? else {
                        return Ok(false);
                    };
                    crate::verify::codes::reset(tx, &cref, &name, now)?;
                    Ok(true)
                })
                .await?;
            if !found {
                return Err(ApiError::new(ErrorKind::NotFound, "no such contact"));
            }
            done(Op::ResetCode)
        }
        Request::Operators => Reply::Operators(OperatorsResult {
            operators: state.read(accounts::list).await?,
        }),
        Request::Schedules => Reply::Schedules(state.read(move |c| queries::schedules(c, now)).await?),
        Request::Extend { .. } | Request::Service { .. } | Request::ServiceEnd { .. } => {
            target_request(state, caller, req).await?
        }
        Request::Login { .. }
        | Request::Alarm { .. }
        | Request::Acknowledge { .. }
        | Request::Start { .. }
        | Request::Takeover { .. }
        | Request::Release { .. }
        | Request::Note { .. }
        | Request::Step { .. }
        | Request::Call { .. }
        | Request::Verify { .. }
        | Request::Recall { .. }
        | Request::Close { .. } => return Err(ApiError::new(ErrorKind::Invalid, "misrouted request")),
    })
}

/// A request that names a site or an account: authorised against it and applied in one
/// writer transaction, audited with who, what and why (refusals too).
async fn target_request(state: &ApiState, caller: &Caller, req: Request) -> Result<Reply, ApiError> {
    use crate::correlate::{schedule, service};
    let (c, now, op) = (caller.clone(), state.now(), req.op());
    let r = state
        .write(move |tx| {
            let (site, account) = req.target().unwrap_or((None, None));
            let found = service::resolve(tx, site, account)?;
            let subject = match &found {
                Some((_, _, name)) => name.clone(),
                None => format!(
                    "{} (unknown)",
                    site.map(|s| format!("site {s}"))
                        .or(account.map(|a| format!("account {a}")))
                        .unwrap_or_default()
                ),
            };
            let facts = match &found {
                Some((target, site_id, _)) => {
                    let has_schedule = match site_id {
                        Some(s) => tx
                            .prepare_cached("SELECT EXISTS (SELECT 1 FROM schedules WHERE site_id = ?1)")?
                            .query_row([s], |r| r.get::<_, bool>(0))?,
                        None => false,
                    };
                    let period = service::open(tx)?
                        .into_iter()
                        .find(|(_, s, a)| match target {
                            service::Target::Site(id) => *s == Some(*id),
                            service::Target::Account(n) => a.as_deref() == Some(n.as_str()),
                        })
                        .map(|(p, _, _)| p.mode);
                    Some(authz::TargetFacts {
                        site_id: *site_id,
                        has_schedule,
                        period,
                    })
                }
                None => None,
            };
            let outcome: Result<String, ApiError> = match authz::authorize_target(&c, &req, facts.as_ref()) {
                Err(d) => Err(denied(d)),
                Ok(_) => {
                    let invalid = |m: String| ApiError::new(ErrorKind::Invalid, m);
                    match (&req, found.clone()) {
                        (_, None) => Err(denied(Denied::NoSuchTarget)),
                        (req, Some((target, site_id, _))) => match req {
                            Request::Extend {
                                until_ms,
                                until_local,
                                reason,
                                ..
                            } => {
                                let site = site_id.unwrap_or_default();
                                let until = match (until_ms, until_local) {
                                    (Some(u), None) => Some(*u),
                                    (None, Some(l)) => schedule::store::next_local(tx, site, l, now)?,
                                    _ => None,
                                };
                                match until {
                                    None => Err(invalid(
                                        "give until_ms, or until_local as HH:MM in the site's time zone".into(),
                                    )),
                                    Some(until) => schedule::store::extend(tx, site, until, &c.name, reason, now)
                                        .map(|u| format!("until {}: {}", crate::clock::rfc3339_ms(u), reason.trim()))
                                        .map_err(|e| invalid(e.to_string())),
                                }
                            }
                            Request::Service {
                                mode,
                                until_ms,
                                minutes,
                                reason,
                                ..
                            } => match (until_ms, minutes) {
                                (Some(u), None) => Ok(*u),
                                (None, Some(m)) => Ok(now + i64::from(*m) * 60_000),
                                _ => Err(invalid("give until_ms or minutes".into())),
                            }
                            .and_then(|until| {
                                service::start(tx, &target, site_id, *mode, until, &c.name, reason, now)
                                    .map(|_| {
                                        format!(
                                            "{} until {}: {}",
                                            mode.label(),
                                            crate::clock::rfc3339_ms(until),
                                            reason.trim()
                                        )
                                    })
                                    .map_err(|e| invalid(e.to_string()))
                            }),
                            Request::ServiceEnd { .. } => service::end_target(tx, &target, &c.name, now)
                                .map(|_| "period ended".to_string())
                                .map_err(|e| ApiError::new(ErrorKind::Conflict, e.to_string())),
                            _ => Err(invalid("not a site or account request".into())),
                        },
                    }
                }
            };
            let result = match &outcome {
                Ok(what) => format!("ok: {what}"),
                Err(e) => format!("refused: {}: {}", e.kind.as_str(), e.message),
            };
            audit(tx, now, &c.name, op.as_str(), &subject, &result)?;
            Ok(outcome)
        })
        .await?;
    match r {
        Ok(_) => Ok(done(op)),
        Err(e) => {
            warn!(operator = %caller.name, request = op.as_str(), error = %e.message, "request refused");
            Err(e)
        }
    }
}

/// Most alarms in one bulk request.
pub const MAX_BULK: usize = 500;

/// A supervisor's bulk acknowledge or close: each alarm authorised on its own
/// ([`authz::authorize_bulk_item`]), acted on and audited on its own, in one transaction.
async fn bulk(
    state: &ApiState,
    caller: &Caller,
    op: Op,
    ids: Vec<String>,
    disposition: Option<alarms::Disposition>,
    reason: String,
) -> Result<Reply, ApiError> {
    let reason = reason.trim().to_string();
    if reason.is_empty() || reason.len() > alarms::MAX_NOTE {
        return Err(ApiError::new(ErrorKind::Invalid, "a bulk action needs a reason"));
    }
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(ApiError::new(
            ErrorKind::Invalid,
            format!("1 to {MAX_BULK} alarms at once"),
        ));
    }
    let (c, now, window) = (caller.clone(), state.now(), state.settings.cancel_window_ms);
    let result = state
        .write(move |tx| {
            let mut out = BulkResult {
                done: Vec::new(),
                skipped: Vec::new(),
            };
            for public_id in ids {
                let facts = queries::alarm_facts(tx, &public_id)?;
                let outcome = match authz::authorize_bulk_item(&c, op, facts.as_ref()) {
                    Err(d) => Err(d.to_string()),
                    Ok(_) => {
                        let Some(f) = facts else { continue };
                        let r = match disposition {
                            None => alarms::acknowledge(tx, f.id, &c.name, now).and_then(|()| {
                                alarms::note(tx, f.id, &c.name, &format!("acknowledged in bulk: {reason}"), now)
                            }),
                            Some(d) => alarms::close(
                                tx,
                                f.id,
                                &c.name,
                                d,
                                Closing {
                                    note: Some(&format!("closed in bulk: {reason}")),
                                    skipped_reason: Some(&format!("closed in bulk: {reason}")),
                                },
                                now,
                                window,
                            ),
                        };
                        r.map_err(|e| e.to_string())
                    }
                };
                let result = match &outcome {
                    Ok(()) => format!("ok: {reason}"),
                    Err(e) => format!("refused: {e}"),
                };
                audit(tx, now, &c.name, op.as_str(), &format!("alarm {public_id}"), &result)?;
                match outcome {
                    Ok(()) => out.done.push(public_id),
                    Err(e) => out.skipped.push((public_id, e)),
                }
            }
            Ok(out)
        })
        .await?;
    Ok(Reply::Bulk(result))
}

/// Shortest gap between two queue re-reads for one subscriber. Under load the writer commits
/// hundreds of times a second and every commit wakes each subscriber; re-reading the changed
/// alarms (which counts the events not yet folded into their alarms) each time cost about a
/// core per subscriber at 1,000 alarm events/s. Changes that arrive within the gap are read
/// together, so a push is at most this much later (target: 100 ms).
const PUSH_MIN_GAP: Duration = Duration::from_millis(20);

/// How often a subscription checks that its session still lives (a disable by the CLI, an
/// expiry, a logout elsewhere), besides before every push.
const SESSION_CHECK: Duration = Duration::from_secs(1);

/// Run `read` (a request that may start a subscription at the cursor it reads), with every
/// change so far marked seen first when `starting`: a commit in between the mark and the read
/// then still wakes the subscription, and the re-read from the cursor finds it. Marked after
/// the read, such a commit would be pushed only with the next change.
async fn seen_before<T>(changes: &mut watch::Receiver<u64>, starting: bool, read: impl Future<Output = T>) -> T {
    if starting {
        changes.borrow_and_update();
    }
    read.await
}

/// A connection's queue subscription.
struct Subscription {
    cursor: queries::Cursor,
    token: String,
    supervisor: bool,
}

/// Serve one API connection from a local peer (the Unix socket).
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, state: Arc<ApiState>, cancel: CancellationToken) {
    connection_from(stream, "local".to_string(), state, cancel).await
}

/// Parse a request line. A parse error says where, never what (the line may hold a password
/// typed into the wrong field).
fn parse(line: &[u8]) -> Result<Envelope, ApiError> {
    serde_json::from_slice::<Envelope>(line).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "not JSON",
            serde_json::error::Category::Data => {
                "not a known request (unknown op or field, or a value of the wrong type)"
            }
            serde_json::error::Category::Io => "unreadable",
        };
        ApiError::new(
            ErrorKind::Invalid,
            format!("not a request: {what} (line {}, column {})", e.line(), e.column()),
        )
    })
}

/// Serve one API connection from `peer` (`local`, or `tls:ADDRESS`).
pub async fn connection_from<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    peer: String,
    state: Arc<ApiState>,
    cancel: CancellationToken,
) {
    let mut framed = Framed::new(stream, JsonLines::default());
    let mut sub: Option<Subscription> = None;
    let mut changes = state.changes.clone();
    let mut last_push_read: Option<tokio::time::Instant> = None;
    let opened = tokio::time::Instant::now();
    let mut authenticated = false;
    let mut last_request = opened;
    let mut session_check = tokio::time::interval(SESSION_CHECK);
    session_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = if !authenticated {
            opened + state.settings.login_timeout
        } else if sub.is_none() {
            last_request + state.settings.idle_timeout
        } else {
            // A subscribed console may sit quietly for a shift: its session bounds it.
            tokio::time::Instant::now() + Duration::from_secs(3600)
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(deadline) => {
                let why = if authenticated { "idle too long" } else { "no login in time" };
                let r = Response { id: None, ok: false, result: None,
                    error: Some(ApiError::new(ErrorKind::Unauthorized, format!("connection closed: {why}"))) };
                let _ = framed.send(serde_json::to_string(&r).unwrap_or_default()).await;
                info!(peer, why, "operator API connection closed");
                break;
            }
            line = framed.next() => {
                let line = match line {
                    Some(Ok(l)) => l,
                    Some(Err(e)) => {
                        let r = Response { id: None, ok: false, result: None,
                            error: Some(ApiError::new(ErrorKind::Invalid, e.to_string())) };
                        let _ = framed.send(serde_json::to_string(&r).unwrap_or_default()).await;
                        if let WireError::TooLong = e {
                            warn!(peer, "operator API line too long: connection closed");
                        }
                        break;
                    }
                    None => break,
                };
                last_request = tokio::time::Instant::now();
                let parsed = parse(&line);
                drop(line);
                let response = match parsed {
                    Ok(env) => {
                        let subscribing = matches!(env.request, Request::Subscribe);
                        let starting = subscribing && sub.is_none();
                        let token = env.token.clone();
                        let id = env.id;
                        let r = seen_before(&mut changes, starting, async {
                            let out = dispatch(&state, &peer, env).await;
                            let cursor = match (&out, subscribing) {
                                (Ok(_), true) => Some(state.read(queries::cursor).await),
                                _ => None,
                            };
                            (out, cursor)
                        })
                        .await;
                        match r {
                            (Ok((reply, caller)), cursor) => {
                                authenticated = true;
                                if let (Some(Ok(cursor)), Some(c), Some(t)) = (cursor, &caller, token) {
                                    sub = Some(Subscription { cursor, token: t, supervisor: c.role >= Role::Supervisor });
                                }
                                Response { id, ok: true,
                                    result: Some(serde_json::to_value(reply).unwrap_or(serde_json::Value::Null)), error: None }
                            }
                            (Err(e), _) => {
                                // Refused after the session was found: the peer has one.
                                authenticated |= !matches!(e.kind,
                                    ErrorKind::Unauthorized | ErrorKind::RateLimited | ErrorKind::Internal);
                                Response { id, ok: false, result: None, error: Some(e) }
                            }
                        }
                    }
                    Err(e) => Response { id: None, ok: false, result: None, error: Some(e) },
                };
                if framed.send(serde_json::to_string(&response).unwrap_or_default()).await.is_err() {
                    break;
                }
            }
            _ = session_check.tick(), if sub.is_some() => {
                let token = sub.as_ref().map(|s| s.token.clone());
                if let Err(e) = state.caller(token.as_deref()).await {
                    sub = None;
                    let push = Push::SessionEnded { reason: e.message };
                    let _ = framed.send(serde_json::to_string(&push).unwrap_or_default()).await;
                }
            }
            r = changes.changed(), if sub.is_some() => {
                if r.is_err() { break; }
                let Some(s) = sub.as_ref() else { continue };
                // Still logged in? A push never outlives its session.
                if let Err(e) = state.caller(Some(&s.token)).await {
                    sub = None;
                    let push = Push::SessionEnded { reason: e.message };
                    let _ = framed.send(serde_json::to_string(&push).unwrap_or_default()).await;
                    continue;
                }
                let (cursor, supervisor) = (s.cursor, s.supervisor);
                if let Some(t) = last_push_read {
                    tokio::time::sleep_until(t + PUSH_MIN_GAP).await;
                }
                // Whatever changed while waiting is read now.
                changes.borrow_and_update();
                last_push_read = Some(tokio::time::Instant::now());
                match state.read(move |c| queries::changed_since(c, cursor, supervisor)).await {
                    Ok((changed, next)) => {
                        if let Some(s) = sub.as_mut() { s.cursor = next; }
                        if !changed.is_empty() {
                            let push = Push::Queue { changed };
                            if framed.send(serde_json::to_string(&push).unwrap_or_default()).await.is_err() { break; }
                        }
                    }
                    Err(e) => warn!(error = %e.message, "subscription query failed"),
                }
            }
        }
    }
    // Whatever is still buffered may hold a typed secret.
    zeroize::Zeroize::zeroize(framed.read_buffer_mut().as_mut());
}

/// End what is over without anyone asking: sessions past their expiry, or of an operator the
/// CLI disabled or gave another role (their alarms go back to the queue), and put-aside alarms
/// whose time has come. Checked every second with a read; the writer is used only when there
/// is something to do.
pub async fn sweep(state: Arc<ApiState>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = state.now();
        let due = state
            .read(move |c| {
                c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM sessions s JOIN operators o ON o.id = s.operator_id
                                    WHERE s.ended_ms IS NULL AND (s.expires_ms <= ?1 OR o.disabled OR o.role <> s.role))
                         OR EXISTS (SELECT 1 FROM alarms WHERE recall_ms <= ?1 AND state <> 'closed')",
                    [now],
                    |r| r.get::<_, bool>(0),
                )
            })
            .await;
        if !matches!(due, Ok(true)) {
            continue;
        }
        let r = state
            .write(move |tx| Ok((sessions::sweep(tx, now)?, alarms::recall_due(tx, now)?)))
            .await;
        match r {
            Ok((ended, recalled)) if ended + recalled > 0 => {
                info!(sessions_ended = ended, alarms_recalled = recalled, "operator sweep")
            }
            Ok(_) => {}
            Err(e) => warn!(error = %e.message, "operator sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subscription marks the changes before it reads its cursor, not after: a commit that
    /// lands during the read still wakes it.
    #[tokio::test]
    async fn a_commit_during_the_subscribing_read_wakes_the_subscription() {
        let (tx, mut changes) = watch::channel(0u64);
        tx.send(1).expect("receiver");
        seen_before(&mut changes, true, async { tx.send(2).expect("receiver") }).await;
        assert!(
            changes.has_changed().expect("sender"),
            "the commit during the read is still to see"
        );
        assert_eq!(*changes.borrow_and_update(), 2);
        // The changes before a subscription starts are marked seen: its cursor covers them.
        tx.send(3).expect("receiver");
        seen_before(&mut changes, true, async {}).await;
        assert!(!changes.has_changed().expect("sender"));
        // Any other request leaves the marks alone.
        tx.send(4).expect("receiver");
        seen_before(&mut changes, false, async {}).await;
        assert!(changes.has_changed().expect("sender"));
    }

    #[test]
    fn a_parse_error_says_where_never_what() {
        let e = parse(br#"{"op":"step","alarm":"a","step":"hunter2hunter2","done":true}"#).expect_err("wrong type");
        assert!(!e.message.contains("hunter2"), "{}", e.message);
        assert_eq!(e.kind, ErrorKind::Invalid);
    }
}
