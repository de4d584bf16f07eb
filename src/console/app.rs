//! Console state and what keys do to it. Pure: no terminal, no sockets. A key press returns the
//! API requests to send; an API message updates the state. Rendering is in `ui`.

use zeroize::Zeroizing;

use crate::correlate::alarms::Disposition;
use crate::operator::protocol::{Envelope, ErrorKind, Op, Push, Reply, Request, ServerMessage, Typed, VerifyOutcome};
use crate::operator::queries::{AlarmDetail, AlarmSummary, EventRow, OverdueAccount};

/// Which screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// Log in.
    Login,
    /// The alarm queue.
    Queue,
    /// One alarm.
    Alarm,
    /// Accounts whose reporting deadline has passed.
    Supervision,
    /// Past events by account.
    Search,
}

/// Connection state, shown in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Connected.
    Up,
    /// Connecting (attempt number, last error).
    Down(u32, String),
}

/// A key, reduced to what the console uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// A character.
    Char(char),
    /// Enter.
    Enter,
    /// Escape.
    Esc,
    /// Backspace.
    Backspace,
    /// Tab.
    Tab,
    /// Up.
    Up,
    /// Down.
    Down,
    /// Page up.
    PageUp,
    /// Page down.
    PageDown,
    /// Ctrl-C.
    CtrlC,
}

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

/// A dialog over the alarm view.
#[derive(Debug)]
pub enum Dialog {
    /// Verify a phone code.
    Verify {
        /// Index into the alarm's contacts that may cancel.
        contact: usize,
        /// What the operator typed (shown masked).
        code: Zeroizing<String>,
        /// Result of the last attempt.
        result: Option<VerifyShown>,
    },
    /// Close with a disposition.
    Close {
        /// Selected option.
        choice: usize,
    },
    /// A note.
    Note {
        /// Text so far.
        text: String,
    },
}

/// Dispositions offered, with their API names.
pub const DISPOSITIONS: &[(Disposition, &str)] = &[
    (Disposition::CancelledByCustomer, "Cancelled by customer (both factors)"),
    (Disposition::Dispatched, "Dispatched"),
    (Disposition::TechnicalFault, "Technical fault"),
    (Disposition::Test, "Test"),
    (Disposition::FalseAlarm, "False alarm"),
    (Disposition::Duplicate, "Duplicate"),
    (Disposition::Other, "Other"),
];

/// Request ids tell responses apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// Login.
    Login,
    /// The queue.
    Queue,
    /// One alarm, opened by the operator.
    Alarm,
    /// The alarm on screen, read again (after an action, a verification, a push or a
    /// reconnect): applied only if the operator is still on that alarm.
    Reload,
    /// An action on the open alarm (re-read it after).
    Action,
    /// A verification.
    Verify,
    /// Supervision view.
    Supervision,
    /// Search.
    Search,
    /// Subscribe.
    Subscribe,
}

/// The console.
#[derive(Debug)]
pub struct App {
    /// Screen.
    pub screen: Screen,
    /// Connection.
    pub link: Link,
    /// Login name being typed.
    pub login_name: String,
    /// Password being typed (shown masked).
    pub login_password: Zeroizing<String>,
    /// Login field with focus (0 name, 1 password).
    pub login_focus: usize,
    /// Session token.
    pub token: Option<String>,
    /// Logged-in operator and role.
    pub operator: Option<(String, String)>,
    /// The queue, sorted by priority then age.
    pub queue: Vec<AlarmSummary>,
    /// Selected row.
    pub selected: usize,
    /// The open alarm.
    pub alarm: Option<AlarmDetail>,
    /// Alarm view scroll (events).
    pub scroll: usize,
    /// Dialog.
    pub dialog: Option<Dialog>,
    /// Status line message (text, is_error).
    pub status: Option<(String, bool)>,
    /// Supervision view.
    pub overdue: Vec<OverdueAccount>,
    /// Search input.
    pub search_input: String,
    /// Search results.
    pub search_results: Vec<EventRow>,
    /// Requests in flight by id, with what they asked.
    pub pending: Vec<(u64, Pending, Op)>,
    next_id: u64,
    /// Quit requested.
    pub quit: bool,
    /// Ids of alarms that arrived by push and have not been looked at.
    pub fresh: std::collections::HashSet<String>,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

fn sort_queue(q: &mut [AlarmSummary]) {
    q.sort_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then(a.opened_ms.cmp(&b.opened_ms))
            .then(a.id.cmp(&b.id))
    });
}

impl App {
    /// A console at the login screen.
    pub fn new() -> App {
        App {
            screen: Screen::Login,
            link: Link::Down(0, "connecting".into()),
            login_name: String::new(),
            login_password: Zeroizing::new(String::new()),
            login_focus: 0,
            token: None,
            operator: None,
            queue: Vec::new(),
            selected: 0,
            alarm: None,
            scroll: 0,
            dialog: None,
            status: None,
            overdue: Vec::new(),
            search_input: String::new(),
            search_results: Vec::new(),
            pending: Vec::new(),
            next_id: 1,
            quit: false,
            fresh: Default::default(),
        }
    }

    fn request(&mut self, kind: Pending, request: Request) -> Envelope {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.push((id, kind, request.op()));
        Envelope {
            id: Some(id),
            token: self.token.clone(),
            request,
        }
    }

    /// The selected alarm in the queue.
    pub fn selected_alarm(&self) -> Option<&AlarmSummary> {
        self.queue.get(self.selected)
    }

    /// Contacts of the open alarm that may cancel by phone.
    pub fn cancel_contacts(&self) -> Vec<(String, String)> {
        self.alarm
            .as_ref()
            .map(|a| {
                a.contacts
                    .iter()
                    .filter(|c| c.may_cancel)
                    .map(|c| (c.id.clone(), c.name.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether "cancelled by customer" may be offered: both factors present, no duress.
    pub fn cancel_allowed(&self) -> bool {
        self.alarm
            .as_ref()
            .is_some_and(|a| a.alarm.keypad_factor_ms.is_some() && a.alarm.phone_factor && !a.alarm.duress)
    }

    /// Dispositions offered now.
    pub fn dispositions(&self) -> Vec<(Disposition, &'static str)> {
        DISPOSITIONS
            .iter()
            .copied()
            .filter(|(k, _)| *k != Disposition::CancelledByCustomer || self.cancel_allowed())
            .collect()
    }

    /// After (re)connecting: resubscribe and refresh if logged in.
    pub fn on_connected(&mut self) -> Vec<Envelope> {
        self.link = Link::Up;
        if self.token.is_some() {
            self.refresh_all()
        } else {
            Vec::new()
        }
    }

    fn refresh_all(&mut self) -> Vec<Envelope> {
        let mut out = vec![
            self.request(Pending::Subscribe, Request::Subscribe),
            self.request(Pending::Queue, Request::Queue),
        ];
        if let Some(a) = &self.alarm {
            let id = a.alarm.id.clone();
            out.push(self.request(Pending::Reload, Request::Alarm { alarm: id }));
        }
        out
    }

    /// The connection dropped.
    pub fn on_disconnected(&mut self, attempt: u32, why: String) {
        self.link = Link::Down(attempt, why);
        self.pending.clear();
    }

    /// Handle a key; returns requests to send.
    pub fn on_key(&mut self, key: Key) -> Vec<Envelope> {
        if key == Key::CtrlC {
            self.quit = true;
            return Vec::new();
        }
        if self.dialog.is_some() {
            return self.dialog_key(key);
        }
        match self.screen {
            Screen::Login => self.login_key(key),
            Screen::Queue => self.queue_key(key),
            Screen::Alarm => self.alarm_key(key),
            Screen::Supervision | Screen::Search => self.tab_key(key),
        }
    }

    fn login_key(&mut self, key: Key) -> Vec<Envelope> {
        match key {
            Key::Tab | Key::Down | Key::Up => self.login_focus = 1 - self.login_focus,
            Key::Backspace => {
                if self.login_focus == 0 {
                    self.login_name.pop();
                } else {
                    self.login_password.pop();
                }
            }
            Key::Char(c) => {
                if self.login_focus == 0 {
                    self.login_name.push(c);
                } else {
                    self.login_password.push(c);
                }
            }
            Key::Enter => {
                if self.login_focus == 0 {
                    self.login_focus = 1;
                } else if !self.login_name.is_empty() {
                    let body = Request::Login {
                        name: self.login_name.clone(),
                        password: Typed::new(&self.login_password),
                    };
                    self.login_password = Zeroizing::new(String::new());
                    self.status = Some(("logging in…".into(), false));
                    return vec![self.request(Pending::Login, body)];
                }
            }
            Key::Esc => self.quit = true,
            _ => {}
        }
        Vec::new()
    }

    fn queue_key(&mut self, key: Key) -> Vec<Envelope> {
        match key {
            Key::Up | Key::Char('k') => self.selected = self.selected.saturating_sub(1),
            Key::Down | Key::Char('j') if self.selected + 1 < self.queue.len() => self.selected += 1,
            Key::PageUp => self.selected = self.selected.saturating_sub(10),
            Key::PageDown => self.selected = (self.selected + 10).min(self.queue.len().saturating_sub(1)),
            Key::Enter => {
                if let Some(a) = self.selected_alarm() {
                    let id = a.id.clone();
                    self.fresh.remove(&id);
                    self.scroll = 0;
                    return vec![self.request(Pending::Alarm, Request::Alarm { alarm: id })];
                }
            }
            Key::Char('a') => {
                if let Some(a) = self.selected_alarm() {
                    let id = a.id.clone();
                    return vec![self.request(Pending::Action, Request::Acknowledge { alarm: id })];
                }
            }
            Key::Char('r') => return vec![self.request(Pending::Queue, Request::Queue)],
            Key::Tab | Key::Char('2') | Key::Char('3') => return self.tab_key(key),
            Key::Char('q') | Key::Esc => self.quit = true,
            _ => {}
        }
        Vec::new()
    }

    fn tab_key(&mut self, key: Key) -> Vec<Envelope> {
        match (self.screen, key) {
            (Screen::Search, Key::Char(c)) if c.is_ascii_hexdigit() && self.search_input.len() < 16 => {
                self.search_input.push(c.to_ascii_uppercase());
            }
            (Screen::Search, Key::Backspace) => {
                self.search_input.pop();
            }
            (Screen::Search, Key::Enter) if !self.search_input.is_empty() => {
                let account = self.search_input.clone();
                return vec![self.request(
                    Pending::Search,
                    Request::Search {
                        query: account,
                        limit: Some(200),
                    },
                )];
            }
            (_, Key::Char('1')) | (_, Key::Esc) => self.screen = Screen::Queue,
            (_, Key::Char('2')) => {
                self.screen = Screen::Supervision;
                return vec![self.request(Pending::Supervision, Request::Supervision)];
            }
            (_, Key::Char('3')) => self.screen = Screen::Search,
            (_, Key::Tab) => {
                self.screen = match self.screen {
                    Screen::Queue => Screen::Supervision,
                    Screen::Supervision => Screen::Search,
                    _ => Screen::Queue,
                };
                if self.screen == Screen::Supervision {
                    return vec![self.request(Pending::Supervision, Request::Supervision)];
                }
            }
            (Screen::Supervision, Key::Char('r')) => {
                return vec![self.request(Pending::Supervision, Request::Supervision)];
            }
            _ => {}
        }
        Vec::new()
    }

    fn alarm_key(&mut self, key: Key) -> Vec<Envelope> {
        let Some(id) = self.alarm.as_ref().map(|a| a.alarm.id.clone()) else {
            self.screen = Screen::Queue;
            return Vec::new();
        };
        match key {
            Key::Esc | Key::Char('q') => {
                self.screen = Screen::Queue;
                self.alarm = None;
            }
            Key::Char('a') => return vec![self.request(Pending::Action, Request::Acknowledge { alarm: id })],
            Key::Char('s') => return vec![self.request(Pending::Action, Request::Start { alarm: id })],
            Key::Char('n') => self.dialog = Some(Dialog::Note { text: String::new() }),
            Key::Char('v') => {
                if self.cancel_contacts().is_empty() {
                    self.status = Some(("no contact of this customer may cancel by phone".into(), true));
                } else {
                    self.dialog = Some(Dialog::Verify {
                        contact: 0,
                        code: Zeroizing::new(String::new()),
                        result: None,
                    });
                }
            }
            Key::Char('c') => self.dialog = Some(Dialog::Close { choice: 0 }),
            Key::Char(d @ '1'..='9') => {
                let n = d.to_digit(10).unwrap_or(0);
                let done = self
                    .alarm
                    .as_ref()
                    .and_then(|a| a.procedure.iter().find(|s| s.number == n))
                    .map(|s| s.done_by.is_none());
                if let Some(done) = done {
                    return vec![self.request(
                        Pending::Action,
                        Request::Step {
                            alarm: id,
                            step: n,
                            done,
                        },
                    )];
                }
            }
            Key::Up => self.scroll = self.scroll.saturating_sub(1),
            Key::Down => self.scroll += 1,
            _ => {}
        }
        Vec::new()
    }

    fn dialog_key(&mut self, key: Key) -> Vec<Envelope> {
        let alarm = self.alarm.as_ref().map(|a| a.alarm.id.clone()).unwrap_or_default();
        let contacts = self.cancel_contacts();
        let dispositions = self.dispositions();
        let Some(dialog) = self.dialog.as_mut() else {
            return Vec::new();
        };
        match dialog {
            Dialog::Note { text } => match key {
                Key::Esc => self.dialog = None,
                Key::Backspace => {
                    text.pop();
                }
                Key::Char(c) if text.len() < 2000 => text.push(c),
                Key::Enter if !text.trim().is_empty() => {
                    let body = Request::Note {
                        alarm,
                        text: text.clone(),
                    };
                    self.dialog = None;
                    return vec![self.request(Pending::Action, body)];
                }
                _ => {}
            },
            Dialog::Close { choice } => match key {
                Key::Esc => self.dialog = None,
                Key::Up => *choice = choice.saturating_sub(1),
                Key::Down => *choice = (*choice + 1).min(dispositions.len().saturating_sub(1)),
                Key::Enter => {
                    if let Some((d, _)) = dispositions.get(*choice) {
                        let body = Request::Close {
                            alarm,
                            disposition: *d,
                            note: None,
                            skipped_reason: None,
                        };
                        self.dialog = None;
                        return vec![self.request(Pending::Action, body)];
                    }
                }
                _ => {}
            },
            Dialog::Verify { contact, code, result } => match key {
                Key::Esc => self.dialog = None,
                Key::Up => *contact = contact.saturating_sub(1),
                Key::Down => *contact = (*contact + 1).min(contacts.len().saturating_sub(1)),
                Key::Backspace => {
                    code.pop();
                }
                Key::Char(c) if c.is_ascii_alphanumeric() && code.len() < 64 => {
                    code.push(c);
                    *result = None;
                }
                Key::Enter if !code.is_empty() => {
                    if let Some((cid, _)) = contacts.get(*contact) {
                        let body = Request::Verify {
                            alarm,
                            contact: cid.clone(),
                            code: Typed::new(code),
                        };
                        *code = Zeroizing::new(String::new());
                        return vec![self.request(Pending::Verify, body)];
                    }
                }
                _ => {}
            },
        }
        Vec::new()
    }

    fn take_pending(&mut self, id: u64) -> Option<(Pending, Op)> {
        let i = self.pending.iter().position(|(x, _, _)| *x == id)?;
        let (_, kind, op) = self.pending.remove(i);
        Some((kind, op))
    }

    /// Handle a message from the API; returns follow-up requests.
    pub fn on_message(&mut self, msg: ServerMessage) -> Vec<Envelope> {
        let resp = match msg {
            ServerMessage::Push(p) => return self.on_push(p),
            ServerMessage::Response(r) => r,
        };
        let Some((kind, op)) = resp.id.and_then(|id| self.take_pending(id)) else {
            return Vec::new();
        };
        if !resp.ok {
            let err = resp
                .error
                .unwrap_or_else(|| crate::operator::protocol::ApiError::new(ErrorKind::Internal, "request failed"));
            if err.kind == ErrorKind::Unauthorized && kind != Pending::Login {
                self.token = None;
                self.operator = None;
                self.screen = Screen::Login;
                self.status = Some((err.message, true));
                return Vec::new();
            }
            if kind == Pending::Verify {
                if let Some(Dialog::Verify { result, .. }) = self.dialog.as_mut() {
                    *result = Some(VerifyShown::Failed(err.message));
                }
                return Vec::new();
            }
            self.status = Some((err.message, true));
            return Vec::new();
        }
        let reply = match op.decode(resp.result.unwrap_or(serde_json::Value::Null)) {
            Ok(r) => r,
            Err(e) => {
                self.status = Some((format!("unreadable answer to {}: {e}", op.as_str()), true));
                return Vec::new();
            }
        };
        match (kind, reply) {
            (Pending::Login, Reply::Login(l)) => {
                self.token = Some(l.token);
                self.operator = Some((l.name, l.role.as_str().to_string()));
                self.screen = Screen::Queue;
                self.status = None;
                return self.refresh_all();
            }
            (Pending::Queue, Reply::Queue(q)) => {
                let mut q = q.alarms;
                sort_queue(&mut q);
                self.queue = q;
                self.selected = self.selected.min(self.queue.len().saturating_sub(1));
            }
            (Pending::Alarm, Reply::Alarm(d)) => {
                self.alarm = Some(*d);
                self.screen = Screen::Alarm;
            }
            // The operator may have left the alarm (Escape) while the read was under way: a
            // late answer must not pull them back into it.
            (Pending::Reload, Reply::Alarm(d)) if self.alarm.as_ref().is_some_and(|a| a.alarm.id == d.alarm.id) => {
                self.alarm = Some(*d);
            }
            (Pending::Action, Reply::Done(d)) => {
                self.status = Some((format!("{}: ok", d.done.as_str()), false));
                if let Some(a) = &self.alarm {
                    let id = a.alarm.id.clone();
                    return vec![self.request(Pending::Reload, Request::Alarm { alarm: id })];
                }
            }
            (Pending::Verify, Reply::Verify(v)) => {
                let shown = match v.result {
                    VerifyOutcome::Accepted => VerifyShown::Accepted,
                    VerifyOutcome::Duress => VerifyShown::Duress,
                    VerifyOutcome::Locked => VerifyShown::Locked,
                    VerifyOutcome::Invalidated => VerifyShown::Invalidated,
                    VerifyOutcome::Rejected => VerifyShown::Rejected(v.attempts_left),
                };
                if let Some(Dialog::Verify { result, .. }) = self.dialog.as_mut() {
                    *result = Some(shown);
                }
                if let Some(a) = &self.alarm {
                    let id = a.alarm.id.clone();
                    return vec![self.request(Pending::Reload, Request::Alarm { alarm: id })];
                }
            }
            (Pending::Supervision, Reply::Supervision(s)) => self.overdue = s.overdue,
            (Pending::Search, Reply::Search(s)) => self.search_results = s.events,
            _ => {}
        }
        Vec::new()
    }

    fn on_push(&mut self, push: Push) -> Vec<Envelope> {
        match push {
            Push::Queue { changed } => {
                let selected_id = self.selected_alarm().map(|a| a.id.clone());
                let mut reload_open = false;
                for a in changed {
                    if self.alarm.as_ref().is_some_and(|o| o.alarm.id == a.id) {
                        reload_open = true;
                    }
                    match self.queue.iter().position(|x| x.id == a.id) {
                        Some(i) if a.state == "closed" => {
                            self.queue.remove(i);
                        }
                        Some(i) => self.queue[i] = a,
                        None if a.state != "closed" => {
                            self.fresh.insert(a.id.clone());
                            self.queue.push(a);
                        }
                        None => {}
                    }
                }
                sort_queue(&mut self.queue);
                if let Some(id) = selected_id {
                    self.selected = self.queue.iter().position(|a| a.id == id).unwrap_or(self.selected);
                }
                self.selected = self.selected.min(self.queue.len().saturating_sub(1));
                if reload_open && let Some(a) = &self.alarm {
                    let id = a.alarm.id.clone();
                    return vec![self.request(Pending::Reload, Request::Alarm { alarm: id })];
                }
            }
            Push::SessionEnded { reason } => {
                self.token = None;
                self.operator = None;
                self.screen = Screen::Login;
                self.status = Some((reason, true));
            }
        }
        Vec::new()
    }
}
