//! Rendering: a pure function of the state and "now". Works down to 80×24; only the visible
//! rows of the queue are built, so 10,000 open alarms draw as fast as 20. Every time is the
//! console's local time ([`super::localtime`]).

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};

use super::app::{App, Link, Pane, QueueRow, ScheduleRow, Screen, SearchFocus};
use super::dialog::{BulkFlow, BulkKind, BulkStage, CallStage, CloseStage, Dialog, VerifyShown};
use super::keymap;
use crate::operator::protocol::CallOutcome;
use crate::operator::queries::{AlarmDetail, AlarmSummary};

/// Short label and colour per category.
pub fn label(a: &AlarmSummary) -> (&'static str, Style) {
    let bold = Modifier::BOLD;
    if a.duress {
        return (
            "DURESS",
            Style::new().fg(Color::White).bg(Color::Magenta).add_modifier(bold),
        );
    }
    match a.category.as_str() {
        "duress" => (
            "DURESS",
            Style::new().fg(Color::White).bg(Color::Magenta).add_modifier(bold),
        ),
        "holdup" => (
            "HOLD-UP",
            Style::new().fg(Color::White).bg(Color::Red).add_modifier(bold),
        ),
        "panic" => ("PANIC", Style::new().fg(Color::White).bg(Color::Red).add_modifier(bold)),
        "fire" => ("FIRE", Style::new().fg(Color::LightRed).add_modifier(bold)),
        "medical" => ("MEDICAL", Style::new().fg(Color::LightRed).add_modifier(bold)),
        "burglary" => ("BURGLARY", Style::new().fg(Color::Yellow).add_modifier(bold)),
        "tamper" => ("TAMPER", Style::new().fg(Color::Yellow)),
        "environmental" => ("HAZARD", Style::new().fg(Color::LightYellow)),
        "technical" => ("TECHNICAL", Style::new().fg(Color::LightBlue)),
        "communication" => ("COMM LOST", Style::new().fg(Color::Cyan).add_modifier(bold)),
        "unexpected_opening" => ("OPENED!", Style::new().fg(Color::LightMagenta).add_modifier(bold)),
        "late_to_close" => ("LATE CLOSE", Style::new().fg(Color::LightMagenta)),
        "late_to_open" => ("LATE OPEN", Style::new().fg(Color::Magenta)),
        "early_close" => ("EARLY CLOSE", Style::new().fg(Color::Magenta)),
        "test" => ("TEST", Style::new().fg(Color::Gray)),
        "" => ("SUPERVISOR", Style::new().fg(Color::Gray)),
        _ => ("INFO", Style::new().fg(Color::Gray)),
    }
}

/// "12s", "3m05s", "1h02m", "2d03h".
pub fn age(now_ms: i64, since_ms: i64) -> String {
    let s = ((now_ms - since_ms) / 1000).max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn state_short(s: &str) -> &'static str {
    match s {
        "new" => "NEW",
        "acknowledged" => "ACK",
        "in_progress" => "BUSY",
        "closed" => "DONE",
        _ => "?",
    }
}

/// `s` cut or padded to exactly `w` characters (cut ends in "…").
fn fit(s: &str, w: usize) -> String {
    let n = s.chars().count();
    if n <= w {
        let mut out = String::with_capacity(w);
        out.push_str(s);
        out.extend(std::iter::repeat_n(' ', w - n));
        out
    } else if w == 0 {
        String::new()
    } else {
        let mut out: String = s.chars().take(w - 1).collect();
        out.push('…');
        out
    }
}

/// The first line to show of a list of `len` so that `at` is visible in `h` lines.
fn window(at: usize, h: usize, len: usize) -> usize {
    if h == 0 || len <= h {
        0
    } else if at >= h {
        (at + 1 - h).min(len - h)
    } else {
        0
    }
}

fn reversed() -> Style {
    Style::new().add_modifier(Modifier::REVERSED)
}

fn focus_block(title: String, focused: bool) -> Block<'static> {
    let b = Block::bordered().title(title);
    if focused {
        b.border_style(Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD))
    } else {
        b
    }
}

/// Draw everything.
pub fn draw(f: &mut Frame<'_>, app: &App, now_ms: i64) {
    let banner_h = u16::from(app.screen != Screen::Login && app.alerts().next().is_some());
    let [header, banner, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(banner_h),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, app, now_ms);
    if banner_h > 0 {
        draw_banner(f, banner, app, now_ms);
    }
    match app.screen {
        Screen::Login => draw_login(f, body, app),
        Screen::Queue => draw_queue(f, body, app, now_ms),
        Screen::Alarm => draw_alarm(f, body, app, now_ms),
        Screen::Supervision => draw_supervision(f, body, app, now_ms),
        Screen::Search => draw_search(f, body, app, now_ms),
        Screen::Schedules => draw_schedules(f, body, app, now_ms),
    }
    let st = match &app.status {
        Some((t, true)) => Line::from(Span::styled(format!(" {t}"), Style::new().fg(Color::Red))),
        Some((t, false)) => Line::from(format!(" {t}")),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(st), status);
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            keymap::footer(&app.hints(), usize::from(help.width)),
            Style::new().fg(Color::Black).bg(Color::Gray),
        ))),
        help,
    );
    if let Some(d) = &app.dialog {
        draw_dialog(f, body, app, d, now_ms);
    }
    if !app.handover.is_empty() && app.screen != Screen::Login && app.dialog.is_none() {
        draw_handover(f, body, app, now_ms);
    }
    if app.help {
        draw_help(f, body, app);
    }
    if app.confirm_quit {
        let r = centered(body, 24, 3);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(Line::from(Span::styled(
                " Quit? y/n",
                Style::new().add_modifier(Modifier::BOLD),
            )))
            .block(Block::bordered().border_style(Style::new().fg(Color::Yellow))),
            r,
        );
    }
}

fn draw_header(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let link = match &app.link {
        Link::Up => Span::styled(" connected ", Style::new().fg(Color::Black).bg(Color::Green)),
        Link::Down(n, why) => Span::styled(
            format!(" CONNECTION LOST (retry {n}): {why} "),
            Style::new()
                .fg(Color::White)
                .bg(Color::Red)
                .add_modifier(Modifier::BOLD),
        ),
    };
    let who = match &app.operator {
        Some((n, r)) => format!(" {n} ({}) ", r.as_str()),
        None => " not logged in ".into(),
    };
    let n = app.queue().len();
    // Short names where the full ones do not fit (80 columns).
    let room = usize::from(area.width).saturating_sub(11 + 11 + who.chars().count());
    let names = if room >= 50 {
        ["Queue", "Supervision", "Search", "Schedules"]
    } else {
        ["Queue", "Superv.", "Search", "Sched."]
    };
    let tab = |i: usize| {
        let label = if i == 0 {
            format!("1 {} {n}", names[0])
        } else {
            format!("{} {}", i + 1, names[i])
        };
        let on = match app.screen {
            Screen::Queue | Screen::Alarm => 0,
            Screen::Supervision => 1,
            Screen::Search => 2,
            Screen::Schedules => 3,
            Screen::Login => 9,
        };
        if on == i { format!("[{label}]") } else { label }
    };
    let tabs = match app.screen {
        Screen::Login => String::new(),
        _ => format!(" {} ", (0..4).map(tab).collect::<Vec<_>>().join(" ")),
    };
    let mut spans = vec![
        Span::styled(" meldkamer ", Style::new().add_modifier(Modifier::BOLD)),
        link,
        Span::raw(who),
        Span::styled(tabs, Style::new().fg(Color::Cyan)),
    ];
    if app.auto_present && app.screen != Screen::Login {
        spans.push(Span::styled(" AUTO ", Style::new().fg(Color::Black).bg(Color::Cyan)));
    }
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    let clock = format!("{} {} ", app.time.stamp(now_ms, now_ms), app.time.abbreviation(now_ms));
    let w = usize::from(area.width);
    if used + clock.chars().count() < w {
        spans.push(Span::raw(" ".repeat(w - used - clock.chars().count())));
        spans.push(Span::raw(clock));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// The alarm that waits: on every screen, until someone acknowledges it.
fn draw_banner(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let mut alerts = app.alerts();
    let Some(a) = alerts.next() else { return };
    let more = alerts.count();
    let (lbl, _) = label(a);
    let site = if a.site.is_empty() { &a.account } else { &a.site };
    let text = format!(
        " ⚠ {lbl} NOT ACKNOWLEDGED  {site}  {} ago{} ",
        age(now_ms, a.opened_ms),
        if more > 0 {
            format!("  (+{more} more life-safety)")
        } else {
            String::new()
        }
    );
    // Flashes: the colours swap every half second (and blink where the terminal can).
    let base = Style::new()
        .fg(Color::White)
        .bg(Color::Red)
        .add_modifier(Modifier::BOLD | Modifier::SLOW_BLINK);
    let style = if (now_ms / 500) % 2 == 0 {
        base
    } else {
        base.add_modifier(Modifier::REVERSED)
    };
    let w = usize::from(area.width);
    f.render_widget(Paragraph::new(Line::from(Span::styled(fit(&text, w), style))), area);
}

fn draw_login(f: &mut Frame<'_>, area: Rect, app: &App) {
    let w = area.width.min(50);
    let rect = Rect::new(
        area.x + (area.width - w) / 2,
        area.y + area.height.saturating_sub(7) / 2,
        w,
        7.min(area.height),
    );
    let focus = |i: usize| {
        if app.login_focus == i { reversed() } else { Style::new() }
    };
    let masked: String = "•".repeat(app.login_password.len());
    let lines = vec![
        Line::from(""),
        Line::from(vec![
            Span::raw(" Operator: "),
            Span::styled(format!("{:<20}", app.login_name), focus(0)),
        ]),
        Line::from(""),
        Line::from(vec![
            Span::raw(" Password: "),
            Span::styled(format!("{masked:<20}"), focus(1)),
        ]),
    ];
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Log in ")), rect);
}

fn factor_marks(a: &AlarmSummary) -> String {
    format!(
        "{}{}",
        if a.keypad_factor_ms.is_some() { "K" } else { "·" },
        if a.phone_factor { "P" } else { "·" }
    )
}

/// Queue columns: (header, width); the alarm (and, when wide, the site) take the rest.
fn queue_columns(width: usize) -> Vec<(&'static str, usize)> {
    let mut cols = vec![
        ("Pri", 3),
        ("Category", 10),
        ("Age", 6),
        ("St", 4),
        ("Owner", 8),
        ("Account", 8),
        ("KP", 2),
    ];
    let fixed: usize = cols.iter().map(|c| c.1 + 1).sum();
    let rest = width.saturating_sub(fixed);
    if width >= 108 {
        let site = rest / 3;
        cols.push(("Alarm", rest - site - 1));
        cols.push(("Site", site));
    } else {
        cols.push(("Alarm", rest));
    }
    cols
}

fn draw_queue(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let aside = app.queue().iter().filter(|a| a.recall_ms.is_some()).count();
    let title = format!(
        " Alarm queue ({} open{}){} ",
        app.queue().len() - aside,
        if aside > 0 {
            format!(", {aside} put aside")
        } else {
            String::new()
        },
        if app.grouped { " by site" } else { "" }
    );
    let block = Block::bordered().title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.rows().is_empty() {
        f.render_widget(Paragraph::new(" No open alarms."), inner);
        return;
    }
    let w = usize::from(inner.width);
    let cols = queue_columns(w);
    let head: String = cols.iter().map(|(h, cw)| fit(h, *cw) + " ").collect();
    let mut lines = vec![Line::from(Span::styled(
        fit(head.trim_end(), w),
        Style::new().add_modifier(Modifier::UNDERLINED),
    ))];
    let h = usize::from(inner.height).saturating_sub(1);
    let start = window(app.selected, h, app.rows().len());
    let end = (start + h).min(app.rows().len());
    let me = app.operator.as_ref().map(|(n, _)| n.as_str());
    for (i, row) in app.rows()[start..end].iter().enumerate() {
        let sel = start + i == app.selected;
        let line = match row {
            QueueRow::Alarm(ix) => {
                let Some(a) = app.queue().get(*ix) else { continue };
                let (lbl, style) = label(a);
                let fresh = app.fresh.contains(&a.id);
                let title = format!(
                    "{}{}{}{}",
                    if fresh { "● " } else { "" },
                    a.recall_ms
                        .map(|r| format!("back {} · ", app.time.stamp(r, now_ms)))
                        .unwrap_or_default(),
                    a.title,
                    if a.events > 1 {
                        format!(" ({}×)", a.events)
                    } else {
                        String::new()
                    }
                );
                let owner = a.owner.as_deref().unwrap_or("");
                let owner_style = match (a.owner.as_deref(), me) {
                    (Some(o), Some(m)) if o == m => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
                    (Some(_), _) => Style::new().fg(Color::Yellow),
                    _ => Style::new(),
                };
                let cells: Vec<(String, Style)> = vec![
                    (a.priority.to_string(), Style::new()),
                    (lbl.to_string(), style),
                    (age(now_ms, a.opened_ms), Style::new()),
                    (
                        state_short(&a.state).to_string(),
                        if a.state == "new" {
                            Style::new().add_modifier(Modifier::BOLD)
                        } else {
                            Style::new()
                        },
                    ),
                    (owner.to_string(), owner_style),
                    (a.account.clone(), Style::new()),
                    (factor_marks(a), Style::new()),
                    (title, Style::new()),
                    (a.site.clone(), Style::new()),
                ];
                let mut spans = Vec::with_capacity(cols.len() * 2);
                for ((text, style), (_, cw)) in cells.into_iter().zip(cols.iter()) {
                    spans.push(Span::styled(fit(&text, *cw), style));
                    spans.push(Span::raw(" "));
                }
                let line = Line::from(spans);
                if sel { line.style(reversed()) } else { line }
            }
            QueueRow::Site { label, count, new, .. } => {
                let text = format!(
                    " ▾ {label}: {count} alarm(s){}",
                    if *new > 0 {
                        format!(", {new} new")
                    } else {
                        String::new()
                    }
                );
                let style = Style::new().fg(Color::Cyan).add_modifier(Modifier::BOLD);
                Line::from(Span::styled(
                    fit(&text, w),
                    if sel {
                        style.add_modifier(Modifier::REVERSED)
                    } else {
                        style
                    },
                ))
            }
            QueueRow::Aside(n) => Line::from(Span::styled(
                fit(
                    &format!(" ── Put aside ({n}): each comes back by itself at its time ──"),
                    w,
                ),
                Style::new().fg(Color::Yellow),
            )),
        };
        lines.push(line);
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn tick(ok: bool) -> Span<'static> {
    if ok {
        Span::styled("✓", Style::new().fg(Color::Green).add_modifier(Modifier::BOLD))
    } else {
        Span::styled("✗", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
    }
}

fn draw_alarm(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let Some(d) = &app.alarm else {
        f.render_widget(Paragraph::new(" loading…"), area);
        return;
    };
    let a = &d.alarm;
    let (lbl, style) = label(a);
    let bottom_h = (area.height.saturating_sub(2) / 3).max(4);
    let [top, mid, bottom] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(6), Constraint::Length(bottom_h)]).areas(area);
    let me = app.operator.as_ref().map(|(n, _)| n.as_str());
    let owner_style = match (a.owner.as_deref(), me) {
        (Some(o), Some(m)) if o == m => Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
        (Some(_), _) => Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
        (None, _) => Style::new().add_modifier(Modifier::BOLD),
    };
    let title = vec![
        Line::from(vec![
            Span::styled(format!(" {lbl} "), style),
            Span::raw(format!(" P{}  ", a.priority)),
            Span::styled(a.title.clone(), Style::new().add_modifier(Modifier::BOLD)),
        ]),
        Line::from(vec![
            Span::raw(format!(" {}  ", a.state.replace('_', " "))),
            Span::styled(app.owner_of(a), owner_style),
            Span::raw(format!(
                "  age {}  opened {}  account {}  {} event(s){}{}{}",
                age(now_ms, a.opened_ms),
                app.time.stamp(a.opened_ms, now_ms),
                a.account,
                a.events,
                if a.restored { "  RESTORED" } else { "" },
                if a.escalated { "  ESCALATED" } else { "" },
                a.recall_ms
                    .map(|r| format!("  PUT ASIDE until {}", app.time.stamp(r, now_ms)))
                    .unwrap_or_default(),
            )),
        ]),
    ];
    f.render_widget(Paragraph::new(title), top);

    let [left, right] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(mid);
    f.render_widget(
        Paragraph::new(site_lines(app, d, now_ms))
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(if d.customer.is_some() {
                " Site "
            } else {
                " Supervisor item "
            })),
        left,
    );
    let [proc_area, contacts_area] = Layout::vertical([Constraint::Percentage(58), Constraint::Min(3)]).areas(right);
    draw_procedure(f, proc_area, app, d);
    draw_contacts(f, contacts_area, app, d, now_ms);

    if bottom.width >= 160 {
        let [tl, hist] = Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
        draw_timeline(f, tl, app, d, now_ms);
        draw_history(f, hist, app, d, now_ms);
    } else if app.pane == Pane::History {
        draw_history(f, bottom, app, d, now_ms);
    } else {
        draw_timeline(f, bottom, app, d, now_ms);
    }
}

/// A time from the API as local time: "armed by user 5 at 2026-…Z" carries its time as text,
/// and as milliseconds beside it.
fn local_suffix(text: &str, ms: Option<i64>, app: &App, now_ms: i64) -> String {
    if let Some(t) = ms
        && let Some(head) = text.strip_suffix(&crate::clock::rfc3339_ms(t))
    {
        return format!("{head}{}", app.time.stamp(t, now_ms));
    }
    text.to_string()
}

fn site_lines(app: &App, d: &AlarmDetail, now_ms: i64) -> Vec<Line<'static>> {
    // What decides the next step first (where, which zone, the two factors, duress); what
    // helps after; so a small terminal cuts the least needed.
    let a = &d.alarm;
    let mut l: Vec<Line> = Vec::new();
    match &d.customer {
        Some(c) => {
            l.push(Line::from(Span::styled(
                format!("{} ({})", c.customer_name, c.customer_ref),
                Style::new().add_modifier(Modifier::BOLD),
            )));
            l.push(Line::from(format!("{}: {} ({})", c.site_name, c.address, c.site_ref)));
        }
        None => l.push(Line::from(Span::styled(
            "No customer record (supervisor item)",
            Style::new().fg(Color::Red),
        ))),
    }
    if let Some(z) = &d.zone {
        l.push(Line::from(format!(
            "Zone {z}: {}",
            d.zone_description.as_deref().unwrap_or("(not in the customer record)")
        )));
    }
    if d.customer.is_some() {
        l.push(Line::from(vec![
            Span::raw("Panel disarm "),
            tick(a.keypad_factor_ms.is_some()),
            Span::raw(match (&d.keypad_user, a.keypad_factor_ms) {
                (Some(u), Some(t)) => format!(" {u} at {}", app.time.stamp(t, now_ms)),
                _ => String::new(),
            }),
        ]));
        l.push(Line::from(vec![
            Span::raw("Phone code   "),
            tick(a.phone_factor),
            Span::raw(if d.phone_locked { "  LOCKED: use call-back" } else { "" }),
        ]));
    }
    if a.duress {
        l.push(Line::from(Span::styled(
            "DURESS: do not cancel. Dispatch police.",
            Style::new()
                .fg(Color::White)
                .bg(Color::Magenta)
                .add_modifier(Modifier::BOLD),
        )));
    }
    if let Some(c) = &d.customer {
        l.push(Line::from(format!(
            "Armed: {}",
            local_suffix(&c.armed, c.armed_ms, app, now_ms)
        )));
        l.extend(schedule_lines(app, d, now_ms));
        if !c.responder_notes.is_empty() {
            l.push(Line::from(Span::styled(
                format!("Responders: {}", c.responder_notes),
                Style::new().fg(Color::Yellow),
            )));
        }
        if !c.customer_notes.is_empty() {
            l.push(Line::from(format!("Notes: {}", c.customer_notes)));
        }
    }
    if let Some(s) = &d.source {
        l.push(Line::from(Span::styled(
            format!(
                "Frame received {} over {} from {}",
                app.time.stamp(s.received_ms, now_ms),
                s.transport,
                s.peer
            ),
            Style::new().add_modifier(Modifier::BOLD),
        )));
        l.push(Line::from(format!("Raw: {}", s.raw)));
        if let Some(dec) = &s.decoded {
            l.push(Line::from(format!("Decoded: {dec}")));
        }
        l.push(Line::from(format!("Receiver: {}", s.verdict)));
        l.push(match &s.imported {
            Some(i) => Line::from(Span::styled(
                i.replacen("imported since", "Imported since", 1),
                Style::new().fg(Color::Green),
            )),
            None => Line::from("The account is not in the records (yet)."),
        });
    }
    l
}

/// The site's schedule on the alarm view: open or closed and until when, today's windows, an
/// extension, what is late, a test or out-of-service period.
fn schedule_lines(app: &App, d: &AlarmDetail, now_ms: i64) -> Vec<Line<'static>> {
    let Some(s) = &d.schedule else { return Vec::new() };
    let mut l = Vec::new();
    if let Some((mode, until)) = s.period {
        l.push(Line::from(Span::styled(
            format!(
                "{} until {}",
                mode.label().to_uppercase(),
                app.time.stamp(until, now_ms)
            ),
            Style::new()
                .fg(Color::Black)
                .bg(Color::Yellow)
                .add_modifier(Modifier::BOLD),
        )));
    }
    if s.time_zone.is_empty() {
        return l;
    }
    let change = s.next_change_ms.map(|t| app.time.stamp(t, now_ms));
    let state = match (s.open, change) {
        (true, Some(t)) => format!("OPEN, to be armed by {t}"),
        (true, None) => "OPEN".to_string(),
        (false, Some(t)) => format!("CLOSED, may open from {t}"),
        (false, None) => "CLOSED".to_string(),
    };
    l.push(Line::from(vec![
        Span::raw("Schedule: "),
        Span::styled(state, Style::new().add_modifier(Modifier::BOLD)),
    ]));
    l.push(Line::from(format!("Today: {} ({})", s.today, s.time_zone)));
    if let Some(e) = &s.extension {
        l.push(Line::from(format!("Extended {e}")));
    }
    if !s.late.is_empty() {
        l.push(Line::from(Span::styled(
            format!("Now: {}", s.late.join(", ")),
            Style::new().fg(Color::LightMagenta).add_modifier(Modifier::BOLD),
        )));
    }
    l
}

/// Words of `text` in lines of at most `w` characters (a longer word is cut).
fn wrap_words(text: &str, w: usize) -> Vec<String> {
    let w = w.max(1);
    let mut out: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let (n, len) = (line.chars().count(), word.chars().count());
        if n > 0 && n + 1 + len > w {
            out.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
        while line.chars().count() > w {
            let head: String = line.chars().take(w).collect();
            line = line.chars().skip(w).collect();
            out.push(head);
        }
    }
    if !line.is_empty() || out.is_empty() {
        out.push(line);
    }
    out
}

/// A list whose items wrap over several lines, scrolled so that item `at` is in view; the
/// item at `at` is reversed when `focused`.
fn item_list(items: Vec<Vec<Line<'static>>>, at: usize, h: usize, focused: bool) -> Vec<Line<'static>> {
    let (mut first, mut last) = (0, 0);
    let mut lines = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        if i == at {
            first = lines.len();
        }
        for l in item {
            lines.push(if i == at && focused { l.style(reversed()) } else { l });
        }
        if i == at {
            last = lines.len().saturating_sub(1);
        }
    }
    let start = if last >= h { (last + 1 - h).min(first) } else { 0 };
    lines.into_iter().skip(start).take(h).collect()
}

fn draw_procedure(f: &mut Frame<'_>, area: Rect, app: &App, d: &AlarmDetail) {
    let focused = app.pane == Pane::Procedure;
    let done = d.procedure.iter().filter(|s| s.done_by.is_some()).count();
    let title = if d.procedure.is_empty() {
        " Procedure ".to_string()
    } else {
        format!(" Procedure {done}/{} done, * mandatory ", d.procedure.len())
    };
    let block = focus_block(title, focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if d.procedure.is_empty() {
        f.render_widget(Paragraph::new("No procedure for this category."), inner);
        return;
    }
    let w = usize::from(inner.width);
    let items = d
        .procedure
        .iter()
        .map(|s| {
            let mark = if s.done_by.is_some() {
                Span::styled("[x]", Style::new().fg(Color::Green))
            } else if s.mandatory {
                Span::styled("[ ]", Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
            } else {
                Span::raw("[ ]")
            };
            let head = format!("{:>2}{}", s.number, if s.mandatory { "*" } else { " " });
            let mut out = Vec::new();
            for (j, text) in wrap_words(&s.instruction, w.saturating_sub(7)).into_iter().enumerate() {
                out.push(if j == 0 {
                    Line::from(vec![
                        Span::raw(head.clone()),
                        mark.clone(),
                        Span::raw(format!(" {text}")),
                    ])
                } else {
                    Line::from(format!("       {text}"))
                });
            }
            out
        })
        .collect();
    let at = app.step_cursor.min(d.procedure.len() - 1);
    f.render_widget(
        Paragraph::new(item_list(items, at, usize::from(inner.height), focused)),
        inner,
    );
}

fn draw_contacts(f: &mut Frame<'_>, area: Rect, app: &App, d: &AlarmDetail, now_ms: i64) {
    let focused = app.pane == Pane::Contacts;
    let next = d.next_contact().map(|c| c.id.clone());
    let title = match d.next_contact() {
        Some(c) => format!(" Call list: next {} ", c.name),
        None if d.contacts.is_empty() => " Call list ".to_string(),
        None => " Call list: everyone reached ".to_string(),
    };
    let block = focus_block(title, focused);
    let inner = block.inner(area);
    f.render_widget(block, area);
    if d.contacts.is_empty() {
        f.render_widget(Paragraph::new("No contacts."), inner);
        return;
    }
    let w = usize::from(inner.width);
    let items = d
        .call_list()
        .into_iter()
        .map(|(c, last)| {
            let last = match last {
                Some(k) => format!("{} {}", k.outcome.label(), app.time.stamp(k.at_ms, now_ms)),
                None => "not called".into(),
            };
            let text = format!(
                "{}. {}{}: {}; {}",
                c.call_order,
                c.name,
                if c.may_cancel { " (may cancel)" } else { "" },
                last,
                c.phones.join(", ")
            );
            let marker = if next.as_deref() == Some(c.id.as_str()) {
                "▶"
            } else {
                " "
            };
            wrap_words(&text, w.saturating_sub(2))
                .into_iter()
                .enumerate()
                .map(|(j, t)| Line::from(format!("{} {t}", if j == 0 { marker } else { " " })))
                .collect()
        })
        .collect();
    let at = app.contact_cursor.min(d.contacts.len() - 1);
    f.render_widget(
        Paragraph::new(item_list(items, at, usize::from(inner.height), focused)),
        inner,
    );
}

fn draw_timeline(f: &mut Frame<'_>, area: Rect, app: &App, d: &AlarmDetail, now_ms: i64) {
    let entries = d.timeline();
    let earlier = if d.log_earlier > 0 {
        format!(", {} earlier log entries not shown", d.log_earlier)
    } else {
        String::new()
    };
    let block = focus_block(
        format!(" Timeline ({}{earlier}) ", entries.len()),
        app.pane == Pane::Timeline,
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    let h = usize::from(inner.height);
    let w = usize::from(inner.width);
    let total = entries.len();
    let end = total.saturating_sub(app.timeline_scroll.min(total.saturating_sub(h)));
    let start = end.saturating_sub(h);
    let lines: Vec<Line> = entries[start..end]
        .iter()
        .map(|e| {
            let who_style = if e.who == "panel" || e.who == "system" {
                Style::new().fg(Color::DarkGray)
            } else {
                Style::new().fg(Color::Cyan)
            };
            let text = format!(" {:<12} {}", e.what, e.detail);
            let when = app.time.stamp(e.at_ms, now_ms);
            let used = when.chars().count() + 10;
            Line::from(vec![
                Span::raw(when),
                Span::raw(" "),
                Span::styled(fit(&e.who, 8), who_style),
                Span::raw(fit(&text, w.saturating_sub(used))),
            ])
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_history(f: &mut Frame<'_>, area: Rect, app: &App, d: &AlarmDetail, now_ms: i64) {
    let block = focus_block(
        format!(" Earlier alarms at this site ({}) ", d.history.len()),
        app.pane == Pane::History,
    );
    let inner = block.inner(area);
    f.render_widget(block, area);
    if d.history.is_empty() {
        f.render_widget(Paragraph::new("None."), inner);
        return;
    }
    let h = usize::from(inner.height);
    let w = usize::from(inner.width);
    let start = app.history_scroll.min(d.history.len().saturating_sub(h));
    let lines: Vec<Line> = d.history[start..(start + h).min(d.history.len())]
        .iter()
        .map(|p| {
            let end = match (&p.disposition, p.closed_ms) {
                (Some(disp), Some(t)) => format!(
                    "{} by {} at {}",
                    disp.replace('_', " "),
                    p.closed_by.as_deref().unwrap_or("?"),
                    app.time.stamp(t, now_ms)
                ),
                _ => "still open".into(),
            };
            Line::from(fit(
                &format!("{}  {end}  {}", app.time.stamp(p.opened_ms, now_ms), p.title),
                w,
            ))
        })
        .collect();
    f.render_widget(Paragraph::new(lines), inner);
}

fn draw_supervision(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let block = Block::bordered().title(format!(" Supervision: {} overdue ", app.overdue.len()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = usize::from(inner.width);
    let cols = [
        ("Account", 10),
        ("Path", 9),
        ("Every", 8),
        ("Last seen", 20),
        ("Overdue", 9),
    ];
    let fixed: usize = cols.iter().map(|c| c.1 + 1).sum();
    let head: String = cols.iter().map(|(h, cw)| fit(h, *cw) + " ").collect::<String>() + "Site";
    let mut lines = vec![Line::from(Span::styled(
        fit(&head, w),
        Style::new().add_modifier(Modifier::UNDERLINED),
    ))];
    let h = usize::from(inner.height).saturating_sub(1);
    for o in app.overdue.iter().skip(app.overdue_scroll).take(h) {
        let cells = [
            o.account.clone(),
            o.path.clone(),
            format!("{}s", o.interval_secs),
            o.last_seen
                .as_deref()
                .map_or_else(|| "never".into(), |t| app.time.stamp_text(t, now_ms)),
            age(o.overdue_secs * 1000, 0),
        ];
        let mut s: String = cells
            .iter()
            .zip(cols.iter())
            .map(|(c, (_, cw))| fit(c, *cw) + " ")
            .collect();
        s.push_str(&fit(&o.site, w.saturating_sub(fixed)));
        lines.push(Line::from(s));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

/// The schedule tab: sites late now, then the sites and accounts on test or out of service.
fn draw_schedules(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let (late, periods) = app
        .schedules
        .as_ref()
        .map_or((&[][..], &[][..]), |s| (s.late.as_slice(), s.periods.as_slice()));
    let open = periods.iter().filter(|p| p.ended_ms.is_none()).count();
    let block = Block::bordered().title(format!(
        " Schedules: {} late, {open} on test or out of service ",
        late.len()
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let w = usize::from(inner.width);
    let selected = app.selected_schedule_row();
    let mut lines: Vec<Line> = Vec::new();
    let head = |t: String| {
        Line::from(Span::styled(
            fit(&t, w),
            Style::new().add_modifier(Modifier::UNDERLINED),
        ))
    };
    lines.push(head(format!(
        "{} {} {} Site",
        fit("Late now", 20),
        fit("Since", 20),
        fit("Alarm", 8)
    )));
    if late.is_empty() {
        lines.push(Line::from(" every site keeps its schedule"));
    }
    for (i, x) in late.iter().enumerate() {
        let kind = crate::correlate::schedule::plan::Lateness::parse(&x.kind).map_or(x.kind.as_str(), |k| k.label());
        let text = format!(
            "{} {} {} {} {}",
            fit(kind, 20),
            fit(&app.time.stamp(x.since_ms, now_ms), 20),
            fit(if x.alarm.is_some() { "open" } else { "closed" }, 8),
            x.site_ref,
            x.site
        );
        let style = if selected == Some(ScheduleRow::Late(i)) {
            reversed()
        } else {
            Style::new().fg(Color::LightMagenta)
        };
        lines.push(Line::from(Span::styled(fit(&text, w), style)));
    }
    lines.push(Line::from(""));
    lines.push(head(format!(
        "{} {} {} {} {} Why",
        fit("On test / out of service", 24),
        fit("Until", 20),
        fit("By", 10),
        fit("Events", 6),
        fit("Site or account", 24)
    )));
    if periods.is_empty() {
        lines.push(Line::from(" none"));
    }
    for (i, p) in periods.iter().enumerate() {
        let target = if p.account.is_empty() {
            format!("{} {}", p.site_ref, p.site)
        } else {
            format!("#{} ({})", p.account, p.site_ref)
        };
        let what = match p.ended_ms {
            Some(_) => format!("{} (ended)", p.mode.label()),
            None => p.mode.label().to_string(),
        };
        let until = app.time.stamp(p.ended_ms.unwrap_or(p.until_ms), now_ms);
        let text = format!(
            "{} {} {} {} {} {}",
            fit(&what, 24),
            fit(&until, 20),
            fit(&p.set_by, 10),
            fit(&p.events.to_string(), 6),
            fit(&target, 24),
            p.reason
        );
        let style = if selected == Some(ScheduleRow::Period(i)) {
            reversed()
        } else if p.ended_ms.is_some() {
            Style::new().fg(Color::Gray)
        } else {
            Style::new().fg(Color::Yellow)
        };
        lines.push(Line::from(Span::styled(fit(&text, w), style)));
    }
    let h = usize::from(inner.height);
    let at = lines
        .iter()
        .position(|l| l.spans.first().is_some_and(|s| s.style == reversed()))
        .unwrap_or(0);
    let skip = window(at, h, lines.len());
    f.render_widget(Paragraph::new(lines.into_iter().skip(skip).collect::<Vec<_>>()), inner);
}

fn draw_search(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let [input, results] = Layout::vertical([Constraint::Length(3), Constraint::Min(1)]).areas(area);
    let typing = app.search_focus == SearchFocus::Input;
    f.render_widget(
        Paragraph::new(format!(" Find: {}{}", app.search_input, if typing { "▏" } else { "" })).block(focus_block(
            " Search sites, alarms and events (account, reference, name, address, title) ".into(),
            typing,
        )),
        input,
    );
    let block = focus_block(" Results ".into(), !typing);
    let inner = block.inner(results);
    f.render_widget(block, results);
    let Some(s) = &app.search else { return };
    let w = usize::from(inner.width);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines: Vec<Line> = Vec::new();
    let mut selected_line = 0;
    lines.push(Line::from(Span::styled(format!("Sites ({})", s.sites.len()), bold)));
    for x in &s.sites {
        lines.push(Line::from(fit(
            &format!(
                "  {} {}  ({} {})  accounts {}",
                x.site_ref,
                x.site,
                x.customer_ref,
                x.customer_name,
                x.accounts.join(", ")
            ),
            w,
        )));
    }
    lines.push(Line::from(Span::styled(
        format!("Alarms ({}): Enter opens", s.alarms.len()),
        bold,
    )));
    for (i, a) in s.alarms.iter().enumerate() {
        let (lbl, _) = label(a);
        let text = format!(
            "  {}  {:<10} {:<5} {:<8} {}  {}",
            app.time.stamp(a.opened_ms, now_ms),
            lbl,
            state_short(&a.state),
            a.owner.as_deref().unwrap_or(""),
            a.title,
            a.site
        );
        if i == app.search_selected {
            selected_line = lines.len();
        }
        let line = Line::from(fit(&text, w));
        lines.push(if i == app.search_selected && !typing {
            line.style(reversed())
        } else {
            line
        });
    }
    lines.push(Line::from(Span::styled(format!("Events ({})", s.events.len()), bold)));
    for e in &s.events {
        lines.push(Line::from(fit(
            &format!(
                "  {} {} {} {} {}{}",
                app.time.stamp(e.received_ms, now_ms),
                e.account,
                e.code,
                e.qualifier,
                e.description,
                if e.on_test { " (on test)" } else { "" }
            ),
            w,
        )));
    }
    let h = usize::from(inner.height);
    let start = window(selected_line, h, lines.len());
    let shown: Vec<Line> = lines.into_iter().skip(start).take(h).collect();
    f.render_widget(Paragraph::new(shown), inner);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

fn list_lines<'a>(items: impl Iterator<Item = String>, at: usize) -> Vec<Line<'a>> {
    items
        .enumerate()
        .map(|(i, t)| {
            let s = if i == at { reversed() } else { Style::new() };
            Line::from(Span::styled(format!(" {t} "), s))
        })
        .collect()
}

fn text_box(f: &mut Frame<'_>, area: Rect, title: &str, prompt: Vec<Line<'static>>, text: &str) {
    let r = centered(area, 72, 9);
    f.render_widget(Clear, r);
    let mut lines = prompt;
    lines.push(Line::from(format!("{text}▏")));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {title} "))),
        r,
    );
}

fn draw_dialog(f: &mut Frame<'_>, area: Rect, app: &App, d: &Dialog, now_ms: i64) {
    match d {
        Dialog::Note { text } => text_box(f, area, "Note on the alarm's record", vec![], text),
        Dialog::Handover { text } => text_box(
            f,
            area,
            "Handover note for the next shift",
            vec![Line::from("Shown to everyone who logs in within 24 hours.")],
            text,
        ),
        Dialog::Takeover { reason, .. } => {
            let owner = app
                .alarm
                .as_ref()
                .and_then(|a| a.alarm.owner.clone())
                .unwrap_or_else(|| "nobody".into());
            text_box(
                f,
                area,
                "Take over",
                vec![Line::from(format!(
                    "Take this alarm over from {owner}. Why? (on the record)"
                ))],
                reason,
            )
        }
        Dialog::Extend {
            site,
            until,
            reason,
            field,
        } => {
            let r = centered(area, 70, 8);
            f.render_widget(Clear, r);
            let focus = |i: usize| if *field == i { reversed() } else { Style::new() };
            let zone = app
                .alarm
                .as_ref()
                .and_then(|a| a.schedule.as_ref())
                .map_or(String::new(), |s| s.time_zone.clone());
            let lines = vec![
                Line::from(format!(" The caller says they stay longer at site {site}.")),
                Line::from(vec![
                    Span::raw(" Until "),
                    Span::styled(format!("{until:<5}"), focus(0)),
                    Span::raw(format!(" (HH:MM, {zone}; the next such time, then it ends by itself)")),
                ]),
                Line::from(vec![
                    Span::raw(" What they said: "),
                    Span::styled(format!("{reason}▏"), focus(1)),
                ]),
            ];
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Extend the schedule ")),
                r,
            );
        }
        Dialog::Service(s) => {
            let r = centered(area, 70, 9);
            f.render_widget(Clear, r);
            let focus = |i: usize| if s.field == i { reversed() } else { Style::new() };
            let lines = vec![
                Line::from(vec![
                    Span::raw(" Site (reference) or # and account: "),
                    Span::styled(format!("{}▏", s.target), focus(0)),
                ]),
                Line::from(vec![
                    Span::raw(" For "),
                    Span::styled(format!("{:>5}", s.amount), focus(1)),
                    Span::raw(format!(" {}, then it ends by itself", s.unit())),
                ]),
                Line::from(vec![
                    Span::raw(" Why: "),
                    Span::styled(format!("{}▏", s.reason), focus(2)),
                ]),
                Line::from(""),
                Line::from(match s.mode {
                    crate::correlate::service::Mode::Test => {
                        " Events are stored, no alarm; a summary when the test ends."
                    }
                    crate::correlate::service::Mode::OutOfService => " Events go to the supervisor; no operator alarm.",
                }),
            ];
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(format!(" Put {} ", s.mode.label()))),
                r,
            );
        }
        Dialog::ServiceEnd { label, .. } => {
            let r = centered(area, 60, 3);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(Line::from(Span::styled(
                    format!(" End {label} now? y/n"),
                    Style::new().add_modifier(Modifier::BOLD),
                )))
                .block(Block::bordered()),
                r,
            );
        }
        Dialog::Recall {
            minutes, note, field, ..
        } => {
            let r = centered(area, 64, 8);
            f.render_widget(Clear, r);
            let focus = |i: usize| if *field == i { reversed() } else { Style::new() };
            let back = minutes
                .parse::<i64>()
                .ok()
                .filter(|m| (1..=1440).contains(m))
                .map(|m| {
                    format!(
                        "It comes back by itself at {}.",
                        app.time.stamp(now_ms + m * 60_000, now_ms)
                    )
                })
                .unwrap_or_else(|| "1 to 1440 minutes.".into());
            let lines = vec![
                Line::from(vec![
                    Span::raw(" Put aside for "),
                    Span::styled(format!("{minutes:>4}"), focus(0)),
                    Span::raw(" minutes"),
                ]),
                Line::from(vec![Span::raw(" Note: "), Span::styled(format!("{note}▏"), focus(1))]),
                Line::from(""),
                Line::from(format!(" {back}")),
            ];
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Put aside ")),
                r,
            );
        }
        Dialog::Close(c) => {
            let r = centered(area, 60, c.options.len() as u16 + 6);
            f.render_widget(Clear, r);
            let chosen = c.chosen().map_or("?", |(_, l)| l);
            let lines = match c.stage {
                CloseStage::Choose => {
                    let mut lines = list_lines(c.options.iter().map(|(_, t)| t.to_string()), c.choice);
                    if !app.cancel_allowed() {
                        lines.push(Line::from(Span::styled(
                            " Cancel needs panel disarm ✓ and phone code ✓",
                            Style::new().fg(Color::Yellow),
                        )));
                    }
                    lines
                }
                CloseStage::Note => vec![
                    Line::from(format!(" {chosen} needs a note: what happened?")),
                    Line::from(format!(" {}▏", c.note)),
                ],
                CloseStage::Reason => vec![
                    Line::from(Span::styled(
                        format!(
                            " Mandatory step(s) {} not done. Why?",
                            c.open_steps.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                        ),
                        Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                    )),
                    Line::from(format!(" {}▏", c.reason)),
                ],
                CloseStage::Confirm => {
                    let mut l = vec![Line::from(Span::styled(
                        format!(" {}", c.question()),
                        Style::new().add_modifier(Modifier::BOLD),
                    ))];
                    if !c.note.trim().is_empty() {
                        l.push(Line::from(format!(" Note: {}", c.note.trim())));
                    }
                    if c.needs_reason() {
                        l.push(Line::from(format!(" Steps not done: {}", c.reason.trim())));
                    }
                    l
                }
            };
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Close alarm ")),
                r,
            );
        }
        Dialog::Call(c) => {
            let Some(detail) = &app.alarm else { return };
            let list = detail.call_list();
            let next = detail.next_contact().map(|k| k.id.clone());
            let (title, lines) = match c.stage {
                CallStage::Contact => (
                    " Log a call: whom? ",
                    list_lines(
                        list.iter().map(|(k, last)| {
                            format!(
                                "{}. {}  {}{}",
                                k.call_order,
                                k.name,
                                last.map_or_else(
                                    || "not called".to_string(),
                                    |l| format!("{} {}", l.outcome.label(), app.time.stamp(l.at_ms, now_ms))
                                ),
                                if next.as_deref() == Some(k.id.as_str()) {
                                    "  (next)"
                                } else {
                                    ""
                                }
                            )
                        }),
                        c.contact,
                    ),
                ),
                CallStage::Phone => (
                    " Log a call: which number? ",
                    list_lines(
                        detail
                            .contacts
                            .get(c.contact)
                            .map(|k| k.phones.clone())
                            .unwrap_or_default()
                            .into_iter(),
                        c.phone,
                    ),
                ),
                CallStage::Outcome => (
                    " Log a call: how did it go? ",
                    list_lines(CallOutcome::ALL.iter().map(|o| o.label().to_string()), c.outcome),
                ),
            };
            let r = centered(area, 64, lines.len() as u16 + 2);
            f.render_widget(Clear, r);
            f.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), r);
        }
        Dialog::Bulk(b) => {
            let what = match b.kind {
                BulkKind::Acknowledge => "Acknowledge",
                BulkKind::Close => "Close",
            };
            let lines = match b.stage {
                BulkStage::Choose => list_lines(BulkFlow::options().iter().map(|(_, l)| l.to_string()), b.choice),
                BulkStage::Reason => vec![
                    Line::from(format!(
                        " {} alarm(s) of {}: one reason for all",
                        b.alarms.len(),
                        b.label
                    )),
                    Line::from(format!(" {}▏", b.reason)),
                ],
                BulkStage::Confirm => vec![
                    Line::from(Span::styled(
                        format!(" {}", b.question()),
                        Style::new().add_modifier(Modifier::BOLD),
                    )),
                    Line::from(" Life-safety alarms are never closed in bulk: they stay."),
                ],
            };
            let r = centered(area, 70, lines.len() as u16 + 2);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(format!(" {what} the site's alarms "))),
                r,
            );
        }
        Dialog::Verify { contact, code, result } => {
            let contacts = app.cancel_contacts();
            let r = centered(area, 64, contacts.len() as u16 + 8);
            f.render_widget(Clear, r);
            let mut lines = vec![Line::from(" Caller:")];
            for (i, (_, name)) in contacts.iter().enumerate() {
                let s = if i == *contact { reversed() } else { Style::new() };
                lines.push(Line::from(Span::styled(format!("   {name} "), s)));
            }
            lines.push(Line::from(format!(" Code: {}", "•".repeat(code.len()))));
            lines.push(Line::from(""));
            lines.push(match result {
                None => Line::from(" Ask the caller for the phone cancellation code."),
                Some(VerifyShown::Accepted) => Line::from(Span::styled(
                    " ACCEPTED: phone code verified ✓",
                    Style::new().fg(Color::Green).add_modifier(Modifier::BOLD),
                )),
                Some(VerifyShown::Rejected(left)) => Line::from(Span::styled(
                    match left {
                        Some(n) => format!(" REJECTED: wrong code, {n} attempt(s) left"),
                        None => " REJECTED: wrong code".to_string(),
                    },
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                )),
                Some(VerifyShown::Locked) => Line::from(Span::styled(
                    " LOCKED: too many wrong codes. Treat as real; use call-back.",
                    Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
                )),
                Some(VerifyShown::Invalidated) => Line::from(Span::styled(
                    " INVALIDATED: this code was withdrawn. Use call-back.",
                    Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
                )),
                Some(VerifyShown::Duress) => Line::from(Span::styled(
                    " DURESS! Thank the caller, end the call, dispatch police.",
                    Style::new()
                        .fg(Color::White)
                        .bg(Color::Magenta)
                        .add_modifier(Modifier::BOLD | Modifier::SLOW_BLINK),
                )),
                Some(VerifyShown::Failed(e)) => Line::from(Span::styled(format!(" {e}"), Style::new().fg(Color::Red))),
            });
            f.render_widget(
                Paragraph::new(lines)
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Verify phone cancellation code ")),
                r,
            );
        }
    }
}

fn draw_handover(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let r = centered(
        area,
        area.width.saturating_sub(4).min(100),
        area.height.saturating_sub(2),
    );
    f.render_widget(Clear, r);
    let mut lines: Vec<Line> = app
        .handover
        .iter()
        .map(|n| Line::from(format!("{}  {}: {}", app.time.stamp(n.at_ms, now_ms), n.author, n.text)))
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(Span::styled(
        "Enter: read, carry on",
        Style::new().add_modifier(Modifier::BOLD),
    )));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" Handover notes ({}, last 24 h) ", app.handover.len()))),
        r,
    );
}

fn draw_help(f: &mut Frame<'_>, area: Rect, app: &App) {
    let hints = app.screen_hints();
    let r = centered(area, 60, hints.len() as u16 + 3);
    f.render_widget(Clear, r);
    let mut lines: Vec<Line> = hints
        .iter()
        .map(|h| {
            Line::from(vec![
                Span::styled(format!("{:>10}  ", h.keys), Style::new().add_modifier(Modifier::BOLD)),
                Span::raw(h.what),
            ])
        })
        .collect();
    lines.push(Line::from(" Ctrl-C quits from anywhere (it asks first)."));
    let screen = match app.screen {
        Screen::Login => "log in",
        Screen::Queue => "queue",
        Screen::Alarm => "alarm",
        Screen::Supervision => "supervision",
        Screen::Search => "search",
        Screen::Schedules => "schedules",
    };
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(format!(" Keys: {screen} (Esc closes) "))),
        r,
    );
}
