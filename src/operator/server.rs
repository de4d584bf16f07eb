//! The operator API server: JSON lines over a Unix socket (owner-only) and, when configured,
//! over TCP with TLS. Sessions are random tokens that expire; every request is authorised by
//! role; every action (and every refusal) is audited with the operator's name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rusqlite::Connection;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::codec::{Framed, LinesCodec};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Role;
use super::accounts::{self, LoginCheck};
use super::api::{ApiError, Envelope, ErrorKind, Request, Response};
use super::queries;
use crate::clock::{Clock, rfc3339_ms, unix_ms};
use crate::correlate::alarms::{self, ActionError, Disposition};
use crate::store::writer::WriterHandle;

/// Largest request line.
pub const MAX_LINE: usize = 64 * 1024;

/// A logged-in operator.
#[derive(Debug, Clone)]
pub struct Session {
    /// Operator row id.
    pub operator_id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Expiry, Unix ms.
    pub expires_ms: i64,
}

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Database.
    pub db: PathBuf,
    /// Session lifetime.
    pub session_ttl_ms: i64,
    /// Cancellation window for the two factors.
    pub cancel_window_ms: i64,
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
    /// Sessions by SHA-256 of the token.
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    /// Phone code verification.
    pub verifier: Option<Arc<crate::verify::CodeService>>,
}

impl ApiState {
    /// New state.
    pub fn new(
        settings: ApiSettings,
        writer: WriterHandle,
        clock: Arc<dyn Clock>,
        changes: watch::Receiver<u64>,
        verifier: Option<Arc<crate::verify::CodeService>>,
    ) -> ApiState {
        ApiState {
            settings,
            writer,
            clock,
            changes,
            sessions: Mutex::new(HashMap::new()),
            verifier,
        }
    }

    fn now(&self) -> i64 {
        unix_ms(self.clock.now())
    }

    fn new_session(&self, s: Session) -> String {
        let mut raw = [0u8; 32];
        if getrandom::fill(&mut raw).is_err() {
            // Without OS randomness no safe token exists: refuse by returning an unusable one.
            return String::new();
        }
        let token = hex::encode(raw);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut g = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let now = self.now();
        g.retain(|_, v| v.expires_ms > now);
        g.insert(key, s);
        token
    }

    fn session(&self, token: Option<&str>) -> Option<Session> {
        let token = token?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let g = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        g.get(&key).filter(|s| s.expires_ms > self.now()).cloned()
    }

    fn end_session(&self, token: Option<&str>) {
        if let Some(t) = token {
            let key: [u8; 32] = Sha256::digest(t.as_bytes()).into();
            self.sessions.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
        }
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
}

/// Record an operator action (or refusal) in the audit log, in the same transaction.
fn audit(
    tx: &rusqlite::Transaction<'_>,
    at_ms: i64,
    actor: &str,
    action: &str,
    subject: &str,
    result: &str,
) -> Result<(), crate::store::StoreError> {
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

fn action_error(e: ActionError) -> ApiError {
    match e {
        ActionError::NotFound => ApiError::new(ErrorKind::NotFound, "no such alarm"),
        ActionError::Store(m) => ApiError::new(ErrorKind::Internal, m),
        other => ApiError::new(ErrorKind::Conflict, other.to_string()),
    }
}

/// Run an alarm action in the writer, audited; `f` gets the alarm row id.
async fn alarm_action(
    state: &ApiState,
    s: &Session,
    action: &'static str,
    alarm: String,
    f: impl FnOnce(&rusqlite::Transaction<'_>, i64, &str, i64) -> Result<(), ActionError> + Send + 'static,
) -> Result<Value, ApiError> {
    let name = s.name.clone();
    let now = state.now();
    let r = state
        .writer
        .run(move |tx| {
            let id = queries::alarm_row(tx, &alarm)?;
            let outcome = match id {
                None => Err(ActionError::NotFound),
                Some(id) => f(tx, id, &name, now),
            };
            let result = match &outcome {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("refused: {e}"),
            };
            audit(tx, now, &name, action, &format!("alarm {alarm}"), &result)?;
            Ok(outcome)
        })
        .await
        .map_err(|e| ApiError::new(ErrorKind::Internal, format!("store: {e}")))?;
    r.map(|()| json!({"done": action})).map_err(action_error)
}

/// Handle one request.
pub async fn handle(state: &ApiState, env: Envelope, subscribed: &mut Option<queries::Cursor>) -> Response {
    let id = env.id;
    let result = dispatch(state, env, subscribed).await;
    match result {
        Ok(v) => Response {
            id,
            ok: true,
            result: Some(v),
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

async fn dispatch(
    state: &ApiState,
    env: Envelope,
    subscribed: &mut Option<queries::Cursor>,
) -> Result<Value, ApiError> {
    let now = state.now();
    if let Request::Login { name, password } = &env.request {
        let (n, p) = (name.clone(), password.expose().to_string());
        let p = zeroize::Zeroizing::new(p);
        let check = state.read(move |c| accounts::check_login(c, &n, &p, now)).await?;
        let name = name.clone();
        let check2 = check.clone();
        let locked = state
            .writer
            .run(move |tx| {
                let locked = accounts::record_login(tx, &check2, now).map_err(|e| match e {
                    accounts::OperatorError::Store(s) => s,
                    _ => crate::store::StoreError::WriterGone,
                })?;
                let result = match &check2 {
                    LoginCheck::Ok(_) => "ok",
                    _ if locked => "refused; account locked after repeated failures",
                    _ => "refused",
                };
                audit(tx, now, &name, "login", "session", result)?;
                Ok(locked)
            })
            .await
            .map_err(|e| ApiError::new(ErrorKind::Internal, format!("store: {e}")))?;
        return match check {
            LoginCheck::Ok(a) => {
                let expires_ms = now + state.settings.session_ttl_ms;
                let token = state.new_session(Session {
                    operator_id: a.id,
                    name: a.name.clone(),
                    role: a.role,
                    expires_ms,
                });
                info!(operator = %a.name, role = a.role.as_str(), "operator logged in");
                Ok(json!({"token": token, "name": a.name, "role": a.role, "expires": rfc3339_ms(expires_ms)}))
            }
            _ => {
                warn!(locked, "operator login refused");
                Err(ApiError::new(ErrorKind::Unauthorized, "login refused"))
            }
        };
    }
    let Some(session) = state.session(env.token.as_deref()) else {
        return Err(ApiError::new(ErrorKind::Unauthorized, "no valid session: log in"));
    };
    let request = env.request;
    if session.role < request.min_role() {
        let (name, what) = (session.name.clone(), request.name());
        let _ = state
            .writer
            .run(move |tx| audit(tx, now, &name, what, "role", "refused: forbidden for this role"))
            .await;
        warn!(operator = %session.name, request = request.name(), "request refused: role");
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            format!("{} requires the {} role", request.name(), request.min_role().as_str()),
        ));
    }
    let supervisor = session.role >= Role::Supervisor;
    match request {
        Request::Login { .. } => Err(ApiError::new(ErrorKind::Invalid, "already logged in")),
        Request::Logout => {
            state.end_session(env.token.as_deref());
            let name = session.name.clone();
            let _ = state
                .writer
                .run(move |tx| audit(tx, now, &name, "logout", "session", "ok"))
                .await;
            Ok(json!({"done": "logout"}))
        }
        Request::Whoami => {
            Ok(json!({"name": session.name, "role": session.role, "expires": rfc3339_ms(session.expires_ms)}))
        }
        Request::Queue => {
            let alarms = state.read(move |c| queries::queue(c, supervisor)).await?;
            Ok(json!({"alarms": alarms}))
        }
        Request::Alarm { alarm } => {
            let a = alarm.clone();
            let detail = state.read(move |c| queries::alarm_detail(c, &a)).await?;
            match detail {
                Some(d) if d.alarm.queue == "operator" || supervisor => {
                    serde_json::to_value(d).map_err(|e| ApiError::new(ErrorKind::Internal, e.to_string()))
                }
                _ => Err(ApiError::new(ErrorKind::NotFound, "no such alarm")),
            }
        }
        Request::Acknowledge { alarm } => {
            alarm_action(state, &session, "acknowledge", alarm, |tx, id, who, now| {
                alarms::acknowledge(tx, id, who, now)
            })
            .await
        }
        Request::Start { alarm } => {
            alarm_action(state, &session, "start", alarm, |tx, id, who, now| {
                alarms::start_handling(tx, id, who, now)
            })
            .await
        }
        Request::Note { alarm, text } => {
            if text.trim().is_empty() || text.len() > 4000 {
                return Err(ApiError::new(ErrorKind::Invalid, "a note is 1 to 4000 characters"));
            }
            alarm_action(state, &session, "note", alarm, move |tx, id, who, now| {
                alarms::note(tx, id, who, &text, now)
            })
            .await
        }
        Request::Step { alarm, step, done } => {
            alarm_action(state, &session, "step", alarm, move |tx, id, who, now| {
                alarms::tick_step(tx, id, step, done, who, now)
            })
            .await
        }
        Request::Close { alarm, disposition } => {
            let Some(d) = Disposition::parse(&disposition) else {
                return Err(ApiError::new(
                    ErrorKind::Invalid,
                    "disposition: cancelled_by_customer, dispatched, technical_fault, test, false_alarm, duplicate or other",
                ));
            };
            let window = state.settings.cancel_window_ms;
            alarm_action(state, &session, "close", alarm, move |tx, id, who, now| {
                alarms::close(tx, id, who, d, now, window)
            })
            .await
        }
        Request::Verify { alarm, contact, code } => {
            let Some(v) = state.verifier.clone() else {
                return Err(ApiError::new(
                    ErrorKind::Internal,
                    "phone code verification is not configured",
                ));
            };
            let candidate = crate::verify::Code::new(code.expose());
            drop(code);
            let req = crate::verify::VerifyRequest {
                alarm,
                contact: contact.clone(),
                operator: session.name.clone(),
            };
            let verdict = v.verify(req, candidate).await.map_err(|e| match e {
                crate::verify::VerifyError::NoSuchAlarm => ApiError::new(ErrorKind::NotFound, e.to_string()),
                crate::verify::VerifyError::Store(_)
                | crate::verify::VerifyError::Hash(_)
                | crate::verify::VerifyError::Interrupted => ApiError::new(ErrorKind::Internal, e.to_string()),
                other => ApiError::new(ErrorKind::Conflict, other.to_string()),
            })?;
            // The operator is told the truth (a duress code is shown as duress, with what to
            // do); what the caller hears is the operator's job: "thank you" either way.
            let mut out = json!({"result": verdict.as_str()});
            if verdict == crate::verify::Verdict::Rejected {
                let limit = i64::from(v.limits().lockout_after);
                let failures = state
                    .read(move |c| {
                        c.query_row(
                            "SELECT ifnull((SELECT f.consecutive FROM code_failures f JOIN contacts k ON k.id = f.contact_id
                                            WHERE k.public_id = ?1), 0)",
                            rusqlite::params![contact],
                            |r| r.get::<_, i64>(0),
                        )
                    })
                    .await?;
                out["attempts_left"] = json!((limit - failures).max(0));
            }
            Ok(out)
        }
        Request::ResetCode { contact } => {
            let name = session.name.clone();
            let done = state
                .writer
                .run(move |tx| {
                    let c: Option<String> = tx
                        .query_row(
                            "SELECT ref FROM contacts WHERE public_id = ?1",
                            rusqlite::params![contact],
                            |r| r.get(0),
                        )
                        .map(Some)
                        .or_else(|e| {
                            if e == rusqlite::Error::QueryReturnedNoRows {
                                Ok(None)
                            } else {
                                Err(e)
                            }
                        })?;
                    let Some(reference) = c else { return Ok(false) };
                    let Some(cref) = crate::verify::codes::contact_by_ref(tx, &reference)? else {
                        return Ok(false);
                    };
                    crate::verify::codes::reset(tx, &cref, &name, now)?;
                    Ok(true)
                })
                .await
                .map_err(|e| ApiError::new(ErrorKind::Internal, format!("store: {e}")))?;
            if !done {
                return Err(ApiError::new(ErrorKind::NotFound, "no such contact"));
            }
            Ok(json!({"done": "reset_code"}))
        }
        Request::Supervision => {
            let overdue = state.read(move |c| queries::overdue(c, now)).await?;
            Ok(json!({"overdue": overdue}))
        }
        Request::Search { account, limit } => {
            let events = state
                .read(move |c| queries::search(c, &account, limit.unwrap_or(100)))
                .await?;
            Ok(json!({"events": events}))
        }
        Request::Subscribe => {
            let cursor = state.read(queries::cursor).await?;
            *subscribed = Some(cursor);
            Ok(json!({"subscribed": true}))
        }
        Request::Operators => {
            let list = state.read(accounts::list).await?;
            Ok(json!({"operators": list}))
        }
    }
}

/// Shortest gap between two queue re-reads for one subscriber. Under load the writer commits
/// hundreds of times a second and every commit wakes each subscriber; re-reading the changed
/// alarms (which counts the events not yet folded into their alarms) each time cost about a
/// core per subscriber at 1,000 alarm events/s. Changes that arrive within the gap are read
/// together, so a push is at most this much later (target: 100 ms).
const PUSH_MIN_GAP: Duration = Duration::from_millis(20);

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

/// Serve one API connection.
pub async fn connection<S: AsyncRead + AsyncWrite + Unpin>(stream: S, state: Arc<ApiState>, cancel: CancellationToken) {
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_LINE));
    let mut subscribed: Option<queries::Cursor> = None;
    let mut subscriber: Option<Session> = None;
    let mut token: Option<String> = None;
    let mut changes = state.changes.clone();
    let mut last_push_read: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            line = framed.next() => {
                let line = match line {
                    Some(Ok(l)) => l,
                    Some(Err(e)) => {
                        let r = Response { id: None, ok: false, result: None,
                            error: Some(ApiError::new(ErrorKind::Invalid, format!("bad line: {e}"))) };
                        let _ = framed.send(serde_json::to_string(&r).unwrap_or_default()).await;
                        break;
                    }
                    None => break,
                };
                let response = match serde_json::from_str::<Envelope>(&line) {
                    Ok(env) => {
                        token = env.token.clone().or(token);
                        let was = subscribed.is_some();
                        let r = seen_before(&mut changes, !was, handle(&state, env, &mut subscribed)).await;
                        if subscribed.is_some() && !was {
                            subscriber = state.session(token.as_deref());
                        }
                        r
                    }
                    Err(e) => Response { id: None, ok: false, result: None,
                        error: Some(ApiError::new(ErrorKind::Invalid, format!("not a request: {e}"))) },
                };
                if framed.send(serde_json::to_string(&response).unwrap_or_default()).await.is_err() {
                    break;
                }
            }
            r = changes.changed(), if subscribed.is_some() => {
                if r.is_err() { break; }
                // Still logged in? A push never outlives its session.
                let Some(s) = subscriber.as_ref().and_then(|_| state.session(token.as_deref())) else {
                    subscribed = None;
                    let _ = framed.send(json!({"push": "session_expired"}).to_string()).await;
                    continue;
                };
                let supervisor = s.role >= Role::Supervisor;
                let Some(cursor) = subscribed else { continue };
                if let Some(t) = last_push_read {
                    tokio::time::sleep_until(t + PUSH_MIN_GAP).await;
                }
                // Whatever changed while waiting is read now.
                changes.borrow_and_update();
                last_push_read = Some(tokio::time::Instant::now());
                match state.read(move |c| queries::changed_since(c, cursor, supervisor)).await {
                    Ok((changed, next)) => {
                        subscribed = Some(next);
                        if !changed.is_empty() {
                            let push = json!({"push": "queue", "changed": changed});
                            if framed.send(push.to_string()).await.is_err() { break; }
                        }
                    }
                    Err(e) => warn!(error = %e.message, "subscription query failed"),
                }
            }
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
}
