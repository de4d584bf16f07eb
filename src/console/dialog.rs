//! Dialogs over a screen, and what keys do in them. A dialog that asks several things is a
//! flow of stages: Escape goes back one stage (and out of the first), never further; the last
//! stage of a flow that changes an alarm's fate asks "… ? y/n".

use super::app::{App, Key, Pending, Secret};
use crate::correlate::alarms::Disposition;
use crate::operator::protocol::{CallOutcome, Envelope, Request, Typed};

/// The outcome of a phone code verification, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyShown {
    /// Accepted.
    Accepted,
    /// Rejected, attempts left before the lock.
    Rejected(Option<u32>),
    /// Locked.
    Locked,
    /// Invalidated: use call-back.
    Invalidated,
    /// Duress.
    Duress,
    /// The request failed.
    Failed(String),
}

/// Dispositions offered, with their names for people.
pub const DISPOSITIONS: &[(Disposition, &str)] = &[
    (Disposition::CancelledByCustomer, "Cancelled by customer (both factors)"),
    (Disposition::Dispatched, "Dispatched"),
    (Disposition::TechnicalFault, "Technical fault"),
    (Disposition::Test, "Test"),
    (Disposition::FalseAlarm, "False alarm"),
    (Disposition::Duplicate, "Duplicate"),
    (Disposition::Other, "Other"),
];

/// Longest note, reason or handover text the console takes.
pub const MAX_TEXT: usize = 2000;

/// A dialog.
#[derive(Debug, Clone, PartialEq)]
pub enum Dialog {
    /// Verify a phone code.
    Verify {
        /// Index into the alarm's contacts that may cancel.
        contact: usize,
        /// What the operator typed (shown masked).
        code: Secret,
        /// Result of the last attempt.
        result: Option<VerifyShown>,
    },
    /// A note on the open alarm.
    Note {
        /// Text so far.
        text: String,
    },
    /// Close the alarm.
    Close(CloseFlow),
    /// A supervisor takes the alarm over.
    Takeover {
        /// The alarm.
        alarm: String,
        /// Why (audited).
        reason: String,
    },
    /// Log a call.
    Call(CallFlow),
    /// Put the alarm aside.
    Recall {
        /// The alarm.
        alarm: String,
        /// In how many minutes it comes back (digits).
        minutes: String,
        /// What to do then.
        note: String,
        /// 0: minutes, 1: note.
        field: usize,
    },
    /// A note for the next shift.
    Handover {
        /// Text so far.
        text: String,
    },
    /// A supervisor acknowledges or closes a site's alarms.
    Bulk(BulkFlow),
    /// An operator extends the site's schedule ("we stay until 23:30 tonight").
    Extend {
        /// The site.
        site: String,
        /// Until `HH:MM`, the site's local time.
        until: String,
        /// What the caller said.
        reason: String,
        /// 0: until, 1: reason.
        field: usize,
    },
    /// A supervisor puts a site or an account on test or out of service.
    Service(ServiceFlow),
    /// A supervisor ends a period: "End … ? y/n".
    ServiceEnd {
        /// What ends, for people.
        label: String,
        /// The site, or
        site: Option<String>,
        /// the account.
        account: Option<String>,
    },
}

/// Putting a site or an account on test (for minutes) or out of service (for days), with a
/// reason.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceFlow {
    /// Test or out of service.
    pub mode: crate::correlate::service::Mode,
    /// A site reference, or `#` and an account number.
    pub target: String,
    /// How long: minutes on test, days out of service (digits).
    pub amount: String,
    /// Why.
    pub reason: String,
    /// 0: target, 1: amount, 2: reason.
    pub field: usize,
}

impl ServiceFlow {
    /// A flow for `target` (may be empty), with the usual length: an hour on test, a week out
    /// of service.
    pub fn new(mode: crate::correlate::service::Mode, target: String) -> ServiceFlow {
        ServiceFlow {
            mode,
            field: if target.is_empty() { 0 } else { 2 },
            target,
            amount: match mode {
                crate::correlate::service::Mode::Test => "60".into(),
                crate::correlate::service::Mode::OutOfService => "7".into(),
            },
            reason: String::new(),
        }
    }

    /// The unit of `amount`.
    pub fn unit(&self) -> &'static str {
        match self.mode {
            crate::correlate::service::Mode::Test => "minutes",
            crate::correlate::service::Mode::OutOfService => "days",
        }
    }

    /// The request, when every field is filled in.
    fn request(&self) -> Result<Request, &'static str> {
        use crate::correlate::service::Mode;
        let n: u32 = self.amount.parse().map_err(|_| "how long: a whole number")?;
        let minutes = match self.mode {
            Mode::Test if (1..=7 * 1440).contains(&n) => n,
            Mode::OutOfService if (1..=366).contains(&n) => n * 1440,
            Mode::Test => return Err("on test for 1 to 10080 minutes"),
            Mode::OutOfService => return Err("out of service for 1 to 366 days"),
        };
        let t = self.target.trim();
        if t.is_empty() || t == "#" {
            return Err("which site (its reference) or account (# and its number)?");
        }
        if self.reason.trim().is_empty() {
            return Err("a reason is needed");
        }
        let (site, account) = match t.strip_prefix('#') {
            Some(a) => (None, Some(a.trim().to_string())),
            None => (Some(t.to_string()), None),
        };
        Ok(Request::Service {
            site,
            account,
            mode: self.mode,
            until_ms: None,
            minutes: Some(minutes),
            reason: self.reason.trim().to_string(),
        })
    }
}

/// Stages of closing an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseStage {
    /// Choose the disposition.
    Choose,
    /// The note `other` and `false alarm` need.
    Note,
    /// Why mandatory steps were not done.
    Reason,
    /// "Close as … ? y/n".
    Confirm,
}

/// Closing an alarm deliberately: disposition, the note it needs, the reason for open
/// mandatory steps, then a confirmation.
#[derive(Debug, Clone, PartialEq)]
pub struct CloseFlow {
    /// The alarm.
    pub alarm: String,
    /// Dispositions offered.
    pub options: Vec<(Disposition, &'static str)>,
    /// Mandatory steps not ticked when the dialog opened.
    pub open_steps: Vec<u32>,
    /// Where the flow is.
    pub stage: CloseStage,
    /// Selected disposition.
    pub choice: usize,
    /// The note.
    pub note: String,
    /// The reason for the open steps.
    pub reason: String,
}

impl CloseFlow {
    /// At its first stage.
    pub fn new(alarm: String, options: Vec<(Disposition, &'static str)>, open_steps: Vec<u32>) -> CloseFlow {
        CloseFlow {
            alarm,
            options,
            open_steps,
            stage: CloseStage::Choose,
            choice: 0,
            note: String::new(),
            reason: String::new(),
        }
    }

    /// The disposition chosen.
    pub fn chosen(&self) -> Option<(Disposition, &'static str)> {
        self.options.get(self.choice).copied()
    }

    /// The chosen disposition needs a note.
    pub fn needs_note(&self) -> bool {
        matches!(self.chosen(), Some((Disposition::Other | Disposition::FalseAlarm, _)))
    }

    /// Mandatory steps are open: a reason is needed.
    pub fn needs_reason(&self) -> bool {
        !self.open_steps.is_empty()
    }

    /// The confirmation question.
    pub fn question(&self) -> String {
        format!("Close as {}? y/n", self.chosen().map_or("?", |(_, l)| l))
    }

    fn forward(&mut self) {
        self.stage = match self.stage {
            CloseStage::Choose if self.needs_note() => CloseStage::Note,
            CloseStage::Choose | CloseStage::Note if self.needs_reason() => CloseStage::Reason,
            _ => CloseStage::Confirm,
        };
    }

    /// One stage back; false when there is none.
    fn back(&mut self) -> bool {
        self.stage = match self.stage {
            CloseStage::Choose => return false,
            CloseStage::Confirm if self.needs_reason() => CloseStage::Reason,
            CloseStage::Confirm | CloseStage::Reason if self.needs_note() => CloseStage::Note,
            _ => CloseStage::Choose,
        };
        true
    }
}

/// Stages of logging a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStage {
    /// Whom.
    Contact,
    /// Which number (a contact with several).
    Phone,
    /// How it went.
    Outcome,
}

/// Logging a call: contact (the suggested next one first), number, outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CallFlow {
    /// The alarm.
    pub alarm: String,
    /// Where the flow is.
    pub stage: CallStage,
    /// Index into the alarm's contacts.
    pub contact: usize,
    /// Index into the contact's numbers.
    pub phone: usize,
    /// Index into [`CallOutcome::ALL`].
    pub outcome: usize,
}

impl CallFlow {
    /// At its first stage, on a contact.
    pub fn new(alarm: String, contact: usize) -> CallFlow {
        CallFlow {
            alarm,
            stage: CallStage::Contact,
            contact,
            phone: 0,
            outcome: 0,
        }
    }
}

/// Which bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkKind {
    /// Acknowledge them all.
    Acknowledge,
    /// Close them all (never a life-safety alarm: the server skips those).
    Close,
}

/// Stages of a bulk action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BulkStage {
    /// The disposition (close only).
    Choose,
    /// The one reason for all.
    Reason,
    /// "… ? y/n".
    Confirm,
}

/// A supervisor's action on a site's alarms.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkFlow {
    /// Which.
    pub kind: BulkKind,
    /// The group's label.
    pub label: String,
    /// The alarms.
    pub alarms: Vec<String>,
    /// Where the flow is.
    pub stage: BulkStage,
    /// Selected disposition ([`BulkFlow::options`]).
    pub choice: usize,
    /// The reason.
    pub reason: String,
}

impl BulkFlow {
    /// At its first stage.
    pub fn new(kind: BulkKind, label: String, alarms: Vec<String>) -> BulkFlow {
        BulkFlow {
            kind,
            label,
            alarms,
            stage: match kind {
                BulkKind::Acknowledge => BulkStage::Reason,
                BulkKind::Close => BulkStage::Choose,
            },
            choice: 0,
            reason: String::new(),
        }
    }

    /// Dispositions a bulk close offers (a cancellation needs both factors on each alarm).
    pub fn options() -> Vec<(Disposition, &'static str)> {
        DISPOSITIONS
            .iter()
            .copied()
            .filter(|(d, _)| *d != Disposition::CancelledByCustomer)
            .collect()
    }

    /// The confirmation question.
    pub fn question(&self) -> String {
        match self.kind {
            BulkKind::Acknowledge => format!("Acknowledge {} alarm(s) of {}? y/n", self.alarms.len(), self.label),
            BulkKind::Close => format!(
                "Close {} alarm(s) of {} as {}? y/n",
                self.alarms.len(),
                self.label,
                BulkFlow::options().get(self.choice).map_or("?", |(_, l)| l)
            ),
        }
    }
}

/// Type into a text field: true if the key was a text key.
fn edit(text: &mut String, key: Key) -> bool {
    match key {
        Key::Char(c) if text.chars().count() < MAX_TEXT => text.push(c),
        Key::Char(_) => {}
        Key::Backspace => {
            text.pop();
        }
        _ => return false,
    }
    true
}

/// Move a choice in a list of `n`.
fn choose(at: &mut usize, n: usize, key: Key) -> bool {
    let last = n.saturating_sub(1);
    *at = match key {
        Key::Up => at.saturating_sub(1),
        Key::Down => (*at + 1).min(last),
        Key::Home => 0,
        Key::End => last,
        _ => return false,
    };
    true
}

type Step = (Option<Dialog>, Vec<Envelope>);

impl App {
    /// A key while a dialog is open.
    pub(super) fn dialog_key(&mut self, key: Key) -> Vec<Envelope> {
        let Some(d) = self.dialog.take() else {
            return Vec::new();
        };
        let (next, out) = match d {
            Dialog::Verify { contact, code, result } => self.verify_key(contact, code, result, key),
            Dialog::Note { mut text } => match key {
                Key::Esc => (None, Vec::new()),
                Key::Enter if !text.trim().is_empty() => match self.alarm.as_ref().map(|a| a.alarm.id.clone()) {
                    Some(alarm) => (None, vec![self.request(Pending::Action, Request::Note { alarm, text })]),
                    None => (None, Vec::new()),
                },
                k => {
                    edit(&mut text, k);
                    (Some(Dialog::Note { text }), Vec::new())
                }
            },
            Dialog::Takeover { alarm, mut reason } => match key {
                Key::Esc => (None, Vec::new()),
                Key::Enter if !reason.trim().is_empty() => {
                    let body = Request::Takeover { alarm, reason };
                    (None, vec![self.request(Pending::Action, body)])
                }
                k => {
                    edit(&mut reason, k);
                    (Some(Dialog::Takeover { alarm, reason }), Vec::new())
                }
            },
            Dialog::Handover { mut text } => match key {
                Key::Esc => (None, Vec::new()),
                Key::Enter if !text.trim().is_empty() => (
                    None,
                    vec![self.request(Pending::Handover, Request::HandoverAdd { text })],
                ),
                k => {
                    edit(&mut text, k);
                    (Some(Dialog::Handover { text }), Vec::new())
                }
            },
            Dialog::Recall {
                alarm,
                mut minutes,
                mut note,
                mut field,
            } => match key {
                Key::Esc => (None, Vec::new()),
                Key::Tab | Key::Up | Key::Down => {
                    field = 1 - field;
                    (
                        Some(Dialog::Recall {
                            alarm,
                            minutes,
                            note,
                            field,
                        }),
                        Vec::new(),
                    )
                }
                Key::Enter => match minutes.parse::<u32>() {
                    Ok(m @ 1..=1440) => {
                        let note = Some(note.trim().to_string()).filter(|n| !n.is_empty());
                        let body = Request::Recall {
                            alarm,
                            minutes: m,
                            note,
                        };
                        (None, vec![self.request(Pending::ActionLeave, body)])
                    }
                    _ => {
                        self.status = Some(("put aside for 1 to 1440 minutes".into(), true));
                        (
                            Some(Dialog::Recall {
                                alarm,
                                minutes,
                                note,
                                field: 0,
                            }),
                            Vec::new(),
                        )
                    }
                },
                k => {
                    if field == 0 {
                        match k {
                            Key::Char(c) if c.is_ascii_digit() && minutes.len() < 4 => minutes.push(c),
                            Key::Backspace => {
                                minutes.pop();
                            }
                            _ => {}
                        }
                    } else {
                        edit(&mut note, k);
                    }
                    (
                        Some(Dialog::Recall {
                            alarm,
                            minutes,
                            note,
                            field,
                        }),
                        Vec::new(),
                    )
                }
            },
            Dialog::Close(flow) => self.close_key(flow, key),
            Dialog::Call(flow) => self.call_key(flow, key),
            Dialog::Bulk(flow) => self.bulk_key(flow, key),
            Dialog::Extend {
                site,
                mut until,
                mut reason,
                mut field,
            } => match key {
                Key::Esc => (None, Vec::new()),
                Key::Tab | Key::Up | Key::Down => {
                    field = 1 - field;
                    (
                        Some(Dialog::Extend {
                            site,
                            until,
                            reason,
                            field,
                        }),
                        Vec::new(),
                    )
                }
                Key::Enter => {
                    let time = crate::correlate::schedule::plan::parse_clock(&until, false);
                    match (time, reason.trim().is_empty()) {
                        (Some(_), false) => {
                            let body = Request::Extend {
                                site,
                                until_ms: None,
                                until_local: Some(until),
                                reason: reason.trim().to_string(),
                            };
                            (None, vec![self.request(Pending::Action, body)])
                        }
                        (t, _) => {
                            self.status = Some((
                                if t.is_none() {
                                    "until HH:MM, the site's local time".into()
                                } else {
                                    "a reason is needed: what did the caller say?".into()
                                },
                                true,
                            ));
                            field = usize::from(t.is_some());
                            (
                                Some(Dialog::Extend {
                                    site,
                                    until,
                                    reason,
                                    field,
                                }),
                                Vec::new(),
                            )
                        }
                    }
                }
                k => {
                    if field == 0 {
                        match k {
                            Key::Char(c) if (c.is_ascii_digit() || c == ':') && until.len() < 5 => until.push(c),
                            Key::Backspace => {
                                until.pop();
                            }
                            _ => {}
                        }
                    } else {
                        edit(&mut reason, k);
                    }
                    (
                        Some(Dialog::Extend {
                            site,
                            until,
                            reason,
                            field,
                        }),
                        Vec::new(),
                    )
                }
            },
            Dialog::Service(flow) => self.service_key(flow, key),
            Dialog::ServiceEnd { label, site, account } => match key {
                Key::Char('y' | 'Y') => (
                    None,
                    vec![self.request(Pending::ScheduleAction, Request::ServiceEnd { site, account })],
                ),
                Key::Char('n' | 'N') | Key::Esc => (None, Vec::new()),
                _ => (Some(Dialog::ServiceEnd { label, site, account }), Vec::new()),
            },
        };
        // A key in the dialog may have set another (none do today), or left it.
        if self.dialog.is_none() {
            self.dialog = next;
        }
        out
    }

    fn verify_key(&mut self, mut contact: usize, mut code: Secret, mut result: Option<VerifyShown>, key: Key) -> Step {
        let contacts = self.cancel_contacts();
        match key {
            Key::Esc => return (None, Vec::new()),
            Key::Up | Key::Down | Key::Home | Key::End => {
                choose(&mut contact, contacts.len(), key);
            }
            Key::Backspace => code.pop(),
            Key::Char(c) if c.is_ascii_alphanumeric() && code.len() < 64 => {
                code.push(c);
                result = None;
            }
            Key::Enter if !code.is_empty() => {
                if let (Some((cid, _)), Some(alarm)) =
                    (contacts.get(contact), self.alarm.as_ref().map(|a| a.alarm.id.clone()))
                {
                    let body = Request::Verify {
                        alarm,
                        contact: cid.clone(),
                        code: Typed::new(code.expose()),
                    };
                    // Sent once, then gone.
                    code = Secret::default();
                    let out = vec![self.request(Pending::Verify, body)];
                    return (Some(Dialog::Verify { contact, code, result }), out);
                }
            }
            _ => {}
        }
        (Some(Dialog::Verify { contact, code, result }), Vec::new())
    }

    fn close_key(&mut self, mut f: CloseFlow, key: Key) -> Step {
        if key == Key::Esc {
            return if f.back() {
                (Some(Dialog::Close(f)), Vec::new())
            } else {
                (None, Vec::new())
            };
        }
        match (f.stage, key) {
            (CloseStage::Choose, Key::Enter) if f.chosen().is_some() => f.forward(),
            (CloseStage::Choose, k) => {
                choose(&mut f.choice, f.options.len(), k);
            }
            (CloseStage::Note, Key::Enter) if !f.note.trim().is_empty() => f.forward(),
            (CloseStage::Note, k) => {
                edit(&mut f.note, k);
            }
            (CloseStage::Reason, Key::Enter) if !f.reason.trim().is_empty() => f.forward(),
            (CloseStage::Reason, k) => {
                edit(&mut f.reason, k);
            }
            (CloseStage::Confirm, Key::Char('y' | 'Y')) => {
                if let Some((disposition, _)) = f.chosen() {
                    let note = Some(f.note.trim().to_string()).filter(|n| !n.is_empty());
                    let skipped_reason =
                        Some(f.reason.trim().to_string()).filter(|r| f.needs_reason() && !r.is_empty());
                    let body = Request::Close {
                        alarm: f.alarm,
                        disposition,
                        note,
                        skipped_reason,
                    };
                    return (None, vec![self.request(Pending::Action, body)]);
                }
            }
            (CloseStage::Confirm, Key::Char('n' | 'N')) => {
                f.back();
            }
            _ => {}
        }
        (Some(Dialog::Close(f)), Vec::new())
    }

    fn call_key(&mut self, mut f: CallFlow, key: Key) -> Step {
        let Some(contact) = self.alarm.as_ref().and_then(|a| a.contacts.get(f.contact)).cloned() else {
            return (None, Vec::new());
        };
        let contacts = self.alarm.as_ref().map_or(0, |a| a.contacts.len());
        let several = contact.phones.len() > 1;
        match (f.stage, key) {
            (CallStage::Contact, Key::Esc) => return (None, Vec::new()),
            (CallStage::Phone, Key::Esc) => f.stage = CallStage::Contact,
            (CallStage::Outcome, Key::Esc) => f.stage = if several { CallStage::Phone } else { CallStage::Contact },
            (CallStage::Contact, Key::Enter) => {
                f.phone = 0;
                f.stage = if several { CallStage::Phone } else { CallStage::Outcome };
            }
            (CallStage::Phone, Key::Enter) => f.stage = CallStage::Outcome,
            (CallStage::Outcome, Key::Enter) => {
                if let Some(outcome) = CallOutcome::ALL.get(f.outcome).copied() {
                    let body = Request::Call {
                        alarm: f.alarm,
                        contact: contact.id.clone(),
                        phone: if several {
                            contact.phones.get(f.phone).cloned()
                        } else {
                            None
                        },
                        outcome,
                    };
                    return (None, vec![self.request(Pending::Action, body)]);
                }
            }
            (CallStage::Contact, k) => {
                choose(&mut f.contact, contacts, k);
            }
            (CallStage::Phone, k) => {
                choose(&mut f.phone, contact.phones.len(), k);
            }
            (CallStage::Outcome, k) => {
                choose(&mut f.outcome, CallOutcome::ALL.len(), k);
            }
        }
        (Some(Dialog::Call(f)), Vec::new())
    }

    fn service_key(&mut self, mut f: ServiceFlow, key: Key) -> Step {
        match key {
            Key::Esc => return (None, Vec::new()),
            Key::Tab | Key::Down => f.field = (f.field + 1) % 3,
            Key::Up => f.field = (f.field + 2) % 3,
            Key::Enter => match f.request() {
                Ok(body) => return (None, vec![self.request(Pending::ScheduleAction, body)]),
                Err(why) => self.status = Some((why.into(), true)),
            },
            k => match f.field {
                0 => {
                    if let Key::Char(c) = k {
                        if f.target.chars().count() < 64 {
                            f.target.push(c);
                        }
                    } else if k == Key::Backspace {
                        f.target.pop();
                    }
                }
                1 => match k {
                    Key::Char(c) if c.is_ascii_digit() && f.amount.len() < 5 => f.amount.push(c),
                    Key::Backspace => {
                        f.amount.pop();
                    }
                    _ => {}
                },
                _ => {
                    edit(&mut f.reason, k);
                }
            },
        }
        (Some(Dialog::Service(f)), Vec::new())
    }

    fn bulk_key(&mut self, mut f: BulkFlow, key: Key) -> Step {
        let first = match f.kind {
            BulkKind::Acknowledge => BulkStage::Reason,
            BulkKind::Close => BulkStage::Choose,
        };
        match (f.stage, key) {
            (s, Key::Esc) if s == first => return (None, Vec::new()),
            (BulkStage::Reason, Key::Esc) => f.stage = BulkStage::Choose,
            (BulkStage::Confirm, Key::Esc | Key::Char('n' | 'N')) => f.stage = BulkStage::Reason,
            (BulkStage::Choose, Key::Enter) => f.stage = BulkStage::Reason,
            (BulkStage::Choose, k) => {
                choose(&mut f.choice, BulkFlow::options().len(), k);
            }
            (BulkStage::Reason, Key::Enter) if !f.reason.trim().is_empty() => f.stage = BulkStage::Confirm,
            (BulkStage::Reason, k) => {
                edit(&mut f.reason, k);
            }
            (BulkStage::Confirm, Key::Char('y' | 'Y')) => {
                let reason = f.reason.trim().to_string();
                let body = match f.kind {
                    BulkKind::Acknowledge => Request::BulkAcknowledge {
                        alarms: f.alarms,
                        reason,
                    },
                    BulkKind::Close => match BulkFlow::options().get(f.choice) {
                        Some((disposition, _)) => Request::BulkClose {
                            alarms: f.alarms,
                            disposition: *disposition,
                            reason,
                        },
                        None => return (None, Vec::new()),
                    },
                };
                return (None, vec![self.request(Pending::Bulk, body)]);
            }
            _ => {}
        }
        (Some(Dialog::Bulk(f)), Vec::new())
    }
}
