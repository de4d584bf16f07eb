//! The one authorisation function: every request passes [`authorize`] with the caller's
//! session and, when it names an alarm, that alarm's facts as read in the same transaction as
//! the action. An identifier is never a capability (the 2024 incident was CWE-639: any
//! logged-in user could read objects by changing an id).
//!
//! The rules, in order:
//!
//! 1. The request's least role ([`super::protocol::Op::access`], an exhaustive match): else
//!    `forbidden`, whatever the object, so a refusal says nothing about what exists.
//! 2. An alarm the caller may not see is `not_found`, exactly like an unknown id: the
//!    supervisor queue (unknown accounts, lockout and login alerts) is for supervisors only.
//! 3. A closed alarm can be read, not changed (`conflict`).
//! 4. One alarm has one handler: an alarm taken by another operator can be read, and changed
//!    only by a supervisor's `takeover` (with a reason). Acting on an alarm nobody has taken
//!    takes it ([`Grant::takes`]), except acknowledging, putting aside and closing.
//! 5. A duress alarm is closed only by a supervisor; a life-safety alarm is never put aside
//!    (`recall`) and never closed in bulk.
//!
//! Contacts named by `verify` and `call` are checked against the alarm's customer by the
//! handler (a foreign contact is answered like an unknown one, see `verify`); `reset_code`
//! names a contact and needs the supervisor role.
//!
//! Requests that name a site or an account ([`Request::target`]: `extend`, `service`,
//! `service_end`) pass [`authorize_target`] with its facts read in the writer's transaction
//! that acts on it: the role first (as above), then an unknown site or account is `not_found`,
//! then the object's state: an extension needs a schedule and a site in service; ending a
//! period needs one.

use super::Role;
use super::protocol::{Access, Op, Request};

/// A logged-in operator, as the session store found them for this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Session row.
    pub session_id: i64,
    /// Operator row.
    pub operator_id: i64,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Session expiry, Unix ms.
    pub expires_ms: i64,
}

/// What authorisation needs to know about an alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmFacts {
    /// Row id.
    pub id: i64,
    /// In the supervisor queue.
    pub supervisor_queue: bool,
    /// `new`, `acknowledged`, `in_progress` or `closed`.
    pub state: String,
    /// The operator handling it.
    pub owner: Option<String>,
    /// A duress alarm.
    pub duress: bool,
    /// Of a life-safety category (duress, hold-up, panic, fire, medical).
    pub life_safety: bool,
}

impl AlarmFacts {
    fn closed(&self) -> bool {
        self.state == "closed"
    }
}

/// What authorisation needs to know about the site or account a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFacts {
    /// The site (the account's, for an account).
    pub site_id: Option<i64>,
    /// The site has a schedule.
    pub has_schedule: bool,
    /// Its open test or out-of-service period.
    pub period: Option<crate::correlate::service::Mode>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The role does not allow the request.
    #[error("{op} requires the {role} role")]
    Forbidden {
        /// The request.
        op: &'static str,
        /// The role it needs.
        role: &'static str,
    },
    /// No such object, or not one the caller may see.
    #[error("no such alarm")]
    NotFound,
    /// No such site or account.
    #[error("no such site or account")]
    NoSuchTarget,
    /// Not possible in the object's state.
    #[error("{0}")]
    Conflict(String),
}

/// What the caller may go on to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Grant {
    /// The action takes the alarm for the caller (nobody handled it yet).
    pub takes: bool,
}

/// Whether `role` may make requests of `access` at all.
pub fn role_allows(role: Option<Role>, access: Access) -> bool {
    match access {
        Access::Anyone => true,
        Access::Role(least) => role.is_some_and(|r| r >= least),
    }
}

/// Decide a request. `alarm` holds the facts of the alarm the request names (`None`: unknown
/// id, or the request names none).
pub fn authorize(caller: &Caller, req: &Request, alarm: Option<&AlarmFacts>) -> Result<Grant, Denied> {
    decide(caller, req.op(), req.alarm().is_some(), alarm)
}

/// [`authorize`] for one alarm of a bulk request (`bulk_acknowledge`, `bulk_close`): the
/// same rules as the single request, with a supervisor's reach.
pub fn authorize_bulk_item(caller: &Caller, op: Op, alarm: Option<&AlarmFacts>) -> Result<Grant, Denied> {
    decide(caller, op, true, alarm)
}

/// Decide a request that names a site or an account ([`Request::target`]); `target` holds its
/// facts (`None`: no such site or account).
pub fn authorize_target(caller: &Caller, req: &Request, target: Option<&TargetFacts>) -> Result<Grant, Denied> {
    let op = req.op();
    role(caller, op)?;
    let Some(t) = target else {
        return Err(Denied::NoSuchTarget);
    };
    use crate::correlate::service::Mode;
    match op {
        Op::Extend if !t.has_schedule => Err(Denied::Conflict("the site has no schedule to extend".into())),
        Op::Extend if t.period == Some(Mode::OutOfService) => {
            Err(Denied::Conflict("the site is out of service".into()))
        }
        Op::ServiceEnd if t.period.is_none() => Err(Denied::Conflict(
            "the site or account is neither on test nor out of service".into(),
        )),
        _ => Ok(Grant::default()),
    }
}

/// The request's least role.
fn role(caller: &Caller, op: Op) -> Result<(), Denied> {
    let access = op.access();
    if !role_allows(Some(caller.role), access) {
        let Access::Role(least) = access else {
            return Err(Denied::Conflict("not allowed".into()));
        };
        return Err(Denied::Forbidden {
            op: op.as_str(),
            role: least.as_str(),
        });
    }
    Ok(())
}

fn decide(caller: &Caller, op: Op, names_alarm: bool, alarm: Option<&AlarmFacts>) -> Result<Grant, Denied> {
    role(caller, op)?;
    if !names_alarm {
        return Ok(Grant::default());
    }
    let supervisor = caller.role >= Role::Supervisor;
    let Some(a) = alarm else {
        return Err(Denied::NotFound);
    };
    if a.supervisor_queue && !supervisor {
        return Err(Denied::NotFound);
    }
    if op == Op::Alarm {
        return Ok(Grant::default());
    }
    if a.closed() {
        return Err(Denied::Conflict("the alarm is already closed".into()));
    }
    let mine = a.owner.as_deref() == Some(caller.name.as_str());
    let other = a.owner.as_ref().filter(|_| !mine);
    match op {
        Op::Takeover => {
            if mine {
                return Err(Denied::Conflict("you are already handling this alarm".into()));
            }
            Ok(Grant { takes: true })
        }
        Op::Release => {
            if mine || (supervisor && other.is_some()) {
                Ok(Grant::default())
            } else {
                Err(Denied::Conflict("nobody is handling this alarm".into()))
            }
        }
        _ if other.is_some() => Err(Denied::Conflict(format!(
            "{} is handling this alarm{}",
            other.map_or("another operator", |o| o.as_str()),
            if supervisor { ": take it over first" } else { "" }
        ))),
        Op::Close | Op::BulkClose if a.duress && !supervisor => Err(Denied::Forbidden {
            op: op.as_str(),
            role: "supervisor (a duress alarm)",
        }),
        Op::BulkClose if a.life_safety || a.duress => Err(Denied::Conflict(
            "a life-safety alarm is never closed in bulk: handle it on its own".into(),
        )),
        Op::Recall if a.life_safety || a.duress => Err(Denied::Conflict(
            "a life-safety alarm is never put aside: handle it now".into(),
        )),
        Op::Acknowledge | Op::BulkAcknowledge | Op::Close | Op::BulkClose | Op::Recall => Ok(Grant::default()),
        Op::Start | Op::Note | Op::Step | Op::Call | Op::Verify => Ok(Grant { takes: !mine }),
        Op::Login
        | Op::Logout
        | Op::Whoami
        | Op::Queue
        | Op::Alarm
        | Op::Supervision
        | Op::Search
        | Op::Subscribe
        | Op::HandoverAdd
        | Op::Handovers
        | Op::ResetCode
        | Op::Operators
        | Op::Schedules
        | Op::Extend
        | Op::Service
        | Op::ServiceEnd => Ok(Grant::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, name: &str) -> Caller {
        Caller {
            session_id: 1,
            operator_id: 1,
            name: name.into(),
            role,
            expires_ms: i64::MAX,
        }
    }

    fn facts(owner: Option<&str>) -> AlarmFacts {
        AlarmFacts {
            id: 1,
            supervisor_queue: false,
            state: "acknowledged".into(),
            owner: owner.map(str::to_string),
            duress: false,
            life_safety: false,
        }
    }

    #[test]
    fn the_role_is_checked_before_the_object_so_a_refusal_reveals_nothing() {
        let olga = caller(Role::Operator, "olga");
        for a in [None, Some(facts(None))] {
            let r = authorize_bulk_item(&olga, Op::Takeover, a.as_ref());
            assert!(matches!(r, Err(Denied::Forbidden { .. })), "{r:?}");
        }
    }

    #[test]
    fn an_owned_alarm_is_read_by_anyone_and_changed_only_by_its_owner_or_a_takeover() {
        let (olga, otto, sam) = (
            caller(Role::Operator, "olga"),
            caller(Role::Operator, "otto"),
            caller(Role::Supervisor, "sam"),
        );
        let a = facts(Some("olga"));
        assert_eq!(decide(&otto, Op::Alarm, true, Some(&a)), Ok(Grant::default()));
        assert!(matches!(
            decide(&otto, Op::Close, true, Some(&a)),
            Err(Denied::Conflict(_))
        ));
        assert!(matches!(
            decide(&sam, Op::Close, true, Some(&a)),
            Err(Denied::Conflict(_))
        ));
        assert_eq!(decide(&sam, Op::Takeover, true, Some(&a)), Ok(Grant { takes: true }));
        assert_eq!(decide(&olga, Op::Note, true, Some(&a)), Ok(Grant { takes: false }));
        assert_eq!(
            decide(&otto, Op::Note, true, Some(&facts(None))),
            Ok(Grant { takes: true })
        );
    }
}
