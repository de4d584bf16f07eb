//! One verification attempt: a candidate code, given by a caller for a contact, checked on an
//! open alarm of that contact's customer. There is no free-standing "check this code" oracle.
//!
//! Three phases, so the expensive part never runs inside the store writer's transaction (the
//! writer serves panels):
//!
//! 1. [`load`] reads the alarm, the contact, its verifiers and the customer's lock state;
//! 2. [`compute`] hashes — always exactly two Argon2id computations (the cancellation
//!    verifier and the duress verifier, a dummy where either is missing or the contact is
//!    unknown), so neither the answer nor the time taken tells which matched or whether a code
//!    exists — and decides the verdict;
//! 3. [`record`] re-reads the state inside the write transaction (refusing if it changed),
//!    then records the attempt, its effect on the alarm, the counters and the audit record.
//!
//! Verdicts and what they do:
//!
//! | verdict | to the caller | effect |
//! |---|---|---|
//! | `Accepted` | verified | the phone factor is recorded on the alarm; the contact's reject run ends |
//! | `Duress` | verified (as `Accepted`) | the alarm silently becomes a top-priority duress alarm, never cancellable |
//! | `Rejected` | not verified | counted per contact and per operator; handle the alarm as real |
//! | `Locked` | locked: use call-back | nothing counted; handle the alarm as real |
//! | `Invalidated` | invalidated: use call-back | the code must be set again; handle the alarm as real |
//!
//! A duress code given while the customer is locked or its codes are invalidated still
//! escalates the alarm silently; the answer stays "locked" or "invalidated", as it would for
//! any other code, so the person forcing the caller learns nothing.

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::audit::{self, AuditRecord};
use super::codes::{Code, Kind};
use super::hash::{Check, HashError, Hasher, NewVerifier, Stored};
use super::lockout::{self, Limits};
use crate::correlate::alarms;
use crate::store::StoreError;

/// The result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The cancellation code matched.
    Accepted,
    /// The duress code matched. Callers must show this exactly like [`Verdict::Accepted`]
    /// (see [`Verdict::answer`]).
    Duress,
    /// No match (also: unknown contact, contact of another customer, no code set).
    Rejected,
    /// Phone cancellation is locked for the customer.
    Locked,
    /// The code was invalidated (bulk reset) and must be set again.
    Invalidated,
}

impl Verdict {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Accepted => "accepted",
            Verdict::Duress => "duress",
            Verdict::Rejected => "rejected",
            Verdict::Locked => "locked",
            Verdict::Invalidated => "invalidated",
        }
    }

    /// What an interface may show: a duress code answers exactly like the right code.
    pub fn answer(&self) -> Answer {
        match self {
            Verdict::Accepted | Verdict::Duress => Answer::Verified,
            Verdict::Rejected => Answer::NotVerified,
            Verdict::Locked => Answer::Locked,
            Verdict::Invalidated => Answer::Invalidated,
        }
    }
}

/// What the operator's screen (and so the caller) may be told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Verified.
    Verified,
    /// Not verified: handle the alarm as real.
    NotVerified,
    /// Locked: use call-back to a registered number; handle the alarm as real.
    Locked,
    /// Invalidated: use call-back; handle the alarm as real.
    Invalidated,
}

/// Which alarm, which contact, which operator. Alarm and contact by their public (opaque)
/// ids, as the operator API knows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    /// The alarm's public id.
    pub alarm: String,
    /// The contact's public id.
    pub contact: String,
    /// The authenticated operator.
    pub operator: String,
}

/// A verification that could not be carried out (as opposed to a verdict).
#[derive(Debug, Clone, thiserror::Error)]
pub enum VerifyError {
    /// No such alarm.
    #[error("no such alarm")]
    NoSuchAlarm,
    /// The alarm is closed: codes are verified on open alarms only.
    #[error("the alarm is closed; a code is verified only on an open alarm")]
    AlarmClosed,
    /// Another operator handles the alarm.
    #[error("{0} is handling this alarm")]
    HandledByOther(String),
    /// The operator made too many verifications within the hour (across customers).
    #[error("{0} phone code verifications within the hour: more are refused; a supervisor has been told")]
    RateLimited(i64),
    /// The alarm has no customer (supervisor queue).
    #[error("the alarm has no customer record, so no contact can cancel it")]
    NoCustomer,
    /// No operator given.
    #[error("an authenticated operator is required")]
    NoOperator,
    /// The codes or the lock changed between reading and recording (another process reset or
    /// invalidated them): nothing was recorded, try again.
    #[error("the codes changed during the verification; nothing was recorded, try again")]
    Changed,
    /// Hashing failed.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The database failed.
    #[error("database error")]
    Store(#[source] std::sync::Arc<StoreError>),
    /// The verification task was cancelled.
    #[error("the verification was interrupted")]
    Interrupted,
}

impl From<StoreError> for VerifyError {
    fn from(e: StoreError) -> Self {
        VerifyError::Store(std::sync::Arc::new(e))
    }
}

impl From<rusqlite::Error> for VerifyError {
    fn from(e: rusqlite::Error) -> Self {
        VerifyError::from(StoreError::from(e))
    }
}

/// A verifier slot as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// The verifier.
    pub stored: Stored,
    /// Invalidated by a bulk reset.
    pub invalidated: bool,
}

/// The contact, when it may cancel this alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Row id.
    pub id: i64,
    /// Reference.
    pub reference: String,
}

/// Everything read before hashing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// Alarm row.
    pub alarm_id: i64,
    /// Alarm public id.
    pub alarm_public_id: String,
    /// Account of the alarm.
    pub account: String,
    /// Customer row.
    pub customer_id: i64,
    /// Customer reference.
    pub customer: String,
    /// The contact, when known, of this customer and allowed to cancel; else the attempt is
    /// checked against dummies and rejected.
    pub caller: Option<Caller>,
    /// The cancellation verifier.
    pub cancel: Option<Slot>,
    /// The duress verifier.
    pub duress: Option<Slot>,
    /// Phone cancellation locked for the customer.
    pub locked: bool,
    /// The operator handling the alarm.
    pub owner: Option<String>,
}

/// What was recorded: the verdict, and the failure counter after it (the contact's, or for a
/// contact that may not cancel this alarm the customer's count of such attempts, so the answer
/// cannot tell the two apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// The verdict.
    pub verdict: Verdict,
    /// Consecutive wrong codes counted now, when a counter applies.
    pub failures: Option<i64>,
}

fn slot(conn: &Connection, contact_id: i64, kind: Kind) -> Result<Option<Slot>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT argon2_phc, pepper_id, invalidated_ms IS NOT NULL FROM code_verifiers
             WHERE contact_id = ?1 AND kind = ?2",
            params![contact_id, kind.as_str()],
            |r| {
                Ok(Slot {
                    stored: Stored {
                        phc: r.get(0)?,
                        pepper_id: r.get(1)?,
                    },
                    invalidated: r.get(2)?,
                })
            },
        )
        .optional()?)
}

/// Phase 1: read what the attempt needs.
pub fn load(conn: &Connection, req: &VerifyRequest) -> Result<Attempt, VerifyError> {
    if req.operator.trim().is_empty() {
        return Err(VerifyError::NoOperator);
    }
    type AlarmRow = (i64, String, String, String, Option<i64>, Option<String>, Option<String>);
    let alarm: Option<AlarmRow> = conn
        .query_row(
            "SELECT a.id, a.public_id, a.account, a.state, s.customer_id, c.ref, a.owner
             FROM alarms a LEFT JOIN sites s ON s.id = a.site_id LEFT JOIN customers c ON c.id = s.customer_id
             WHERE a.public_id = ?1",
            params![req.alarm],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((alarm_id, alarm_public_id, account, state, customer_id, customer, owner)) = alarm else {
        return Err(VerifyError::NoSuchAlarm);
    };
    if state == "closed" {
        return Err(VerifyError::AlarmClosed);
    }
    if let Some(o) = owner.as_ref().filter(|o| **o != req.operator) {
        return Err(VerifyError::HandledByOther(o.clone()));
    }
    let (Some(customer_id), Some(customer)) = (customer_id, customer) else {
        return Err(VerifyError::NoCustomer);
    };
    let contact: Option<(i64, String, i64, bool)> = conn
        .query_row(
            "SELECT id, ref, customer_id, may_cancel FROM contacts WHERE public_id = ?1",
            params![req.contact],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let caller = contact
        .filter(|(_, _, cust, may)| *cust == customer_id && *may)
        .map(|(id, reference, _, _)| Caller { id, reference });
    let (cancel, duress) = match &caller {
        Some(c) => (slot(conn, c.id, Kind::Cancel)?, slot(conn, c.id, Kind::Duress)?),
        None => (None, None),
    };
    Ok(Attempt {
        alarm_id,
        alarm_public_id,
        account,
        customer_id,
        customer,
        caller,
        cancel,
        duress,
        locked: lockout::is_locked(conn, customer_id)?,
        owner,
    })
}

/// The result of phase 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Computed {
    /// The verdict.
    pub verdict: Verdict,
    /// The duress code matched: escalate silently, whatever the verdict says.
    pub escalate: bool,
    /// A new verifier replacing the one that matched (its cost was below policy, or its
    /// pepper retired).
    pub rehash: Option<(Kind, NewVerifier)>,
}

/// Phase 2: two Argon2id computations (plus one to re-hash after a policy change), and the
/// verdict. Touches no database.
pub fn compute(hasher: &Hasher, a: &Attempt, candidate: &Code) -> Result<Computed, HashError> {
    let cancel = hasher.check(a.cancel.as_ref().map(|s| &s.stored), candidate);
    let duress = hasher.check(a.duress.as_ref().map(|s| &s.stored), candidate);
    if duress == Check::Unusable && a.duress.is_some() {
        tracing::warn!(
            customer = %a.customer,
            "a duress verifier cannot be used (its pepper is not loaded): duress cannot be detected for this contact"
        );
    }
    let escalate = duress.matched();
    let invalidated = a.cancel.as_ref().is_some_and(|s| s.invalidated)
        || a.duress.as_ref().is_some_and(|s| s.invalidated)
        || cancel == Check::Unusable;
    let verdict = if a.locked {
        Verdict::Locked
    } else if a.caller.is_some() && invalidated {
        Verdict::Invalidated
    } else if escalate {
        Verdict::Duress
    } else if cancel.matched() {
        Verdict::Accepted
    } else {
        Verdict::Rejected
    };
    let rehash = match (verdict, cancel, duress) {
        (Verdict::Accepted, Check::Match { rehash: true }, _) => Some((Kind::Cancel, hasher.hash(candidate)?)),
        (Verdict::Duress, _, Check::Match { rehash: true }) => Some((Kind::Duress, hasher.hash(candidate)?)),
        _ => None,
    };
    Ok(Computed {
        verdict,
        escalate,
        rehash,
    })
}

/// Phase 3, inside the write transaction. The outer error is a database failure (roll back);
/// the inner one a refusal found before anything was written.
pub fn record(
    tx: &Transaction<'_>,
    req: &VerifyRequest,
    a: &Attempt,
    c: &Computed,
    now: i64,
    limits: &Limits,
) -> Result<Result<Recorded, VerifyError>, StoreError> {
    let fresh = match load(tx, req) {
        Ok(f) => f,
        Err(VerifyError::Store(e)) => {
            return Err(std::sync::Arc::try_unwrap(e).unwrap_or(StoreError::WriterGone));
        }
        Err(e) => return Ok(Err(e)),
    };
    if fresh != *a {
        return Ok(Err(VerifyError::Changed));
    }
    let op = req.operator.as_str();
    let logged = if c.escalate { "duress" } else { c.verdict.as_str() };
    tx.execute(
        "INSERT INTO code_attempts (at_ms, operator, alarm_id, contact_id, verdict) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![now, op, a.alarm_id, a.caller.as_ref().map(|k| k.id), logged],
    )?;
    let mut failures = None;
    match c.verdict {
        Verdict::Accepted => {
            if let Some(k) = &a.caller {
                lockout::record_accept(tx, k.id)?;
                alarms::record_phone_factor(tx, a.alarm_id, k.id, now)?;
                failures = Some(0);
            }
        }
        Verdict::Duress => {}
        Verdict::Rejected => {
            alarms::log(
                tx,
                a.alarm_id,
                now,
                op,
                "phone_code",
                "phone cancellation code not verified: handle the alarm as real",
            )?;
            let (n, locked_now) = match &a.caller {
                Some(k) => lockout::record_reject(tx, k.id, a.customer_id, now, limits)?,
                None => lockout::record_foreign_reject(tx, a.customer_id, now, limits)?,
            };
            failures = Some(n);
            if locked_now {
                lock_effects(tx, a, a.caller.as_ref(), n, limits, now)?;
            }
        }
        Verdict::Locked => {
            alarms::log(
                tx,
                a.alarm_id,
                now,
                op,
                "phone_code",
                "phone cancellation is locked for this customer: handle the alarm as real, use call-back",
            )?;
            failures = Some(match &a.caller {
                Some(k) => lockout::consecutive_failures(tx, k.id)?,
                None => lockout::foreign_failures(tx, a.customer_id)?,
            });
            // An attempt while locked is what a guesser of duress codes would make: each one
            // is on the supervisor's item for this lock.
            lockout::alert_supervisor(
                tx,
                &format!("code-locked-attempts:customer:{}", a.customer),
                &format!(
                    "Phone codes tried while phone cancellation is locked for customer {} (operator {op})",
                    a.customer
                ),
                &format!("customer:{}", a.customer),
                limits,
                now,
            )?;
        }
        Verdict::Invalidated => {
            alarms::log(
                tx,
                a.alarm_id,
                now,
                op,
                "phone_code",
                "the phone cancellation code was invalidated: handle the alarm as real, use call-back",
            )?;
        }
    }
    if c.escalate {
        alarms::raise_duress(tx, a.alarm_id, now)?;
    }
    let subject = match &a.caller {
        Some(k) => format!("contact:{}", k.reference),
        None => "contact:unknown".to_string(),
    };
    audit::append(
        tx,
        now,
        &AuditRecord {
            actor: op,
            action: "code_verify",
            subject: &subject,
            detail: &format!(
                "alarm:{} account:{} customer:{} channel:phone",
                a.alarm_public_id, a.account, a.customer
            ),
            result: logged,
            failures,
        },
    )?;
    if let (Some((kind, v)), Some(k)) = (&c.rehash, &a.caller) {
        let old = match kind {
            Kind::Cancel => a.cancel.as_ref(),
            Kind::Duress => a.duress.as_ref(),
        };
        if let Some(old) = old {
            let n = tx.execute(
                "UPDATE code_verifiers SET argon2_phc = ?3, pepper_id = ?4
                 WHERE contact_id = ?1 AND kind = ?2 AND argon2_phc = ?5",
                params![k.id, kind.as_str(), v.phc, v.pepper_id, old.stored.phc],
            )?;
            if n == 1 {
                let from = Hasher::cost_of(&old.stored.phc).map_or("?".to_string(), |c| c.to_string());
                let to = Hasher::cost_of(&v.phc).map_or("?".to_string(), |c| c.to_string());
                audit::append(
                    tx,
                    now,
                    &AuditRecord {
                        actor: "system",
                        action: "code_rehash",
                        subject: &subject,
                        detail: &format!("{from} pepper:{} -> {to} pepper:{}", old.stored.pepper_id, v.pepper_id),
                        result: "ok",
                        failures: None,
                    },
                )?;
            }
        }
    }
    if matches!(c.verdict, Verdict::Rejected | Verdict::Locked | Verdict::Invalidated) {
        let n = lockout::operator_rejects_last_hour(tx, op, now)?;
        if n > i64::from(limits.operator_alert_per_hour) {
            lockout::alert_supervisor(
                tx,
                &format!("code-rejects:operator:{op}"),
                &format!("Operator {op}: {n} phone cancellation codes not verified within an hour"),
                &format!("operator:{op}"),
                limits,
                now,
            )?;
        }
    }
    tracing::info!(
        alarm = %a.alarm_public_id, operator = op, answer = ?c.verdict.answer(),
        "phone cancellation code checked"
    );
    Ok(Ok(Recorded {
        verdict: c.verdict,
        failures,
    }))
}

fn lock_effects(
    tx: &Transaction<'_>,
    a: &Attempt,
    k: Option<&Caller>,
    n: i64,
    limits: &Limits,
    now: i64,
) -> Result<(), StoreError> {
    let contact = k.map_or("a contact not allowed to cancel", |k| k.reference.as_str());
    alarms::log(
        tx,
        a.alarm_id,
        now,
        "system",
        "phone_code_locked",
        &format!("phone cancellation locked after {n} wrong codes: handle the alarm as real, use call-back"),
    )?;
    audit::append(
        tx,
        now,
        &AuditRecord {
            actor: "system",
            action: "code_lockout",
            subject: &format!("customer:{}", a.customer),
            detail: &format!("contact:{contact} alarm:{}", a.alarm_public_id),
            result: "locked",
            failures: Some(n),
        },
    )?;
    lockout::alert_supervisor(
        tx,
        &format!("code-lockout:customer:{}", a.customer),
        &format!(
            "Phone cancellation locked for customer {} after {n} wrong codes (contact {contact}): reset the code",
            a.customer
        ),
        &format!("customer:{}", a.customer),
        limits,
        now,
    )?;
    Ok(())
}

/// All three phases on one connection, for tools and tests. The daemon uses
/// [`super::service::CodeService`], which hashes outside the writer's transaction.
pub fn verify_blocking(
    conn: &mut Connection,
    hasher: &Hasher,
    limits: &Limits,
    req: &VerifyRequest,
    candidate: Code,
    now: i64,
) -> Result<Verdict, VerifyError> {
    let attempt = load(conn, req)?;
    let computed = compute(hasher, &attempt, &candidate)?;
    drop(candidate);
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let v = record(&tx, req, &attempt, &computed, now, limits)??;
    tx.commit()?;
    Ok(v.verdict)
}
