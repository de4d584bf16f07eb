//! Console state and what keys do to it. Pure: no terminal, no sockets, no clock. A key press
//! returns the API requests to send; an API message updates the state. Rendering is in `ui`,
//! the dialogs in `dialog`, the keys each screen offers in `keymap`.
//!
//! What the shift needs from it:
//! - the queue in the server's order ([`AlarmSummary::queue_key`]), put-aside alarms in a
//!   section of their own, optionally grouped by site ([`QueueRow`]);
//! - a life-safety alarm still `new` is announced ([`App::alerts`], [`App::bell_due`]) and
//!   selected on the queue until someone acknowledges it;
//! - Escape only goes back; quitting asks ([`App::confirm_quit`]);
//! - after a session ends the login form keeps the name and waits for the password.

use std::collections::BTreeSet;

use zeroize::Zeroizing;

use super::dialog::{BulkFlow, BulkKind, CallFlow, CloseFlow, Dialog, VerifyShown};
use super::localtime::LocalTime;
use crate::correlate::alarms::Disposition;
use crate::operator::Role;
use crate::operator::protocol::{
    ApiError, Envelope, ErrorKind, HandoverNote, Op, Push, Reply, Request, SchedulesResult, SearchResult,
    ServerMessage, Typed, VerifyOutcome,
};
use crate::operator::queries::{AlarmDetail, AlarmSummary, OverdueAccount};

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
    /// Sites, alarms and events by free text.
    Search,
    /// Sites late now, and the sites and accounts on test or out of service.
    Schedules,
}

/// A selectable line of the schedule tab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleRow {
    /// A late site ([`SchedulesResult::late`], by index).
    Late(usize),
    /// A period ([`SchedulesResult::periods`], by index).
    Period(usize),
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
    /// A character (Space is `Char(' ')`).
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
    /// Home.
    Home,
    /// End.
    End,
    /// Ctrl-C.
    CtrlC,
}

/// What a person types that must never be shown: zeroized on drop, never printed (`Debug`
/// says `<redacted>`), sent once and dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Add a character.
    pub fn push(&mut self, c: char) {
        self.0.push(c);
    }

    /// Remove the last character.
    pub fn pop(&mut self) {
        self.0.pop();
    }

    /// Characters typed (for the mask).
    pub fn len(&self) -> usize {
        self.0.chars().count()
    }

    /// Nothing typed.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// For the request that sends it, only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(Zeroizing::new(s.to_string()))
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A line of the queue as shown: an alarm, a site's header (grouped by site), or the header of
/// the put-aside section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRow {
    /// The alarm at this index of the queue.
    Alarm(usize),
    /// A site's alarms follow (grouped view): its group key, label, how many, how many new.
    Site {
        /// [`group_key`].
        key: String,
        /// Site reference and address.
        label: String,
        /// Alarms of the site in the group.
        count: usize,
        /// Of which still new.
        new: usize,
    },
    /// The put-aside alarms follow (how many).
    Aside(usize),
}

/// The group an alarm belongs to when the queue is grouped: its site, or its account when it
/// has no site.
pub fn group_key(a: &AlarmSummary) -> String {
    if a.site_ref.is_empty() {
        format!("account {}", a.account)
    } else {
        a.site_ref.clone()
    }
}

/// What the selection was on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Anchor {
    Alarm(String),
    Site(String),
}

/// Panes of the alarm screen that take the arrow keys (Tab moves between them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// The procedure: select a step, Space ticks it.
    Procedure,
    /// The call list.
    Contacts,
    /// The alarm's record.
    Timeline,
    /// The site's earlier alarms.
    History,
}

impl Pane {
    fn next(self) -> Pane {
        match self {
            Pane::Procedure => Pane::Contacts,
            Pane::Contacts => Pane::Timeline,
            Pane::Timeline => Pane::History,
            Pane::History => Pane::Procedure,
        }
    }
}

/// Where the keys go on the search screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchFocus {
    /// Typing the query.
    Input,
    /// Choosing an alarm among the results.
    Results,
}

/// What a request in flight was for, so its answer lands in the right place.
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
    /// An action after which the operator goes back to the queue (put aside).
    ActionLeave,
    /// An action from the queue (the push shows its effect).
    QueueAction,
    /// A verification.
    Verify,
    /// Supervision view.
    Supervision,
    /// Search.
    Search,
    /// Subscribe.
    Subscribe,
    /// A handover note.
    Handover,
    /// A bulk action.
    Bulk,
    /// The schedule tab.
    Schedules,
    /// An action from the schedule tab (a period set or ended): read the tab again after.
    ScheduleAction,
}

/// Ring the bell this often while a life-safety alarm waits.
pub const BELL_EVERY_MS: i64 = 2_000;

/// Options from the command line and `[console]`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The time zone times are shown in.
    pub time: LocalTime,
    /// Present the next alarm by itself.
    pub auto_present: bool,
}

/// The console.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    /// Screen.
    pub screen: Screen,
    /// Connection.
    pub link: Link,
    /// Login name being typed.
    pub login_name: String,
    /// Password being typed (shown masked).
    pub login_password: Secret,
    /// Login field with focus (0 name, 1 password).
    pub login_focus: usize,
    /// Session token.
    pub token: Option<String>,
    /// Logged-in operator and role.
    pub operator: Option<(String, Role)>,
    queue: Vec<AlarmSummary>,
    rows: Vec<QueueRow>,
    alerting: Vec<usize>,
    /// Selected queue row ([`App::rows`]).
    pub selected: usize,
    /// The queue is grouped by site.
    pub grouped: bool,
    /// The open alarm.
    pub alarm: Option<AlarmDetail>,
    /// The alarm screen's pane with the arrow keys.
    pub pane: Pane,
    /// Selected procedure step (index).
    pub step_cursor: usize,
    /// Selected contact (index).
    pub contact_cursor: usize,
    /// Timeline lines scrolled up from the newest.
    pub timeline_scroll: usize,
    /// History lines scrolled down from the newest.
    pub history_scroll: usize,
    /// Dialog.
    pub dialog: Option<Dialog>,
    /// "Quit? y/n" is asked.
    pub confirm_quit: bool,
    /// The help overlay is open.
    pub help: bool,
    /// Handover notes shown after login, until Enter.
    pub handover: Vec<HandoverNote>,
    /// Status line message (text, is_error).
    pub status: Option<(String, bool)>,
    /// Supervision view.
    pub overdue: Vec<OverdueAccount>,
    /// Supervision view: first row shown.
    pub overdue_scroll: usize,
    /// Search input.
    pub search_input: String,
    /// The last search's results.
    pub search: Option<SearchResult>,
    /// Search: input or results.
    pub search_focus: SearchFocus,
    /// Search: selected alarm among the results.
    pub search_selected: usize,
    /// The schedule tab's contents.
    pub schedules: Option<SchedulesResult>,
    /// The schedule tab: selected row ([`App::schedule_rows`]).
    pub schedules_selected: usize,
    /// Requests in flight by id, with what they asked.
    pub pending: Vec<(u64, Pending, Op)>,
    next_id: u64,
    /// Quit requested (and confirmed).
    pub quit: bool,
    /// Ids of alarms that arrived by push and have not been looked at.
    pub fresh: BTreeSet<String>,
    /// Present the next alarm by itself.
    pub auto_present: bool,
    presented: BTreeSet<String>,
    alerted: BTreeSet<String>,
    bell_pending: bool,
    last_bell_ms: Option<i64>,
    /// The time zone times are shown in.
    pub time: LocalTime,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

/// How far PageUp/PageDown move.
const PAGE: usize = 10;

impl App {
    /// A console at the login screen (times in UTC).
    pub fn new() -> App {
        App::with_options(Options::default())
    }

    /// A console at the login screen.
    pub fn with_options(o: Options) -> App {
        App {
            screen: Screen::Login,
            link: Link::Down(0, "connecting".into()),
            login_name: String::new(),
            login_password: Secret::default(),
            login_focus: 0,
            token: None,
            operator: None,
            queue: Vec::new(),
            rows: Vec::new(),
            alerting: Vec::new(),
            selected: 0,
            grouped: false,
            alarm: None,
            pane: Pane::Procedure,
            step_cursor: 0,
            contact_cursor: 0,
            timeline_scroll: 0,
            history_scroll: 0,
            dialog: None,
            confirm_quit: false,
            help: false,
            handover: Vec::new(),
            status: None,
            overdue: Vec::new(),
            overdue_scroll: 0,
            search_input: String::new(),
            search: None,
            search_focus: SearchFocus::Input,
            search_selected: 0,
            schedules: None,
            schedules_selected: 0,
            pending: Vec::new(),
            next_id: 1,
            quit: false,
            fresh: BTreeSet::new(),
            auto_present: o.auto_present,
            presented: BTreeSet::new(),
            alerted: BTreeSet::new(),
            bell_pending: false,
            last_bell_ms: None,
            time: o.time,
        }
    }

    pub(super) fn request(&mut self, kind: Pending, request: Request) -> Envelope {
        let id = self.next_id;
        self.next_id += 1;
        self.pending.push((id, kind, request.op()));
        Envelope {
            id: Some(id),
            token: self.token.clone(),
            request,
        }
    }

    /// The logged-in operator's role.
    pub fn role(&self) -> Option<Role> {
        self.operator.as_ref().map(|(_, r)| *r)
    }

    /// A supervisor (or admin) is logged in.
    pub fn is_supervisor(&self) -> bool {
        self.role().is_some_and(|r| r >= Role::Supervisor)
    }

    fn me(&self) -> Option<&str> {
        self.operator.as_ref().map(|(n, _)| n.as_str())
    }

    // ---- the queue -------------------------------------------------------------------------

    /// The open alarms in queue order.
    pub fn queue(&self) -> &[AlarmSummary] {
        &self.queue
    }

    /// The queue's lines as shown.
    pub fn rows(&self) -> &[QueueRow] {
        &self.rows
    }

    /// Replace the queue (sorted here).
    pub fn set_queue(&mut self, alarms: Vec<AlarmSummary>) {
        let keep = self.selected_key();
        self.queue = alarms;
        self.rebuild(keep);
    }

    /// Life-safety alarms nobody has acknowledged yet, most urgent first.
    pub fn alerts(&self) -> impl Iterator<Item = &AlarmSummary> {
        self.alerting.iter().filter_map(|&i| self.queue.get(i))
    }

    fn alerting(a: &AlarmSummary) -> bool {
        a.life_safety() && a.state == "new" && a.recall_ms.is_none()
    }

    /// What the selection is on, to find it again after the queue changes.
    fn selected_key(&self) -> Option<Anchor> {
        match self.rows.get(self.selected)? {
            QueueRow::Alarm(i) => self.queue.get(*i).map(|a| Anchor::Alarm(a.id.clone())),
            QueueRow::Site { key, .. } => Some(Anchor::Site(key.clone())),
            QueueRow::Aside(_) => None,
        }
    }

    /// Sort the queue, lay out its rows, keep the selection on what it was on.
    fn rebuild(&mut self, keep: Option<Anchor>) {
        self.queue.sort_by(|a, b| a.queue_key().cmp(&b.queue_key()));
        let aside_from = self.queue.partition_point(|a| a.recall_ms.is_none());
        let mut rows = Vec::with_capacity(self.queue.len() + 2);
        if self.grouped {
            let mut order: Vec<String> = Vec::new();
            let mut groups: std::collections::HashMap<String, Vec<usize>> = Default::default();
            for (i, a) in self.queue[..aside_from].iter().enumerate() {
                let k = group_key(a);
                let g = groups.entry(k.clone()).or_default();
                if g.is_empty() {
                    order.push(k);
                }
                g.push(i);
            }
            for k in order {
                let members = groups.remove(&k).unwrap_or_default();
                let first = members.first().and_then(|&i| self.queue.get(i));
                let label = first.map_or_else(String::new, |a| {
                    if a.site.is_empty() {
                        k.clone()
                    } else if a.site_ref.is_empty() {
                        a.site.clone()
                    } else {
                        format!("{} {}", a.site_ref, a.site)
                    }
                });
                let new = members.iter().filter(|&&i| self.queue[i].state == "new").count();
                rows.push(QueueRow::Site {
                    key: k,
                    label,
                    count: members.len(),
                    new,
                });
                rows.extend(members.into_iter().map(QueueRow::Alarm));
            }
        } else {
            rows.extend((0..aside_from).map(QueueRow::Alarm));
        }
        if aside_from < self.queue.len() {
            rows.push(QueueRow::Aside(self.queue.len() - aside_from));
            rows.extend((aside_from..self.queue.len()).map(QueueRow::Alarm));
        }
        self.rows = rows;
        self.alerting = (0..aside_from).filter(|&i| App::alerting(&self.queue[i])).collect();
        let found = keep.and_then(|k| {
            self.rows.iter().position(|r| match (r, &k) {
                (QueueRow::Alarm(i), Anchor::Alarm(id)) => self.queue[*i].id == *id,
                (QueueRow::Site { key, .. }, Anchor::Site(k)) => key == k,
                _ => false,
            })
        });
        self.selected = found.unwrap_or(self.selected);
        self.settle_selection(true);
    }

    fn selectable(&self, i: usize) -> bool {
        matches!(self.rows.get(i), Some(QueueRow::Alarm(_) | QueueRow::Site { .. }))
    }

    /// Keep the selection in range and off a section header, moving `down` (else up) first.
    fn settle_selection(&mut self, down: bool) {
        if self.rows.is_empty() {
            self.selected = 0;
            return;
        }
        self.selected = self.selected.min(self.rows.len() - 1);
        if self.selectable(self.selected) {
            return;
        }
        let forward = (self.selected..self.rows.len()).find(|&i| self.selectable(i));
        let backward = (0..self.selected).rev().find(|&i| self.selectable(i));
        self.selected = if down {
            forward.or(backward)
        } else {
            backward.or(forward)
        }
        .unwrap_or(0);
    }

    fn move_selection(&mut self, key: Key) {
        let last = self.rows.len().saturating_sub(1);
        let (to, down) = match key {
            Key::Up | Key::Char('k') => (self.selected.saturating_sub(1), false),
            Key::Down | Key::Char('j') => ((self.selected + 1).min(last), true),
            Key::PageUp => (self.selected.saturating_sub(PAGE), false),
            Key::PageDown => ((self.selected + PAGE).min(last), true),
            Key::Home => (0, true),
            Key::End => (last, false),
            _ => return,
        };
        let before = self.selected;
        self.selected = to;
        self.settle_selection(down);
        // A header at the end of the way: stay where we were rather than jump back.
        if !self.selectable(self.selected) {
            self.selected = before;
        }
    }

    /// The selected alarm in the queue.
    pub fn selected_alarm(&self) -> Option<&AlarmSummary> {
        match self.rows.get(self.selected)? {
            QueueRow::Alarm(i) => self.queue.get(*i),
            _ => None,
        }
    }

    /// The selected site group (grouped view): its key, label and its alarms that are not put
    /// aside.
    pub fn selected_group(&self) -> Option<(String, String, Vec<String>)> {
        match self.rows.get(self.selected)? {
            QueueRow::Site { key, label, .. } => Some((
                key.clone(),
                label.clone(),
                self.queue
                    .iter()
                    .filter(|a| a.recall_ms.is_none() && group_key(a) == *key)
                    .map(|a| a.id.clone())
                    .collect(),
            )),
            _ => None,
        }
    }

    /// After the queue changed: a life-safety alarm not seen before rings the bell at once and,
    /// on the queue screen, takes the selection.
    fn note_alerts(&mut self) {
        let now: BTreeSet<String> = self.alerts().map(|a| a.id.clone()).collect();
        let newest = self
            .alerting
            .iter()
            .copied()
            .find(|&i| !self.alerted.contains(&self.queue[i].id));
        if let Some(i) = newest {
            self.bell_pending = true;
            if self.screen == Screen::Queue
                && let Some(r) = self.rows.iter().position(|r| *r == QueueRow::Alarm(i))
            {
                self.selected = r;
            }
        }
        self.alerted = now;
    }

    /// Whether to ring the terminal bell now: at once for a new life-safety alarm, then every
    /// [`BELL_EVERY_MS`] while one is still unacknowledged.
    pub fn bell_due(&mut self, now_ms: i64) -> bool {
        if self.token.is_none() || self.alerting.is_empty() {
            self.bell_pending = false;
            self.last_bell_ms = None;
            return false;
        }
        let due = self.bell_pending || self.last_bell_ms.is_none_or(|t| now_ms - t >= BELL_EVERY_MS);
        if due {
            self.bell_pending = false;
            self.last_bell_ms = Some(now_ms);
        }
        due
    }

    // ---- the open alarm ----------------------------------------------------------------------

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
        super::dialog::DISPOSITIONS
            .iter()
            .copied()
            .filter(|(k, _)| *k != Disposition::CancelledByCustomer || self.cancel_allowed())
            .collect()
    }

    /// Mandatory steps of the open alarm not ticked yet.
    pub fn open_mandatory_steps(&self) -> Vec<u32> {
        self.alarm
            .as_ref()
            .map(|a| {
                a.procedure
                    .iter()
                    .filter(|s| s.mandatory && s.done_by.is_none())
                    .map(|s| s.number)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn open_alarm_id(&self) -> Option<String> {
        self.alarm.as_ref().map(|a| a.alarm.id.clone())
    }

    /// Open an alarm (the answer switches the screen).
    pub(super) fn open(&mut self, id: String) -> Envelope {
        self.fresh.remove(&id);
        self.pane = Pane::Procedure;
        self.step_cursor = 0;
        self.contact_cursor = 0;
        self.timeline_scroll = 0;
        self.history_scroll = 0;
        self.request(Pending::Alarm, Request::Alarm { alarm: id })
    }

    fn reload(&mut self) -> Vec<Envelope> {
        match self.open_alarm_id() {
            Some(id) => vec![self.request(Pending::Reload, Request::Alarm { alarm: id })],
            None => Vec::new(),
        }
    }

    fn leave_alarm(&mut self) {
        self.screen = Screen::Queue;
        self.alarm = None;
        self.dialog = None;
    }

    // ---- connection and session --------------------------------------------------------------

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
        out.extend(self.reload());
        out
    }

    /// The connection dropped.
    pub fn on_disconnected(&mut self, attempt: u32, why: String) {
        self.link = Link::Down(attempt, why);
        self.pending.clear();
    }

    /// The session is over (logged out elsewhere, expired, disabled, or refused): back to the
    /// login form with the name kept and the password field focused, saying why.
    fn end_session(&mut self, why: &str) {
        self.token = None;
        self.operator = None;
        self.screen = Screen::Login;
        self.dialog = None;
        self.help = false;
        self.alarm = None;
        self.handover.clear();
        self.queue.clear();
        self.rows.clear();
        self.alerting.clear();
        self.alerted.clear();
        self.pending.clear();
        self.login_password = Secret::default();
        self.login_focus = if self.login_name.is_empty() { 0 } else { 1 };
        self.status = Some((format!("session ended ({why}): enter your password"), true));
    }

    // ---- keys --------------------------------------------------------------------------------

    /// Handle a key; returns requests to send.
    pub fn on_key(&mut self, key: Key) -> Vec<Envelope> {
        let mut out = self.key(key);
        out.extend(self.maybe_present());
        out
    }

    fn key(&mut self, key: Key) -> Vec<Envelope> {
        if self.confirm_quit {
            match key {
                Key::Char('y' | 'Y') => self.quit = true,
                Key::Char('n' | 'N') | Key::Esc => self.confirm_quit = false,
                _ => {}
            }
            return Vec::new();
        }
        if key == Key::CtrlC {
            self.confirm_quit = true;
            return Vec::new();
        }
        if self.help {
            if matches!(key, Key::Esc | Key::Enter | Key::Char('?')) {
                self.help = false;
            }
            return Vec::new();
        }
        if self.dialog.is_some() {
            return self.dialog_key(key);
        }
        if !self.handover.is_empty() && self.screen != Screen::Login {
            if matches!(key, Key::Enter | Key::Esc) {
                self.handover.clear();
            }
            return Vec::new();
        }
        if key == Key::Char('?') && !self.typing() {
            self.help = true;
            return Vec::new();
        }
        match self.screen {
            Screen::Login => self.login_key(key),
            Screen::Queue => self.queue_key(key),
            Screen::Alarm => self.alarm_key(key),
            Screen::Supervision => self.supervision_key(key),
            Screen::Search => self.search_key(key),
            Screen::Schedules => self.schedules_key(key),
        }
    }

    /// Keys go into a text field (so `?` and `q` are text).
    pub fn typing(&self) -> bool {
        match self.screen {
            Screen::Login => true,
            Screen::Search => self.search_focus == SearchFocus::Input,
            _ => false,
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
            Key::Char(c) if self.login_focus == 0 && self.login_name.chars().count() < 64 => self.login_name.push(c),
            Key::Char(c) if self.login_focus == 1 && self.login_password.len() < 256 => self.login_password.push(c),
            // Enter in the name field only moves on: typing there never sends anything.
            Key::Enter if self.login_focus == 0 => self.login_focus = 1,
            Key::Enter if self.login_name.is_empty() => {
                self.login_focus = 0;
                self.status = Some(("enter your name".into(), true));
            }
            Key::Enter => {
                let body = Request::Login {
                    name: self.login_name.clone(),
                    password: Typed::new(self.login_password.expose()),
                };
                self.login_password = Secret::default();
                self.status = Some(("logging in…".into(), false));
                return vec![self.request(Pending::Login, body)];
            }
            _ => {}
        }
        Vec::new()
    }

    fn switch_view(&mut self, key: Key) -> Vec<Envelope> {
        let to = match key {
            Key::Char('1') => Screen::Queue,
            Key::Char('2') => Screen::Supervision,
            Key::Char('3') => Screen::Search,
            Key::Char('4') => Screen::Schedules,
            _ => match self.screen {
                Screen::Queue => Screen::Supervision,
                Screen::Supervision => Screen::Search,
                _ => Screen::Queue,
            },
        };
        self.screen = to;
        match to {
            Screen::Supervision => vec![self.request(Pending::Supervision, Request::Supervision)],
            Screen::Schedules => vec![self.request(Pending::Schedules, Request::Schedules)],
            Screen::Search => {
                self.search_focus = SearchFocus::Input;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn queue_key(&mut self, key: Key) -> Vec<Envelope> {
        match key {
            Key::Up | Key::Down | Key::PageUp | Key::PageDown | Key::Home | Key::End | Key::Char('j' | 'k') => {
                self.move_selection(key)
            }
            Key::Enter => {
                if let Some(id) = self.selected_alarm().map(|a| a.id.clone()) {
                    return vec![self.open(id)];
                }
            }
            Key::Char('a') => {
                if let Some(id) = self.selected_alarm().map(|a| a.id.clone()) {
                    return vec![self.request(Pending::QueueAction, Request::Acknowledge { alarm: id })];
                }
                return self.start_bulk(BulkKind::Acknowledge);
            }
            Key::Char('c') => return self.start_bulk(BulkKind::Close),
            Key::Char('s') => {
                if let Some(id) = self.selected_alarm().map(|a| a.id.clone()) {
                    return vec![
                        self.request(Pending::QueueAction, Request::Start { alarm: id.clone() }),
                        self.open(id),
                    ];
                }
            }
            Key::Char('G') => {
                let keep = self.selected_key();
                self.grouped = !self.grouped;
                self.rebuild(keep);
            }
            Key::Char('H') => self.dialog = Some(Dialog::Handover { text: String::new() }),
            Key::Char('p') => {
                self.auto_present = !self.auto_present;
                self.presented.clear();
                self.status = Some((
                    if self.auto_present {
                        "auto-present on: the next alarm nobody handles opens by itself".into()
                    } else {
                        "auto-present off".into()
                    },
                    false,
                ));
            }
            Key::Char('R') => return vec![self.request(Pending::Queue, Request::Queue)],
            Key::Tab | Key::Char('2' | '3' | '4') => return self.switch_view(key),
            Key::Char('q') => self.confirm_quit = true,
            // Escape goes back, and the queue is where everything goes back to.
            _ => {}
        }
        Vec::new()
    }

    fn start_bulk(&mut self, kind: BulkKind) -> Vec<Envelope> {
        let Some((_, label, alarms)) = self.selected_group() else {
            return Vec::new();
        };
        if !self.is_supervisor() {
            self.status = Some(("a whole site at once needs the supervisor role".into(), true));
            return Vec::new();
        }
        self.dialog = Some(Dialog::Bulk(BulkFlow::new(kind, label, alarms)));
        Vec::new()
    }

    fn supervision_key(&mut self, key: Key) -> Vec<Envelope> {
        let last = self.overdue.len().saturating_sub(1);
        match key {
            Key::Up => self.overdue_scroll = self.overdue_scroll.saturating_sub(1),
            Key::Down => self.overdue_scroll = (self.overdue_scroll + 1).min(last),
            Key::PageUp => self.overdue_scroll = self.overdue_scroll.saturating_sub(PAGE),
            Key::PageDown => self.overdue_scroll = (self.overdue_scroll + PAGE).min(last),
            Key::Home => self.overdue_scroll = 0,
            Key::End => self.overdue_scroll = last,
            Key::Char('R' | 'r') => return vec![self.request(Pending::Supervision, Request::Supervision)],
            Key::Tab | Key::Char('1' | '3' | '4') => return self.switch_view(key),
            Key::Esc => self.screen = Screen::Queue,
            Key::Char('q') => self.confirm_quit = true,
            _ => {}
        }
        Vec::new()
    }

    /// The selectable lines of the schedule tab: late sites, then periods.
    pub fn schedule_rows(&self) -> Vec<ScheduleRow> {
        let Some(s) = &self.schedules else {
            return Vec::new();
        };
        (0..s.late.len())
            .map(ScheduleRow::Late)
            .chain((0..s.periods.len()).map(ScheduleRow::Period))
            .collect()
    }

    /// The selected line of the schedule tab.
    pub fn selected_schedule_row(&self) -> Option<ScheduleRow> {
        self.schedule_rows().get(self.schedules_selected).copied()
    }

    /// The alarm of the selected line of the schedule tab (a late site's, a test's summary).
    fn selected_schedule_alarm(&self) -> Option<String> {
        let s = self.schedules.as_ref()?;
        match self.selected_schedule_row()? {
            ScheduleRow::Late(i) => s.late.get(i)?.alarm.clone(),
            ScheduleRow::Period(i) => s.periods.get(i)?.summary.clone(),
        }
    }

    /// The site or account of the selected line, as the service dialog takes it (a site's
    /// reference, or `#` and an account number).
    pub fn selected_schedule_target(&self) -> Option<String> {
        let s = self.schedules.as_ref()?;
        match self.selected_schedule_row()? {
            ScheduleRow::Late(i) => Some(s.late.get(i)?.site_ref.clone()),
            ScheduleRow::Period(i) => {
                let p = s.periods.get(i)?;
                Some(if p.account.is_empty() {
                    p.site_ref.clone()
                } else {
                    format!("#{}", p.account)
                })
            }
        }
    }

    fn schedules_key(&mut self, key: Key) -> Vec<Envelope> {
        let last = self.schedule_rows().len().saturating_sub(1);
        match key {
            Key::Up => self.schedules_selected = self.schedules_selected.saturating_sub(1),
            Key::Down => self.schedules_selected = (self.schedules_selected + 1).min(last),
            Key::PageUp => self.schedules_selected = self.schedules_selected.saturating_sub(PAGE),
            Key::PageDown => self.schedules_selected = (self.schedules_selected + PAGE).min(last),
            Key::Home => self.schedules_selected = 0,
            Key::End => self.schedules_selected = last,
            Key::Enter => {
                if let Some(id) = self.selected_schedule_alarm() {
                    return vec![self.open(id)];
                }
                self.status = Some(("no open alarm on this line".into(), true));
            }
            Key::Char(c @ ('t' | 'o')) => {
                if !self.is_supervisor() {
                    self.status = Some(("test and out of service need the supervisor role".into(), true));
                    return Vec::new();
                }
                let mode = if c == 't' {
                    crate::correlate::service::Mode::Test
                } else {
                    crate::correlate::service::Mode::OutOfService
                };
                self.dialog = Some(Dialog::Service(super::dialog::ServiceFlow::new(
                    mode,
                    self.selected_schedule_target().unwrap_or_default(),
                )));
            }
            Key::Char('e') => {
                let period = match (self.selected_schedule_row(), &self.schedules) {
                    (Some(ScheduleRow::Period(i)), Some(s)) => s.periods.get(i).filter(|p| p.ended_ms.is_none()),
                    _ => None,
                };
                match (period, self.is_supervisor()) {
                    (_, false) => self.status = Some(("ending a period needs the supervisor role".into(), true)),
                    (None, _) => {
                        self.status = Some(("select a site or account on test or out of service".into(), true))
                    }
                    (Some(p), true) => {
                        let (label, site, account) = if p.account.is_empty() {
                            (format!("site {}", p.site_ref), Some(p.site_ref.clone()), None)
                        } else {
                            (format!("account {}", p.account), None, Some(p.account.clone()))
                        };
                        self.dialog = Some(Dialog::ServiceEnd {
                            label: format!("{label} ({})", p.mode.label()),
                            site,
                            account,
                        });
                    }
                }
            }
            Key::Char('R' | 'r') => return vec![self.request(Pending::Schedules, Request::Schedules)],
            Key::Tab | Key::Char('1' | '2' | '3') => return self.switch_view(key),
            Key::Esc => self.screen = Screen::Queue,
            Key::Char('q') => self.confirm_quit = true,
            _ => {}
        }
        Vec::new()
    }

    /// Alarms among the search results.
    pub fn search_alarms(&self) -> &[AlarmSummary] {
        self.search.as_ref().map_or(&[], |s| s.alarms.as_slice())
    }

    fn search_key(&mut self, key: Key) -> Vec<Envelope> {
        let n = self.search_alarms().len();
        if self.search_focus == SearchFocus::Results {
            match key {
                Key::Up if self.search_selected == 0 => self.search_focus = SearchFocus::Input,
                Key::Up => self.search_selected -= 1,
                Key::Down => self.search_selected = (self.search_selected + 1).min(n.saturating_sub(1)),
                Key::PageUp => self.search_selected = self.search_selected.saturating_sub(PAGE),
                Key::PageDown => self.search_selected = (self.search_selected + PAGE).min(n.saturating_sub(1)),
                Key::Home => self.search_selected = 0,
                Key::End => self.search_selected = n.saturating_sub(1),
                Key::Enter => {
                    if let Some(id) = self.search_alarms().get(self.search_selected).map(|a| a.id.clone()) {
                        return vec![self.open(id)];
                    }
                }
                Key::Esc => self.search_focus = SearchFocus::Input,
                Key::Tab => return self.switch_view(key),
                Key::Char(_) | Key::Backspace => {
                    self.search_focus = SearchFocus::Input;
                    return self.search_key(key);
                }
                _ => {}
            }
            return Vec::new();
        }
        match key {
            Key::Char(c) if self.search_input.chars().count() < 100 => self.search_input.push(c),
            Key::Backspace => {
                self.search_input.pop();
            }
            Key::Enter if !self.search_input.trim().is_empty() => {
                let query = self.search_input.trim().to_string();
                return vec![self.request(Pending::Search, Request::Search { query, limit: None })];
            }
            Key::Down | Key::End if n > 0 => {
                self.search_focus = SearchFocus::Results;
                self.search_selected = if key == Key::End { n - 1 } else { 0 };
            }
            Key::Tab => return self.switch_view(key),
            Key::Esc => self.screen = Screen::Queue,
            _ => {}
        }
        Vec::new()
    }

    fn alarm_key(&mut self, key: Key) -> Vec<Envelope> {
        let Some(id) = self.open_alarm_id() else {
            if key == Key::Esc {
                self.screen = Screen::Queue;
            }
            return Vec::new();
        };
        match key {
            Key::Esc => self.leave_alarm(),
            Key::Tab => self.pane = self.pane.next(),
            Key::Up | Key::Down | Key::PageUp | Key::PageDown | Key::Home | Key::End => self.scroll_pane(key),
            Key::Char(' ') | Key::Enter if self.pane == Pane::Procedure => {
                let n = self
                    .alarm
                    .as_ref()
                    .and_then(|a| a.procedure.get(self.step_cursor))
                    .map(|s| s.number);
                if let Some(n) = n {
                    return self.tick(id, n);
                }
            }
            Key::Enter if self.pane == Pane::Contacts => {
                let contacts = self.alarm.as_ref().map_or(0, |a| a.contacts.len());
                if contacts > 0 {
                    self.dialog = Some(Dialog::Call(CallFlow::new(id, self.contact_cursor.min(contacts - 1))));
                }
            }
            Key::Char(d @ '1'..='9') => {
                let n = d.to_digit(10).unwrap_or(0);
                return self.tick(id, n);
            }
            Key::Char('a') => return vec![self.request(Pending::Action, Request::Acknowledge { alarm: id })],
            Key::Char('s') => return vec![self.request(Pending::Action, Request::Start { alarm: id })],
            Key::Char('t') if self.is_supervisor() => {
                self.dialog = Some(Dialog::Takeover {
                    alarm: id,
                    reason: String::new(),
                })
            }
            Key::Char('t') => self.status = Some(("taking over needs the supervisor role".into(), true)),
            Key::Char('u') => return vec![self.request(Pending::Action, Request::Release { alarm: id })],
            Key::Char('n') => self.dialog = Some(Dialog::Note { text: String::new() }),
            Key::Char('v') => {
                if self.cancel_contacts().is_empty() {
                    self.status = Some(("no contact of this customer may cancel by phone".into(), true));
                } else {
                    self.dialog = Some(Dialog::Verify {
                        contact: 0,
                        code: Secret::default(),
                        result: None,
                    });
                }
            }
            Key::Char('l') => {
                let suggested = self.alarm.as_ref().and_then(|a| {
                    let next = a.next_contact()?;
                    a.contacts.iter().position(|c| c.id == next.id)
                });
                if self.alarm.as_ref().is_some_and(|a| a.contacts.is_empty()) {
                    self.status = Some(("this alarm has no contacts to call".into(), true));
                } else {
                    self.dialog = Some(Dialog::Call(CallFlow::new(id, suggested.unwrap_or(0))));
                }
            }
            Key::Char('r') => {
                if self.alarm.as_ref().is_some_and(|a| a.alarm.life_safety()) {
                    self.status = Some(("a life-safety alarm is never put aside: handle it now".into(), true));
                } else {
                    self.dialog = Some(Dialog::Recall {
                        alarm: id,
                        minutes: "15".into(),
                        note: String::new(),
                        field: 0,
                    });
                }
            }
            Key::Char('c') => {
                let flow = CloseFlow::new(id, self.dispositions(), self.open_mandatory_steps());
                self.dialog = Some(Dialog::Close(flow));
            }
            Key::Char('x') => match self.alarm_site_with_schedule() {
                Some(site) => {
                    self.dialog = Some(Dialog::Extend {
                        site,
                        until: String::new(),
                        reason: String::new(),
                        field: 0,
                    })
                }
                None => self.status = Some(("this alarm's site has no schedule to extend".into(), true)),
            },
            _ => {}
        }
        Vec::new()
    }

    /// The open alarm's site reference, when the site has a schedule (it can be extended).
    pub fn alarm_site_with_schedule(&self) -> Option<String> {
        let d = self.alarm.as_ref()?;
        let has = d.schedule.as_ref().is_some_and(|s| !s.time_zone.is_empty());
        (has && !d.alarm.site_ref.is_empty()).then(|| d.alarm.site_ref.clone())
    }

    fn tick(&mut self, alarm: String, n: u32) -> Vec<Envelope> {
        let done = self
            .alarm
            .as_ref()
            .and_then(|a| a.procedure.iter().find(|s| s.number == n))
            .map(|s| s.done_by.is_none());
        match done {
            Some(done) => vec![self.request(Pending::Action, Request::Step { alarm, step: n, done })],
            None => {
                self.status = Some((format!("the procedure has no step {n}"), true));
                Vec::new()
            }
        }
    }

    fn scroll_pane(&mut self, key: Key) {
        let Some(d) = self.alarm.as_ref() else { return };
        let (len, at, from_end) = match self.pane {
            Pane::Procedure => (d.procedure.len(), &mut self.step_cursor, false),
            Pane::Contacts => (d.contacts.len(), &mut self.contact_cursor, false),
            // The timeline counts from its newest line (the bottom), upwards.
            Pane::Timeline => (d.events.len() + d.log.len(), &mut self.timeline_scroll, true),
            Pane::History => (d.history.len(), &mut self.history_scroll, false),
        };
        let last = len.saturating_sub(1);
        let (up, down) = if from_end {
            (Key::Down, Key::Up)
        } else {
            (Key::Up, Key::Down)
        };
        *at = match key {
            k if k == up => at.saturating_sub(1),
            k if k == down => (*at + 1).min(last),
            Key::PageUp if !from_end => at.saturating_sub(PAGE),
            Key::PageDown if !from_end => (*at + PAGE).min(last),
            Key::PageUp => (*at + PAGE).min(last),
            Key::PageDown => at.saturating_sub(PAGE),
            Key::Home if from_end => last,
            Key::End if from_end => 0,
            Key::Home => 0,
            Key::End => last,
            _ => *at,
        };
    }

    // ---- auto-present ------------------------------------------------------------------------

    /// With auto-present on, on the queue with nothing open: open the most urgent alarm nobody
    /// handles (once per alarm) and take it.
    fn maybe_present(&mut self) -> Vec<Envelope> {
        let idle = self.auto_present
            && self.token.is_some()
            && self.screen == Screen::Queue
            && self.alarm.is_none()
            && self.dialog.is_none()
            && !self.help
            && !self.confirm_quit
            && self.handover.is_empty()
            && !self.pending.iter().any(|(_, k, _)| *k == Pending::Alarm);
        if !idle {
            return Vec::new();
        }
        let next = self
            .queue
            .iter()
            .find(|a| a.owner.is_none() && a.recall_ms.is_none() && !self.presented.contains(&a.id))
            .map(|a| a.id.clone());
        let Some(id) = next else { return Vec::new() };
        self.presented.insert(id.clone());
        self.status = Some(("presented: the most urgent alarm nobody handles".into(), false));
        vec![
            self.request(Pending::QueueAction, Request::Start { alarm: id.clone() }),
            self.open(id),
        ]
    }

    // ---- messages ----------------------------------------------------------------------------

    fn take_pending(&mut self, id: u64) -> Option<(Pending, Op)> {
        let i = self.pending.iter().position(|(x, _, _)| *x == id)?;
        let (_, kind, op) = self.pending.remove(i);
        Some((kind, op))
    }

    /// Handle a message from the API; returns follow-up requests.
    pub fn on_message(&mut self, msg: ServerMessage) -> Vec<Envelope> {
        let mut out = self.message(msg);
        out.extend(self.maybe_present());
        out
    }

    fn message(&mut self, msg: ServerMessage) -> Vec<Envelope> {
        let resp = match msg {
            ServerMessage::Push(p) => return self.on_push(p),
            ServerMessage::Response(r) => r,
        };
        let Some((kind, op)) = resp.id.and_then(|id| self.take_pending(id)) else {
            // An answer to nothing we asked: the server closing the connection says why.
            if let Some(e) = resp
                .error
                .filter(|e| e.kind == ErrorKind::Unauthorized && self.token.is_some())
            {
                self.end_session(&e.message);
            }
            return Vec::new();
        };
        if !resp.ok {
            let err = resp
                .error
                .unwrap_or_else(|| ApiError::new(ErrorKind::Internal, "request failed"));
            return self.refused(kind, op, err);
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
                self.operator = Some((l.name, l.role));
                self.screen = Screen::Queue;
                self.handover = l.handover;
                self.status = None;
                return self.refresh_all();
            }
            (Pending::Queue, Reply::Queue(q)) => {
                self.set_queue(q.alarms);
                self.note_alerts();
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
            (Pending::Action | Pending::QueueAction, Reply::Done(d)) => {
                self.status = Some((format!("{}: ok", d.done.as_str()), false));
                if kind == Pending::Action {
                    return self.reload();
                }
            }
            (Pending::ActionLeave, Reply::Done(d)) => {
                self.status = Some((format!("{}: ok", d.done.as_str()), false));
                self.leave_alarm();
            }
            (Pending::Handover, Reply::Done(_)) => {
                self.status = Some(("handover note saved for the next shift".into(), false));
            }
            (Pending::Schedules, Reply::Schedules(s)) => {
                self.schedules = Some(s);
                self.schedules_selected = self
                    .schedules_selected
                    .min(self.schedule_rows().len().saturating_sub(1));
            }
            (Pending::ScheduleAction, Reply::Done(d)) => {
                self.status = Some((format!("{}: ok", d.done.as_str().replace('_', " ")), false));
                return vec![self.request(Pending::Schedules, Request::Schedules)];
            }
            (Pending::Bulk, Reply::Bulk(b)) => {
                let skipped = match b.skipped.first() {
                    Some((_, why)) => format!(", {} skipped ({why})", b.skipped.len()),
                    None => String::new(),
                };
                self.status = Some((
                    format!("{}: {} done{skipped}", op.as_str().replace('_', " "), b.done.len()),
                    !b.skipped.is_empty(),
                ));
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
                return self.reload();
            }
            (Pending::Supervision, Reply::Supervision(s)) => {
                self.overdue = s.overdue;
                self.overdue_scroll = self.overdue_scroll.min(self.overdue.len().saturating_sub(1));
            }
            (Pending::Search, Reply::Search(s)) => {
                self.search_selected = 0;
                self.search_focus = if s.alarms.is_empty() {
                    SearchFocus::Input
                } else {
                    SearchFocus::Results
                };
                self.status = Some((
                    format!(
                        "{} site(s), {} alarm(s), {} event(s)",
                        s.sites.len(),
                        s.alarms.len(),
                        s.events.len()
                    ),
                    false,
                ));
                self.search = Some(s);
            }
            _ => {}
        }
        Vec::new()
    }

    /// A request was refused: the session is over, or the server's reason goes to the status
    /// line (a verification's to its dialog).
    fn refused(&mut self, kind: Pending, op: Op, err: ApiError) -> Vec<Envelope> {
        if err.kind == ErrorKind::Unauthorized && kind != Pending::Login {
            self.end_session(&err.message);
            return Vec::new();
        }
        if kind == Pending::Verify
            && let Some(Dialog::Verify { result, .. }) = self.dialog.as_mut()
        {
            *result = Some(VerifyShown::Failed(err.message));
            return Vec::new();
        }
        self.status = Some(match kind {
            Pending::Login => (err.message, true),
            _ => (
                format!("{} refused: {}", op.as_str().replace('_', " "), err.message),
                true,
            ),
        });
        Vec::new()
    }

    fn on_push(&mut self, push: Push) -> Vec<Envelope> {
        match push {
            Push::Queue { changed } => {
                let keep = self.selected_key();
                let open = self.open_alarm_id();
                let mut reload_open = false;
                // One pass over the queue by id, not one search per change.
                let mut at: std::collections::HashMap<String, usize> =
                    self.queue.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
                let mut gone = BTreeSet::new();
                for a in changed {
                    reload_open |= open.as_deref() == Some(a.id.as_str());
                    match at.get(&a.id).copied() {
                        Some(i) if a.state == "closed" => {
                            gone.insert(i);
                        }
                        Some(i) => self.queue[i] = a,
                        None if a.state != "closed" => {
                            self.fresh.insert(a.id.clone());
                            at.insert(a.id.clone(), self.queue.len());
                            self.queue.push(a);
                        }
                        None => {}
                    }
                }
                if !gone.is_empty() {
                    let mut i = 0;
                    self.queue.retain(|a| {
                        let keep = !gone.contains(&i);
                        if !keep {
                            self.fresh.remove(&a.id);
                        }
                        i += 1;
                        keep
                    });
                }
                self.rebuild(keep);
                self.note_alerts();
                if reload_open {
                    return self.reload();
                }
            }
            Push::SessionEnded { reason } => self.end_session(&reason),
        }
        Vec::new()
    }

    /// The owner of the open alarm, as the screen names it.
    pub fn owner_text(a: &AlarmSummary, me: Option<&str>) -> String {
        match (&a.owner, me) {
            (Some(o), Some(m)) if o == m => format!("handled by you ({o})"),
            (Some(o), _) => format!("handled by {o}"),
            (None, _) => "nobody handles it".into(),
        }
    }

    /// [`App::owner_text`] for the logged-in operator.
    pub fn owner_of(&self, a: &AlarmSummary) -> String {
        App::owner_text(a, self.me())
    }
}
