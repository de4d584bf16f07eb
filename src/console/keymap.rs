//! The keys each screen offers, in one list per situation: the footer shows them (as many as
//! fit, most important first) and the help overlay (`?`) all of them. A test presses every key
//! of every list and checks that it does something, so the footer cannot promise a key that
//! does nothing.

use super::app::{App, Key, Pane, QueueRow, ScheduleRow, Screen, SearchFocus};
use super::dialog::{BulkStage, CallStage, CloseStage, Dialog};

/// One key (or key group) and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    /// As shown: "Enter", "↑↓", "a".
    pub keys: &'static str,
    /// What it does.
    pub what: &'static str,
    /// A key press that does it (for the test).
    pub press: Key,
}

const fn h(keys: &'static str, what: &'static str, press: Key) -> Hint {
    Hint { keys, what, press }
}

impl App {
    /// The keys offered now (the help overlay's own when it is open).
    pub fn hints(&self) -> Vec<Hint> {
        if self.confirm_quit {
            return vec![h("y", "quit", Key::Char('y')), h("n/Esc", "stay", Key::Char('n'))];
        }
        if self.help {
            return vec![h("Esc", "close help", Key::Esc)];
        }
        self.screen_hints()
    }

    /// Whether `?` opens the help now.
    pub fn help_available(&self) -> bool {
        !self.confirm_quit
            && !self.help
            && self.dialog.is_none()
            && (self.handover.is_empty() || self.screen == Screen::Login)
            && !self.typing()
    }

    /// The keys of the screen (or dialog) under the help overlay.
    pub fn screen_hints(&self) -> Vec<Hint> {
        if let Some(d) = &self.dialog {
            return dialog_hints(self, d);
        }
        if !self.handover.is_empty() && self.screen != Screen::Login {
            return vec![h("Enter", "dismiss the handover notes", Key::Enter)];
        }
        let mut v = match self.screen {
            Screen::Login => vec![
                h("Tab", "next field", Key::Tab),
                h(
                    "Enter",
                    if self.login_focus == 0 { "next field" } else { "log in" },
                    Key::Enter,
                ),
                h("Ctrl-C", "quit", Key::CtrlC),
            ],
            Screen::Queue => queue_hints(self),
            Screen::Alarm => alarm_hints(self),
            Screen::Supervision => vec![
                h("↑↓", "scroll", Key::Down),
                h("Home/End", "first/last", Key::End),
                h("R", "refresh", Key::Char('R')),
                h("Tab", "search", Key::Tab),
                h("1", "queue", Key::Char('1')),
                h("3", "search", Key::Char('3')),
                h("Esc", "back", Key::Esc),
                h("q", "quit", Key::Char('q')),
                h("4", "schedules", Key::Char('4')),
            ],
            Screen::Schedules => schedules_hints(self),
            Screen::Search => match self.search_focus {
                SearchFocus::Input => {
                    let mut v = vec![
                        h("text", "what to find", Key::Char('x')),
                        h("Enter", "search", Key::Enter),
                    ];
                    if !self.search_alarms().is_empty() {
                        v.push(h("↓", "results", Key::Down));
                    }
                    v.push(h("Tab", "queue", Key::Tab));
                    v.push(h("Esc", "back", Key::Esc));
                    v
                }
                SearchFocus::Results => vec![
                    h("↑↓", "select alarm", Key::Down),
                    h("Home/End", "first/last", Key::End),
                    h("Enter", "open alarm", Key::Enter),
                    h("text", "new search", Key::Char('x')),
                    h("Esc", "back to the query", Key::Esc),
                    h("Tab", "queue", Key::Tab),
                ],
            },
        };
        if self.help_available() {
            v.push(h("?", "help", Key::Char('?')));
        }
        v
    }
}

fn queue_hints(app: &App) -> Vec<Hint> {
    let mut v = Vec::new();
    if !app.rows().is_empty() {
        v.push(h("↑↓", "select", Key::Down));
        v.push(h("Home/End", "top/bottom", Key::End));
    }
    match app.rows().get(app.selected) {
        Some(QueueRow::Alarm(_)) => {
            v.push(h("Enter", "open", Key::Enter));
            v.push(h("s", "take", Key::Char('s')));
            v.push(h("a", "acknowledge", Key::Char('a')));
        }
        Some(QueueRow::Site { .. }) if app.is_supervisor() => {
            v.push(h("a", "acknowledge site", Key::Char('a')));
            v.push(h("c", "close site", Key::Char('c')));
        }
        _ => {}
    }
    v.push(h(
        "G",
        if app.grouped { "ungroup" } else { "group by site" },
        Key::Char('G'),
    ));
    v.push(h("H", "handover note", Key::Char('H')));
    v.push(h(
        "p",
        if app.auto_present {
            "auto-present off"
        } else {
            "auto-present on"
        },
        Key::Char('p'),
    ));
    v.push(h("R", "refresh", Key::Char('R')));
    v.push(h("Tab", "supervision", Key::Tab));
    v.push(h("2", "supervision", Key::Char('2')));
    v.push(h("3", "search", Key::Char('3')));
    v.push(h("q", "quit", Key::Char('q')));
    v.push(h("4", "schedules", Key::Char('4')));
    v
}

fn schedules_hints(app: &App) -> Vec<Hint> {
    let mut v = Vec::new();
    let rows = app.schedule_rows().len();
    if rows > 1 {
        let last = app.schedules_selected + 1 >= rows;
        v.push(h("↑↓", "select", if last { Key::Up } else { Key::Down }));
        v.push(h("Home/End", "first/last", if last { Key::Home } else { Key::End }));
    }
    let s = app.schedules.as_ref();
    let row = app.selected_schedule_row();
    let alarm = match (row, s) {
        (Some(ScheduleRow::Late(i)), Some(s)) => s.late.get(i).is_some_and(|l| l.alarm.is_some()),
        (Some(ScheduleRow::Period(i)), Some(s)) => s.periods.get(i).is_some_and(|p| p.summary.is_some()),
        _ => false,
    };
    if alarm {
        v.push(h("Enter", "open alarm", Key::Enter));
    }
    if app.is_supervisor() {
        v.push(h("t", "put on test", Key::Char('t')));
        v.push(h("o", "out of service", Key::Char('o')));
        let open = match (row, s) {
            (Some(ScheduleRow::Period(i)), Some(s)) => s.periods.get(i).is_some_and(|p| p.ended_ms.is_none()),
            _ => false,
        };
        if open {
            v.push(h("e", "end period", Key::Char('e')));
        }
    }
    v.extend([
        h("R", "refresh", Key::Char('R')),
        h("Tab", "queue", Key::Tab),
        h("2", "supervision", Key::Char('2')),
        h("3", "search", Key::Char('3')),
        h("Esc", "back", Key::Esc),
        h("q", "quit", Key::Char('q')),
    ]);
    v
}

fn alarm_hints(app: &App) -> Vec<Hint> {
    let Some(d) = &app.alarm else {
        return vec![h("Esc", "back", Key::Esc)];
    };
    let mut v = vec![h("Esc", "back", Key::Esc)];
    match app.pane {
        Pane::Procedure if !d.procedure.is_empty() => {
            v.push(h("↑↓", "step", Key::Down));
            v.push(h("Space", "tick step", Key::Char(' ')));
        }
        Pane::Contacts if !d.contacts.is_empty() => {
            v.push(h("↑↓", "contact", Key::Down));
            v.push(h("Enter", "call this contact", Key::Enter));
        }
        Pane::Timeline if d.events.len() + d.log.len() > 1 => v.push(h("↑↓", "scroll timeline", Key::Up)),
        Pane::History if d.history.len() > 1 => v.push(h("↑↓", "scroll history", Key::Down)),
        _ => {}
    }
    v.push(h("Tab", "next pane", Key::Tab));
    if !d.procedure.is_empty() {
        v.push(h("1-9", "tick step", Key::Char('1')));
    }
    v.push(h("a", "ack", Key::Char('a')));
    v.push(h("s", "take", Key::Char('s')));
    if app.is_supervisor() {
        v.push(h("t", "take over", Key::Char('t')));
    }
    v.push(h("u", "release", Key::Char('u')));
    v.push(h("n", "note", Key::Char('n')));
    if !d.contacts.is_empty() {
        v.push(h("l", "log call", Key::Char('l')));
    }
    if d.contacts.iter().any(|c| c.may_cancel) {
        v.push(h("v", "verify code", Key::Char('v')));
    }
    if !d.alarm.life_safety() {
        v.push(h("r", "put aside", Key::Char('r')));
    }
    if app.alarm_site_with_schedule().is_some() {
        v.push(h("x", "extend schedule", Key::Char('x')));
    }
    v.push(h("c", "close", Key::Char('c')));
    let scroll = match app.pane {
        Pane::Procedure => !d.procedure.is_empty(),
        Pane::Contacts => !d.contacts.is_empty(),
        Pane::Timeline => d.events.len() + d.log.len() > 1,
        Pane::History => d.history.len() > 1,
    };
    if scroll {
        v.push(h(
            "Home/End",
            "first/last",
            if app.pane == Pane::Timeline {
                Key::Home
            } else {
                Key::End
            },
        ));
    }
    v
}

fn dialog_hints(app: &App, d: &Dialog) -> Vec<Hint> {
    let text = |what| h("text", what, Key::Char('x'));
    match d {
        Dialog::Verify { .. } => {
            let mut v = Vec::new();
            if app.cancel_contacts().len() > 1 {
                v.push(h("↑↓", "caller", Key::Down));
            }
            v.extend([
                h("code", "type it", Key::Char('7')),
                h("Enter", "verify", Key::Enter),
                h("Esc", "close", Key::Esc),
            ]);
            v
        }
        Dialog::Note { .. } | Dialog::Handover { .. } => vec![
            text("type"),
            h("Enter", "save", Key::Enter),
            h("Esc", "cancel", Key::Esc),
        ],
        Dialog::Takeover { .. } => vec![
            text("why"),
            h("Enter", "take over", Key::Enter),
            h("Esc", "cancel", Key::Esc),
        ],
        Dialog::Recall { field, .. } => vec![
            if *field == 0 {
                h("digits", "minutes", Key::Char('5'))
            } else {
                text("note")
            },
            h("Tab", "next field", Key::Tab),
            h("Enter", "put aside", Key::Enter),
            h("Esc", "cancel", Key::Esc),
        ],
        Dialog::Close(f) => match f.stage {
            CloseStage::Choose => vec![
                h("↑↓", "disposition", Key::Down),
                h("Enter", "next", Key::Enter),
                h("Esc", "cancel", Key::Esc),
            ],
            CloseStage::Note | CloseStage::Reason => vec![
                text(if f.stage == CloseStage::Note { "note" } else { "reason" }),
                h("Enter", "next", Key::Enter),
                h("Esc", "back", Key::Esc),
            ],
            CloseStage::Confirm => vec![
                h("y", "close the alarm", Key::Char('y')),
                h("n/Esc", "back", Key::Char('n')),
            ],
        },
        Dialog::Call(f) => {
            let back = if f.stage == CallStage::Contact {
                "cancel"
            } else {
                "back"
            };
            vec![
                h("↑↓", "choose", Key::Down),
                h(
                    "Enter",
                    if f.stage == CallStage::Outcome {
                        "log the call"
                    } else {
                        "next"
                    },
                    Key::Enter,
                ),
                h("Esc", back, Key::Esc),
            ]
        }
        Dialog::Extend { field, .. } => vec![
            if *field == 0 {
                h("HH:MM", "until", Key::Char('2'))
            } else {
                text("what the caller said")
            },
            h("Tab", "next field", Key::Tab),
            h("Enter", "extend", Key::Enter),
            h("Esc", "cancel", Key::Esc),
        ],
        Dialog::Service(f) => vec![
            match f.field {
                0 => text("site, or # and account"),
                1 => h("digits", "how long", Key::Char('5')),
                _ => text("reason"),
            },
            h("Tab", "next field", Key::Tab),
            h("Enter", "set", Key::Enter),
            h("Esc", "cancel", Key::Esc),
        ],
        Dialog::ServiceEnd { .. } => vec![h("y", "end it", Key::Char('y')), h("n/Esc", "back", Key::Char('n'))],
        Dialog::Bulk(f) => match f.stage {
            BulkStage::Choose => vec![
                h("↑↓", "disposition", Key::Down),
                h("Enter", "next", Key::Enter),
                h("Esc", "cancel", Key::Esc),
            ],
            BulkStage::Reason => vec![
                text("reason"),
                h("Enter", "next", Key::Enter),
                h("Esc", "back", Key::Esc),
            ],
            BulkStage::Confirm => vec![h("y", "do it", Key::Char('y')), h("n/Esc", "back", Key::Char('n'))],
        },
    }
}

/// The footer: as many hints as fit in `width`, "? help" kept at the end when it is offered.
pub fn footer(hints: &[Hint], width: usize) -> String {
    let item = |x: &Hint| format!("{} {}", x.keys, x.what);
    let help = hints.iter().find(|x| x.keys == "?").map(item);
    let room = width.saturating_sub(help.as_ref().map_or(0, |h| h.chars().count() + 2) + 1);
    let mut out = String::from(" ");
    for x in hints.iter().filter(|x| x.keys != "?") {
        let s = item(x);
        let need = s.chars().count() + if out.len() > 1 { 2 } else { 0 };
        if out.chars().count() + need > room {
            break;
        }
        if out.len() > 1 {
            out.push_str("  ");
        }
        out.push_str(&s);
    }
    if let Some(help) = help {
        if out.len() > 1 {
            out.push_str("  ");
        }
        out.push_str(&help);
    }
    out
}
