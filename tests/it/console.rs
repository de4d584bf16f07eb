//! Console rendering with ratatui's TestBackend: the queue, the alarm view and the verify
//! dialog, at 80×24 and at a larger size, compared with the snapshots in `tests/snapshots/`
//! (MELDKAMER_BLESS=1 rewrites them after an intended change). Plus the key handling that
//! decides what is offered.

use meldkamer::console::app::{App, Dialog, Key, Link, Screen, VerifyShown};
use meldkamer::console::ui;
use meldkamer::correlate::alarms::Disposition;
use meldkamer::operator::protocol::{Envelope, Op, Response, ServerMessage};
use meldkamer::operator::queries::{AlarmDetail, AlarmSummary, EventRow, StepRow};
use meldkamer::view::{ContactView, CustomerCard};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use zeroize::Zeroizing;

const NOW: i64 = 1_768_478_400_000 + 95_000; // 2026-01-15 12:01:35 UTC

fn alarm(i: usize, category: &str, priority: i64, opened_s: i64) -> AlarmSummary {
    AlarmSummary {
        id: format!("{i:032x}"),
        queue: "operator".into(),
        priority,
        category: category.into(),
        title: match category {
            "burglary" => "Burglary alarm, zone 3: Back door, ground floor".into(),
            "fire" => "Fire alarm, zone 4: Smoke detector, bakery".into(),
            "duress" => "Duress, user 5".into(),
            "communication" => "Communication lost: account 2345 (primary path)".into(),
            other => format!("{other} alarm"),
        },
        account: format!("{:04X}", 0x1234 + i),
        site: "Shop, Demostraat 1".into(),
        state: if i.is_multiple_of(3) {
            "new".into()
        } else {
            "acknowledged".into()
        },
        opened_ms: 1_768_478_400_000 + opened_s * 1000,
        last_event_ms: 1_768_478_400_000 + opened_s * 1000,
        events: 1 + (i as i64 % 4),
        restored: false,
        escalated: false,
        keypad_factor: None,
        keypad_factor_ms: None,
        phone_factor: false,
        duress: category == "duress",
        owner: None,
        recall_ms: None,
        site_ref: "DEMO-S1".into(),
    }
}

fn detail(keypad: bool, phone: bool) -> AlarmDetail {
    let mut a = alarm(0, "burglary", 3, 0);
    if keypad {
        a.keypad_factor = Some("5".into());
        a.keypad_factor_ms = Some(1_768_478_445_000);
    }
    a.phone_factor = phone;
    AlarmDetail {
        alarm: a,
        zone: Some("3".into()),
        zone_description: Some("Back door, ground floor".into()),
        keypad_user: keypad.then(|| "user 5: P. Demo (owner)".into()),
        customer: Some(CustomerCard {
            customer_ref: "DEMO-C1".into(),
            customer_name: "Bakkerij Demo (synthetic)".into(),
            customer_notes: String::new(),
            site_ref: "DEMO-S1".into(),
            site_name: "Shop".into(),
            address: "Demostraat 1, 1000 AA Demostad".into(),
            responder_notes: "Key safe left of the back door.".into(),
            armed: if keypad {
                "disarmed by user 5".into()
            } else {
                "armed".into()
            },
            transmitters: vec![],
            zones: vec![],
            users: vec![],
            contacts: vec![],
            procedures: vec![],
        }),
        contacts: vec![
            ContactView {
                id: "a".repeat(32),
                name: "P. Demo".into(),
                phones: vec!["+31 20 555 0100".into()],
                call_order: 1,
                may_cancel: true,
            },
            ContactView {
                id: "b".repeat(32),
                name: "R. Demo".into(),
                phones: vec!["+31 6 5555 0200".into()],
                call_order: 2,
                may_cancel: false,
            },
        ],
        procedure: vec![
            StepRow {
                number: 1,
                instruction: "Check the zone and the armed state".into(),
                mandatory: false,
                done_by: Some("olga".into()),
            },
            StepRow {
                number: 2,
                instruction: "Call the contacts in call order".into(),
                mandatory: false,
                done_by: None,
            },
            StepRow {
                number: 3,
                instruction: "No valid cancellation: dispatch a guard".into(),
                mandatory: false,
                done_by: None,
            },
        ],
        events: vec![EventRow {
            received: "2026-01-15T12:00:00.000Z".into(),
            received_ms: 1_768_478_400_000,
            account: "1234".into(),
            code: "SIA BA".into(),
            qualifier: "new".into(),
            description: "Burglary alarm, zone 03, area 1".into(),
            zone: Some("03".into()),
            user: None,
            area: Some("1".into()),
        }],
        log: vec![],
        log_earlier: 0,
        phone_locked: false,
        calls: vec![],
        history: vec![],
        source: None,
    }
}

fn logged_in() -> App {
    let mut app = App::new();
    app.link = Link::Up;
    app.operator = Some(("olga".into(), "operator".into()));
    app.token = Some("t".into());
    app.screen = Screen::Queue;
    app.queue = vec![
        alarm(1, "duress", 1, 80),
        alarm(2, "fire", 2, 30),
        alarm(3, "burglary", 3, 0),
        alarm(4, "communication", 5, 10),
    ];
    app
}

fn render(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
    t.draw(|f| ui::draw(f, app, NOW)).expect("draw");
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..h {
        let mut line = String::new();
        for x in 0..w {
            line.push_str(buf[(x, y)].symbol());
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    s
}

fn snapshot(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    if std::env::var_os("MELDKAMER_BLESS").is_some() {
        std::fs::write(&path, text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("missing snapshot {}", path.display()));
    assert_eq!(text, want, "snapshot {name} differs (MELDKAMER_BLESS=1 to accept)");
}

#[test]
fn queue_sorted_labelled_and_aged() {
    let app = logged_in();
    for (w, h) in [(80, 24), (120, 30)] {
        let s = render(&app, w, h);
        snapshot(&format!("queue_{w}x{h}"), &s);
        // Duress first, then fire, burglary, communication.
        let order: Vec<usize> = ["DURESS", "FIRE", "BURGLARY", "COMM LOST"]
            .iter()
            .map(|l| s.find(l).unwrap_or_else(|| panic!("{l} shown")))
            .collect();
        assert!(order.windows(2).all(|p| p[0] < p[1]), "{s}");
        assert!(s.contains("1m35s"), "age counts from opening: {s}");
    }
}

#[test]
fn alarm_view_shows_everything_an_operator_needs() {
    let mut app = logged_in();
    app.screen = Screen::Alarm;
    app.alarm = Some(detail(true, false));
    for (w, h) in [(80, 24), (120, 40)] {
        let s = render(&app, w, h);
        snapshot(&format!("alarm_{w}x{h}"), &s);
        for want in [
            "Bakkerij Demo",
            "Demostraat 1",
            "Key safe",
            "Zone 3: Back door",
            "Panel disarm ✓",
            "Phone code   ✗",
            "[x]",
            "P. Demo",
        ] {
            assert!(s.contains(want), "{want} at {w}x{h}:\n{s}");
        }
    }
}

#[test]
fn verify_dialog_masks_the_code_and_shows_duress_unmistakably() {
    let mut app = logged_in();
    app.screen = Screen::Alarm;
    app.alarm = Some(detail(true, false));
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Zeroizing::new("482913".into()),
        result: None,
    });
    let s = render(&app, 80, 24);
    snapshot("verify_80x24", &s);
    assert!(s.contains("••••••") && !s.contains("482913"), "the code is masked");
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Zeroizing::new(String::new()),
        result: Some(VerifyShown::Duress),
    });
    let s = render(&app, 80, 24);
    snapshot("verify_duress_80x24", &s);
    assert!(s.contains("DURESS! Thank the caller, end the call, dispatch"), "{s}");
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Zeroizing::new(String::new()),
        result: Some(VerifyShown::Rejected(Some(3))),
    });
    assert!(render(&app, 80, 24).contains("3 attempt(s) left"));
}

#[test]
fn cancel_is_offered_only_with_both_factors() {
    let mut app = logged_in();
    app.screen = Screen::Alarm;
    app.alarm = Some(detail(true, false));
    app.on_key(Key::Char('c'));
    assert!(
        !app.dispositions()
            .iter()
            .any(|(k, _)| *k == Disposition::CancelledByCustomer)
    );
    assert!(render(&app, 80, 24).contains("Cancel needs panel disarm"));
    app.dialog = None;
    app.alarm = Some(detail(true, true));
    assert!(
        app.dispositions()
            .iter()
            .any(|(k, _)| *k == Disposition::CancelledByCustomer)
    );
    let mut d = detail(true, true);
    d.alarm.duress = true;
    app.alarm = Some(d);
    assert!(!app.cancel_allowed(), "never for duress");
}

#[test]
fn login_screen_masks_the_password_and_a_lost_link_shows() {
    let mut app = App::new();
    for c in "olga".chars() {
        app.on_key(Key::Char(c));
    }
    app.on_key(Key::Tab);
    for c in "secret-pass".chars() {
        app.on_key(Key::Char(c));
    }
    app.on_disconnected(3, "connection refused".into());
    let s = render(&app, 80, 24);
    snapshot("login_80x24", &s);
    assert!(!s.contains("secret-pass") && s.contains("•••••••••••"));
    assert!(s.contains("CONNECTION LOST (retry 3)"));
    let sent = app.on_key(Key::Enter);
    assert_eq!(sent[0].request.op(), Op::Login);
    assert!(app.login_password.is_empty(), "the password is dropped once sent");
}

#[test]
fn ten_thousand_alarms_render_only_what_fits() {
    let mut app = logged_in();
    app.queue = (0..10_000).map(|i| alarm(i, "burglary", 3, i as i64)).collect();
    app.selected = 9_999;
    let s = render(&app, 80, 24);
    assert!(s.contains("10000 open"));
    assert!(
        s.contains(&format!("{:04X}", 0x1234 + 9_999)),
        "the selection is scrolled into view"
    );
}

fn answer(request: &Envelope, result: serde_json::Value) -> ServerMessage {
    ServerMessage::Response(Response {
        id: request.id,
        ok: true,
        result: Some(result),
        error: None,
    })
}

/// An answer that arrives after the operator left the alarm (Escape) must not pull them back
/// into it: after a close, the re-read of the closed alarm used to reopen its view over the
/// queue ("No open alarms" never showed). A re-read while the operator stays on the alarm
/// still updates it.
#[test]
fn a_late_re_read_does_not_reopen_an_alarm_the_operator_left() {
    let d = detail(true, true);
    let mut app = logged_in();
    app.queue = vec![d.alarm.clone()];
    let open = app.on_key(Key::Enter);
    assert_eq!(open.len(), 1);
    app.on_message(answer(&open[0], serde_json::to_value(&d).expect("json")));
    assert_eq!(app.screen, Screen::Alarm);

    // An action on the alarm; its answer asks for a re-read, which is still under way when
    // the operator presses Escape.
    let ack = app.on_key(Key::Char('a'));
    let reread = app.on_message(answer(&ack[0], serde_json::json!({"done": "acknowledge"})));
    assert_eq!(reread.len(), 1);
    app.on_key(Key::Esc);
    assert_eq!(app.screen, Screen::Queue);
    let mut closed = d.clone();
    closed.alarm.state = "closed".into();
    app.on_message(answer(&reread[0], serde_json::to_value(&closed).expect("json")));
    assert_eq!(
        app.screen,
        Screen::Queue,
        "the late answer left the operator where they were"
    );
    assert!(app.alarm.is_none());

    // Staying on the alarm: the re-read updates it.
    let open = app.on_key(Key::Enter);
    app.on_message(answer(&open[0], serde_json::to_value(&d).expect("json")));
    let ack = app.on_key(Key::Char('a'));
    let reread = app.on_message(answer(&ack[0], serde_json::json!({"done": "acknowledge"})));
    let mut acked = d.clone();
    acked.alarm.state = "acknowledged".into();
    app.on_message(answer(&reread[0], serde_json::to_value(&acked).expect("json")));
    assert_eq!(app.screen, Screen::Alarm);
    assert_eq!(app.alarm.as_ref().map(|a| a.alarm.state.as_str()), Some("acknowledged"));
}
