//! Rendering: a pure function of the state and "now". Works down to 80×24; only the visible
//! rows of the queue are built, so 10,000 open alarms draw as fast as 20.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Table, Wrap};

use super::app::{App, Dialog, Link, Screen, VerifyShown};
use crate::operator::queries::AlarmSummary;

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

/// Draw everything.
pub fn draw(f: &mut Frame<'_>, app: &App, now_ms: i64) {
    let [header, body, status, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    draw_header(f, header, app);
    match app.screen {
        Screen::Login => draw_login(f, body, app),
        Screen::Queue => draw_queue(f, body, app, now_ms),
        Screen::Alarm => draw_alarm(f, body, app, now_ms),
        Screen::Supervision => draw_supervision(f, body, app),
        Screen::Search => draw_search(f, body, app),
    }
    let st = match &app.status {
        Some((t, true)) => Line::from(Span::styled(t.clone(), Style::new().fg(Color::Red))),
        Some((t, false)) => Line::from(t.clone()),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(st), status);
    f.render_widget(
        Paragraph::new(Line::from(Span::styled(
            help_text(app),
            Style::new().fg(Color::Black).bg(Color::Gray),
        ))),
        help,
    );
    if let Some(d) = &app.dialog {
        draw_dialog(f, f.area(), app, d);
    }
}

fn draw_header(f: &mut Frame<'_>, area: Rect, app: &App) {
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
        Some((n, r)) => format!(" {n} ({r}) "),
        None => " not logged in ".into(),
    };
    let tabs = match app.screen {
        Screen::Login => String::new(),
        Screen::Queue | Screen::Alarm => format!(" [1 Queue: {}]  2 Supervision  3 Search ", app.queue.len()),
        Screen::Supervision => format!(" 1 Queue: {}  [2 Supervision]  3 Search ", app.queue.len()),
        Screen::Search => format!(" 1 Queue: {}  2 Supervision  [3 Search] ", app.queue.len()),
    };
    let line = Line::from(vec![
        Span::styled(" meldkamer ", Style::new().add_modifier(Modifier::BOLD)),
        link,
        Span::raw(who),
        Span::styled(tabs, Style::new().fg(Color::Cyan)),
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn help_text(app: &App) -> String {
    if let Some(d) = &app.dialog {
        return match d {
            Dialog::Verify { .. } => " ↑↓ contact  type code  Enter verify  Esc close".into(),
            Dialog::Close { .. } => " ↑↓ choose  Enter close alarm  Esc back".into(),
            Dialog::Note { .. } => " type note  Enter save  Esc cancel".into(),
        };
    }
    match app.screen {
        Screen::Login => " Tab switch field  Enter log in  Esc quit".into(),
        Screen::Queue => " ↑↓ select  Enter open  a acknowledge  r refresh  Tab/2/3 views  q quit".into(),
        Screen::Alarm => " a ack  s start  v verify  n note  1-9 step  c close  ↑↓ events  Esc back".into(),
        Screen::Supervision => " r refresh  1 queue  3 search  Esc back".into(),
        Screen::Search => " type account  Enter search  1 queue  2 supervision  Esc back".into(),
    }
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
        if app.login_focus == i {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        }
    };
    let masked: String = "•".repeat(app.login_password.chars().count());
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

fn draw_queue(f: &mut Frame<'_>, area: Rect, app: &App, now_ms: i64) {
    let block = Block::bordered().title(format!(" Alarm queue ({} open) ", app.queue.len()));
    let inner_h = area.height.saturating_sub(3) as usize; // borders + header row
    if app.queue.is_empty() {
        f.render_widget(Paragraph::new(" No open alarms.").block(block), area);
        return;
    }
    // Only the rows that fit, keeping the selection in view.
    let start = if app.selected >= inner_h {
        app.selected + 1 - inner_h
    } else {
        0
    };
    let end = (start + inner_h).min(app.queue.len());
    let wide = area.width >= 110;
    let rows = app.queue[start..end].iter().enumerate().map(|(i, a)| {
        let (lbl, style) = label(a);
        let sel = start + i == app.selected;
        let fresh = app.fresh.contains(&a.id);
        let mut cells = vec![
            Span::raw(format!("{}", a.priority)),
            Span::styled(lbl, style),
            Span::raw(age(now_ms, a.opened_ms)),
            Span::styled(
                state_short(&a.state),
                if a.state == "new" {
                    Style::new().add_modifier(Modifier::BOLD)
                } else {
                    Style::new()
                },
            ),
            Span::raw(a.account.clone()),
            Span::raw(factor_marks(a)),
            Span::raw(format!(
                "{}{}{}",
                if fresh { "● " } else { "" },
                a.title,
                if a.events > 1 {
                    format!(" ({}×)", a.events)
                } else {
                    String::new()
                }
            )),
        ];
        if wide {
            cells.push(Span::raw(a.site.clone()));
        }
        let row = Row::new(cells);
        if sel {
            row.style(Style::new().add_modifier(Modifier::REVERSED))
        } else {
            row
        }
    });
    let mut widths = vec![
        Constraint::Length(3),
        Constraint::Length(10),
        Constraint::Length(6),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(2),
        Constraint::Fill(2),
    ];
    let mut header = vec!["Pri", "Category", "Age", "St", "Account", "KP", "Alarm"];
    if wide {
        widths.push(Constraint::Fill(1));
        header.push("Site");
    }
    let table = Table::new(rows, widths)
        .header(Row::new(header).style(Style::new().add_modifier(Modifier::UNDERLINED)))
        .block(block);
    f.render_widget(table, area);
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
    let [top, mid, bottom] =
        Layout::vertical([Constraint::Length(2), Constraint::Min(6), Constraint::Length(6)]).areas(area);
    let title = vec![
        Line::from(vec![
            Span::styled(format!(" {lbl} "), style),
            Span::raw(format!(" P{}  ", a.priority)),
            Span::styled(a.title.clone(), Style::new().add_modifier(Modifier::BOLD)),
        ]),
        Line::from(format!(
            " {}  age {}  account {}  {} event(s){}{}",
            a.state.replace('_', " "),
            age(now_ms, a.opened_ms),
            a.account,
            a.events,
            if a.restored { "  RESTORED" } else { "" },
            if a.escalated { "  ESCALATED" } else { "" },
        )),
    ];
    f.render_widget(Paragraph::new(title), top);

    let [left, right] = Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(mid);
    let mut l: Vec<Line> = Vec::new();
    match &d.customer {
        Some(c) => {
            l.push(Line::from(Span::styled(
                format!("{} ({})", c.customer_name, c.customer_ref),
                Style::new().add_modifier(Modifier::BOLD),
            )));
            l.push(Line::from(format!("{}: {}", c.site_name, c.address)));
            if !c.responder_notes.is_empty() {
                l.push(Line::from(Span::styled(
                    format!("Responders: {}", c.responder_notes),
                    Style::new().fg(Color::Yellow),
                )));
            }
            l.push(Line::from(format!("Armed state: {}", c.armed)));
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
    l.push(Line::from(vec![
        Span::raw("Panel disarm "),
        tick(a.keypad_factor_ms.is_some()),
        Span::raw(match (&d.keypad_user, a.keypad_factor_ms) {
            (Some(u), Some(t)) => format!(" {u} at {}", &crate::clock::rfc3339_ms(t)[11..19]),
            _ => String::new(),
        }),
    ]));
    l.push(Line::from(vec![
        Span::raw("Phone code   "),
        tick(a.phone_factor),
        Span::raw(if d.phone_locked { "  LOCKED: use call-back" } else { "" }),
    ]));
    if a.duress {
        l.push(Line::from(Span::styled(
            "DURESS: do not cancel. Dispatch police.",
            Style::new()
                .fg(Color::White)
                .bg(Color::Magenta)
                .add_modifier(Modifier::BOLD),
        )));
    }
    f.render_widget(
        Paragraph::new(l)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Site ")),
        left,
    );

    let mut r: Vec<Line> = Vec::new();
    for s in &d.procedure {
        r.push(Line::from(vec![
            Span::raw(format!("{} ", s.number)),
            if s.done_by.is_some() {
                Span::styled("[x] ", Style::new().fg(Color::Green))
            } else {
                Span::raw("[ ] ")
            },
            Span::raw(s.instruction.clone()),
        ]));
    }
    if !d.contacts.is_empty() {
        r.push(Line::from(Span::styled(
            "Contacts:",
            Style::new().add_modifier(Modifier::UNDERLINED),
        )));
        for c in &d.contacts {
            r.push(Line::from(format!(
                "{}. {} {}{}",
                c.call_order,
                c.name,
                c.phones.join(" / "),
                if c.may_cancel { " (may cancel)" } else { "" }
            )));
        }
    }
    f.render_widget(
        Paragraph::new(r)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(" Procedure ")),
        right,
    );

    let h = bottom.height.saturating_sub(2) as usize;
    let total = d.events.len();
    let end = total.saturating_sub(app.scroll.min(total.saturating_sub(h)));
    let start = end.saturating_sub(h);
    let ev: Vec<Line> = d.events[start..end]
        .iter()
        .map(|e| {
            Line::from(format!(
                "{} {} {} {}",
                &e.received[11..19],
                e.code,
                e.qualifier,
                e.description
            ))
        })
        .collect();
    f.render_widget(
        Paragraph::new(ev).block(Block::bordered().title(format!(" Events ({total}) "))),
        bottom,
    );
}

fn draw_supervision(f: &mut Frame<'_>, area: Rect, app: &App) {
    let rows = app
        .overdue
        .iter()
        .take(area.height.saturating_sub(3) as usize)
        .map(|o| {
            Row::new(vec![
                o.account.clone(),
                o.path.clone(),
                format!("{}s", o.interval_secs),
                o.last_seen.clone().unwrap_or_else(|| "never".into()),
                format!("{}s", o.overdue_secs),
                o.site.clone(),
            ])
        });
    let t = Table::new(
        rows,
        [
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(24),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(vec![
        "Account",
        "Path",
        "Every",
        "Last seen",
        "Overdue",
        "Site",
    ]))
    .block(Block::bordered().title(format!(" Supervision: {} overdue ", app.overdue.len())));
    f.render_widget(t, area);
}

fn draw_search(f: &mut Frame<'_>, area: Rect, app: &App) {
    let [input, results] = Layout::vertical([Constraint::Length(3), Constraint::Min(1)]).areas(area);
    f.render_widget(
        Paragraph::new(format!(" Account: {}", app.search_input)).block(Block::bordered().title(" Search events ")),
        input,
    );
    let lines: Vec<Line> = app
        .search_results
        .iter()
        .take(results.height.saturating_sub(2) as usize)
        .map(|e| {
            Line::from(format!(
                "{} {} {} {}",
                &e.received[..19],
                e.code,
                e.qualifier,
                e.description
            ))
        })
        .collect();
    f.render_widget(Paragraph::new(lines).block(Block::bordered()), results);
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(area.x + (area.width - w) / 2, area.y + (area.height - h) / 2, w, h)
}

fn draw_dialog(f: &mut Frame<'_>, area: Rect, app: &App, d: &Dialog) {
    match d {
        Dialog::Note { text } => {
            let r = centered(area, 70, 5);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(text.clone())
                    .wrap(Wrap { trim: false })
                    .block(Block::bordered().title(" Note ")),
                r,
            );
        }
        Dialog::Close { choice } => {
            let opts = app.dispositions();
            let r = centered(area, 52, opts.len() as u16 + 4);
            f.render_widget(Clear, r);
            let mut lines: Vec<Line> = opts
                .iter()
                .enumerate()
                .map(|(i, (_, t))| {
                    let s = if i == *choice {
                        Style::new().add_modifier(Modifier::REVERSED)
                    } else {
                        Style::new()
                    };
                    Line::from(Span::styled(format!(" {t} "), s))
                })
                .collect();
            if !app.cancel_allowed() {
                lines.push(Line::from(Span::styled(
                    " Cancel needs panel disarm ✓ and phone code ✓",
                    Style::new().fg(Color::Yellow),
                )));
            }
            f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Close alarm ")), r);
        }
        Dialog::Verify { contact, code, result } => {
            let contacts = app.cancel_contacts();
            let r = centered(area, 64, contacts.len() as u16 + 8);
            f.render_widget(Clear, r);
            let mut lines = vec![Line::from(" Caller:")];
            for (i, (_, name)) in contacts.iter().enumerate() {
                let s = if i == *contact {
                    Style::new().add_modifier(Modifier::REVERSED)
                } else {
                    Style::new()
                };
                lines.push(Line::from(Span::styled(format!("   {name} "), s)));
            }
            lines.push(Line::from(format!(" Code: {}", "•".repeat(code.chars().count()))));
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
                Paragraph::new(lines).wrap(Wrap { trim: false }).block(
                    Block::default()
                        .borders(Borders::ALL)
                        .title(" Verify phone cancellation code "),
                ),
                r,
            );
        }
    }
}
