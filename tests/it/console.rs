//! The console without a terminal: rendering with ratatui's TestBackend, compared with the
//! snapshots in `tests/snapshots/` (MELDKAMER_BLESS=1 rewrites them after an intended change),
//! and the key handling of the pure `App` for each part of the operator's shift: life-safety
//! first, one owner, a deliberate close, Escape only goes back, a session that ends, the
//! alarm's record, the call list, putting aside and handing over, mass events, local time,
//! help and keys, search.

use meldkamer::console::app::{App, Key, Link, Options, Pane, QueueRow, Screen, SearchFocus, Secret};
use meldkamer::console::dialog::{CallStage, CloseStage, Dialog, VerifyShown};
use meldkamer::console::keymap;
use meldkamer::console::localtime::LocalTime;
use meldkamer::console::ui;
use meldkamer::correlate::alarms::Disposition;
use meldkamer::correlate::service::{Mode, PeriodView};
use meldkamer::operator::Role;
use meldkamer::operator::protocol::{
    ApiError, BulkResult, CallOutcome, Envelope, ErrorKind, HandoverNote, LateSite, LoginResult, Op, Push, QueueResult,
    Request, Response, SchedulesResult, SearchResult, ServerMessage, SiteHit,
};
use meldkamer::operator::queries::{
    AlarmDetail, AlarmSummary, CallRow, EventRow, LogRow, PastAlarm, ScheduleView, SourceFrame, StepRow,
};
use meldkamer::view::{ContactView, CustomerCard};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const T0: i64 = 1_768_478_400_000; // 2026-01-15 12:00:00 UTC, 13:00:00 in Amsterdam
const NOW: i64 = T0 + 95_000; // 13:01:35 local

fn amsterdam() -> LocalTime {
    LocalTime::named("Europe/Amsterdam").expect("zone")
}

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
            "holdup" => "Hold-up, zone 7: counter".into(),
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
        opened_ms: T0 + opened_s * 1000,
        last_event_ms: T0 + opened_s * 1000,
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

fn step(number: u32, instruction: &str, mandatory: bool, done: bool) -> StepRow {
    StepRow {
        number,
        instruction: instruction.into(),
        mandatory,
        done_by: done.then(|| "olga".into()),
    }
}

fn log(at_s: i64, actor: &str, action: &str, detail: &str) -> LogRow {
    LogRow {
        at: String::new(),
        at_ms: T0 + at_s * 1000,
        actor: actor.into(),
        action: action.into(),
        detail: detail.into(),
    }
}

fn detail(keypad: bool, phone: bool) -> AlarmDetail {
    let mut a = alarm(0, "burglary", 3, 0);
    if keypad {
        a.keypad_factor = Some("5".into());
        a.keypad_factor_ms = Some(T0 + 45_000);
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
            customer_notes: "Flat above the shop.".into(),
            site_ref: "DEMO-S1".into(),
            site_name: "Shop".into(),
            address: "Demostraat 1, 1000 AA Demostad".into(),
            responder_notes: "Key safe left of the back door.".into(),
            armed: if keypad {
                "disarmed by user 5 at 2026-01-15T12:00:45.000Z".into()
            } else {
                "armed".into()
            },
            armed_ms: keypad.then_some(T0 + 45_000),
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
                phones: vec!["+31 20 555 0100".into(), "+31 6 5555 0100".into()],
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
            step(1, "Check the zone and the armed state", false, true),
            step(2, "Call the contacts in call order", true, false),
            step(3, "No valid cancellation: dispatch a guard", false, false),
        ],
        events: vec![EventRow {
            received: "2026-01-15T12:00:00.000Z".into(),
            received_ms: T0,
            account: "1234".into(),
            code: "SIA BA".into(),
            qualifier: "new".into(),
            description: "Burglary alarm, zone 03, area 1".into(),
            zone: Some("03".into()),
            user: None,
            area: Some("1".into()),
            on_test: false,
        }],
        log: vec![log(
            0,
            "system",
            "opened",
            "Burglary alarm, zone 3: Back door, ground floor",
        )],
        log_earlier: 0,
        phone_locked: false,
        calls: vec![],
        history: vec![],
        source: None,
        mass_loss: None,
        schedule: None,
    }
}

/// An alarm with a full record: events, every kind of log entry, calls and the site's history.
fn recorded() -> AlarmDetail {
    let mut d = detail(true, false);
    d.alarm.owner = Some("olga".into());
    d.alarm.state = "in_progress".into();
    d.events.push(EventRow {
        received: String::new(),
        received_ms: T0 + 20_000,
        account: "1234".into(),
        code: "SIA BA".into(),
        qualifier: "new".into(),
        description: "Burglary alarm, zone 05, area 1".into(),
        zone: Some("05".into()),
        user: None,
        area: Some("1".into()),
        on_test: false,
    });
    d.log = vec![
        log(0, "system", "opened", "Burglary alarm, zone 3: Back door, ground floor"),
        log(30, "olga", "acknowledged", ""),
        log(35, "olga", "in_progress", "taken by olga (start)"),
        log(40, "olga", "step_done", "step 1: Check the zone and the armed state"),
        log(50, "olga", "call", "called P. Demo on +31 20 555 0100: no answer"),
        log(60, "olga", "note", "neighbour says the back door is open"),
        log(
            70,
            "sam",
            "in_progress",
            "taken over from olga: olga is on another call",
        ),
        log(
            80,
            "sam",
            "recall_set",
            "put aside for 10 min by sam: keyholder calls back",
        ),
        log(90, "system", "recalled", "back in the queue: keyholder calls back"),
    ];
    d.calls = vec![CallRow {
        contact: "a".repeat(32),
        phone: Some("+31 20 555 0100".into()),
        outcome: CallOutcome::NoAnswer,
        at_ms: T0 + 50_000,
        operator: "olga".into(),
    }];
    d.history = vec![
        PastAlarm {
            id: "c".repeat(32),
            title: "Burglary alarm, zone 1: Front door".into(),
            opened_ms: T0 - 5 * 86_400_000,
            closed_ms: Some(T0 - 5 * 86_400_000 + 600_000),
            disposition: Some("false_alarm".into()),
            closed_by: Some("otto".into()),
        },
        PastAlarm {
            id: "d".repeat(32),
            title: "Fire alarm, zone 4: Smoke detector".into(),
            opened_ms: T0 - 9 * 86_400_000,
            closed_ms: Some(T0 - 9 * 86_400_000 + 900_000),
            disposition: Some("dispatched".into()),
            closed_by: Some("sam".into()),
        },
    ];
    d
}

fn logged_in_as(name: &str, role: Role) -> App {
    let mut app = App::with_options(Options {
        time: amsterdam(),
        auto_present: false,
    });
    app.link = Link::Up;
    app.operator = Some((name.into(), role));
    app.token = Some("t".into());
    app.screen = Screen::Queue;
    app.login_name = name.into();
    let mut mine = alarm(3, "burglary", 3, 0);
    mine.owner = Some("olga".into());
    mine.state = "in_progress".into();
    let mut otto = alarm(2, "fire", 2, 30);
    otto.owner = Some("otto".into());
    let mut aside = alarm(5, "technical", 6, -600);
    aside.recall_ms = Some(T0 + 900_000);
    aside.title = "Mains failure".into();
    app.set_queue(vec![
        aside,
        alarm(4, "communication", 5, 10),
        mine,
        otto,
        alarm(1, "duress", 1, 80),
    ]);
    app
}

fn logged_in() -> App {
    logged_in_as("olga", Role::Operator)
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

fn answer(request: &Envelope, result: serde_json::Value) -> ServerMessage {
    ServerMessage::Response(Response {
        id: request.id,
        ok: true,
        result: Some(result),
        error: None,
    })
}

fn refuse(request: &Envelope, kind: ErrorKind, message: &str) -> ServerMessage {
    ServerMessage::Response(Response {
        id: request.id,
        ok: false,
        result: None,
        error: Some(ApiError::new(kind, message)),
    })
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("json")
}

/// Open `d` on `app` as the server would answer.
fn open(app: &mut App, d: &AlarmDetail) {
    app.alarm = None;
    app.screen = Screen::Queue;
    let ask = app.on_key(Key::Esc);
    assert!(ask.is_empty());
    let id = d.alarm.id.clone();
    let mut q = app.queue().to_vec();
    if !q.iter().any(|a| a.id == id) {
        q.push(d.alarm.clone());
        app.set_queue(q);
    }
    let row = app
        .rows()
        .iter()
        .position(|r| matches!(r, QueueRow::Alarm(i) if app.queue()[*i].id == id))
        .expect("in the queue");
    app.selected = row;
    let sent = app.on_key(Key::Enter);
    assert_eq!(sent.len(), 1);
    app.on_message(answer(&sent[0], json(d)));
    assert_eq!(app.screen, Screen::Alarm);
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        assert!(app.on_key(Key::Char(c)).is_empty(), "typing {c:?} sends nothing");
    }
}

fn one(sent: Vec<Envelope>) -> Request {
    assert_eq!(sent.len(), 1, "{sent:?}");
    sent.into_iter().next().expect("one").request
}

fn categories(s: &str) -> Vec<&'static str> {
    let mut found: Vec<(usize, &'static str)> = Vec::new();
    for l in ["DURESS ", "FIRE ", "BURGLARY ", "COMM LOST", "TECHNICAL"] {
        let mut from = 0;
        while let Some(i) = s[from..].find(l) {
            found.push((from + i, l));
            from += i + l.len();
        }
    }
    found.sort();
    found.into_iter().map(|(_, l)| l.trim_end()).collect()
}

// ---- 1. Life-safety first and loud ------------------------------------------------------------

#[test]
fn queue_sorted_with_owner_and_a_put_aside_section() {
    let app = logged_in();
    for (w, h) in [(80, 24), (200, 60)] {
        let s = render(&app, w, h);
        snapshot(&format!("queue_{w}x{h}"), &s);
        // The server's order: duress first (behind no lesser alarm), the put-aside alarm last.
        let queue_part = &s[s.find("Alarm queue").expect("queue")..];
        assert_eq!(
            categories(&queue_part[queue_part.find('\n').expect("line")..]),
            ["DURESS", "FIRE", "BURGLARY", "COMM LOST", "TECHNICAL"],
            "{s}"
        );
        assert!(s.contains("Put aside (1)") && s.contains("back 13:15:00"), "{s}");
        assert!(s.contains("otto") && s.contains("olga"), "owners named: {s}");
        assert!(s.contains("15s"), "age counts from opening: {s}");
        if w == 200 {
            assert!(s.contains("13:01:35 CET"), "local time in the header: {s}");
        }
    }
}

#[test]
fn the_queue_is_in_the_servers_order_whatever_the_priority() {
    let mut app = logged_in();
    let mut escalated = alarm(7, "burglary", 1, -3600);
    escalated.escalated = true;
    let panic = alarm(8, "panic", 9, 60);
    app.set_queue(vec![escalated.clone(), panic.clone()]);
    assert_eq!(
        app.queue()[0].id,
        panic.id,
        "a panic at priority 9 before an escalated burglary"
    );
    let want: Vec<_> = {
        let mut q = vec![escalated, panic];
        q.sort_by(|a, b| a.queue_key().cmp(&b.queue_key()));
        q.into_iter().map(|a| a.id).collect()
    };
    assert_eq!(app.queue().iter().map(|a| a.id.clone()).collect::<Vec<_>>(), want);
}

#[test]
fn a_new_life_safety_alarm_is_announced_selected_and_rung_until_acknowledged() {
    let mut app = logged_in();
    // The duress of the fixture is new: it was announced when the queue came.
    let mut burglaries: Vec<AlarmSummary> = (10..40).map(|i| alarm(i, "burglary", 1, -100)).collect();
    for b in &mut burglaries {
        b.escalated = true;
        b.state = "acknowledged".into();
    }
    app.set_queue(burglaries);
    assert!(app.alerts().next().is_none());
    assert!(!app.bell_due(NOW));
    app.selected = 20;
    let mut duress = alarm(99, "duress", 9, 90);
    duress.state = "new".into();
    app.on_message(ServerMessage::Push(Push::Queue {
        changed: vec![duress.clone()],
    }));
    assert_eq!(
        app.selected_alarm().map(|a| a.id.clone()),
        Some(duress.id.clone()),
        "the selection jumps to it"
    );
    assert_eq!(app.rows()[0], QueueRow::Alarm(0));
    assert_eq!(app.queue()[0].id, duress.id, "first, behind no escalated burglary");
    // The bell: at once, not again within two seconds, again after.
    assert!(app.bell_due(NOW));
    assert!(!app.bell_due(NOW + 500));
    assert!(!app.bell_due(NOW + 1_900));
    assert!(app.bell_due(NOW + 2_000));
    // The banner is on every screen.
    for screen in [Screen::Queue, Screen::Supervision, Screen::Search] {
        app.screen = screen;
        let s = render(&app, 80, 24);
        assert!(
            s.lines().nth(1).is_some_and(|l| l.contains("DURESS NOT ACKNOWLEDGED")
                && l.contains("Shop, Demostraat 1")
                && l.contains("5s ago")),
            "{screen:?}:\n{s}"
        );
    }
    app.screen = Screen::Queue;
    let d = detail(false, false);
    open(&mut app, &d);
    assert!(
        render(&app, 80, 24).contains("DURESS NOT ACKNOWLEDGED"),
        "on the alarm screen too"
    );
    // Elsewhere, a new one does not move the operator's selection or screen.
    let mut fire = alarm(98, "fire", 2, 91);
    fire.state = "new".into();
    app.on_message(ServerMessage::Push(Push::Queue { changed: vec![fire] }));
    assert_eq!(app.screen, Screen::Alarm);
    assert!(render(&app, 80, 24).contains("(+1 more life-safety)"));
    // Someone acknowledges both: no banner, no bell.
    let mut acked = duress.clone();
    acked.state = "acknowledged".into();
    let mut fire = alarm(98, "fire", 2, 91);
    fire.state = "in_progress".into();
    app.on_message(ServerMessage::Push(Push::Queue {
        changed: vec![acked, fire],
    }));
    assert!(app.alerts().next().is_none());
    assert!(!app.bell_due(NOW + 10_000));
    assert!(!render(&app, 80, 24).contains("NOT ACKNOWLEDGED"));
}

#[test]
fn auto_present_opens_and_takes_the_top_alarm_nobody_handles() {
    let mut app = App::with_options(Options {
        time: LocalTime::utc(),
        auto_present: true,
    });
    for c in "olga".chars() {
        app.on_key(Key::Char(c));
    }
    app.on_key(Key::Enter);
    for c in "pw".chars() {
        app.on_key(Key::Char(c));
    }
    let login = app.on_key(Key::Enter);
    let login_result = LoginResult {
        token: "t".into(),
        name: "olga".into(),
        role: Role::Operator,
        expires: String::new(),
        handover: vec![],
    };
    let sent = app.on_message(answer(&login[0], json(&login_result)));
    let queue = sent.iter().find(|e| e.request.op() == Op::Queue).expect("queue asked");
    let mut otto = alarm(1, "duress", 1, 0);
    otto.owner = Some("otto".into());
    let first = alarm(2, "fire", 2, 10);
    let second = alarm(3, "burglary", 3, 20);
    let sent = app.on_message(answer(
        queue,
        json(&QueueResult {
            alarms: vec![second.clone(), otto, first.clone()],
        }),
    ));
    let ops: Vec<_> = sent
        .iter()
        .map(|e| (e.request.op(), e.request.alarm().map(str::to_string)))
        .collect();
    assert_eq!(
        ops,
        [(Op::Start, Some(first.id.clone())), (Op::Alarm, Some(first.id.clone()))],
        "the fire (otto handles the duress) is opened and taken"
    );
    let mut d = detail(false, false);
    d.alarm = first.clone();
    d.alarm.owner = Some("olga".into());
    app.on_message(answer(&sent[0], serde_json::json!({"done": "start"})));
    app.on_message(answer(&sent[1], json(&d)));
    assert_eq!(app.screen, Screen::Alarm);
    // Back on the queue (the push has not come yet): the next one, never the same twice.
    let sent = app.on_key(Key::Esc);
    let ops: Vec<_> = sent
        .iter()
        .map(|e| (e.request.op(), e.request.alarm().map(str::to_string)))
        .collect();
    assert_eq!(
        ops,
        [(Op::Start, Some(second.id.clone())), (Op::Alarm, Some(second.id))]
    );
    // Off with p: nothing is presented.
    app.screen = Screen::Queue;
    app.alarm = None;
    app.pending.clear();
    app.on_key(Key::Char('p'));
    assert!(!app.auto_present);
    app.on_key(Key::Char('p'));
    assert!(app.auto_present, "p toggles");
    app.on_key(Key::Char('p'));
    let mut third = alarm(4, "burglary", 3, 30);
    third.state = "new".into();
    let sent = app.on_message(ServerMessage::Push(Push::Queue { changed: vec![third] }));
    assert!(sent.is_empty(), "{sent:?}");
}

// ---- 2. Ownership -------------------------------------------------------------------------

#[test]
fn the_owner_is_named_and_taking_releasing_and_takeover_are_requests() {
    let mut app = logged_in();
    let mut d = detail(false, false);
    d.alarm.owner = Some("otto".into());
    open(&mut app, &d);
    let s = render(&app, 80, 24);
    assert!(s.contains("handled by otto"), "{s}");
    assert!(matches!(one(app.on_key(Key::Char('s'))), Request::Start { .. }));
    assert!(matches!(one(app.on_key(Key::Char('u'))), Request::Release { .. }));
    // An operator cannot take over: said at once, nothing sent.
    assert!(app.on_key(Key::Char('t')).is_empty());
    assert!(app.dialog.is_none());
    assert!(app.status.as_ref().is_some_and(|(m, e)| *e && m.contains("supervisor")));
    // The server's refusal is shown with its message.
    let sent = app.on_key(Key::Char('n'));
    assert!(sent.is_empty());
    typed(&mut app, "on my way");
    let note = app.on_key(Key::Enter);
    app.on_message(refuse(&note[0], ErrorKind::Conflict, "otto is handling this alarm"));
    let s = render(&app, 80, 24);
    assert!(s.contains("note refused: otto is handling this alarm"), "{s}");

    // A supervisor takes over with a reason (a text dialog).
    let mut sam = logged_in_as("sam", Role::Supervisor);
    open(&mut sam, &d);
    assert!(sam.on_key(Key::Char('t')).is_empty());
    assert!(matches!(sam.dialog, Some(Dialog::Takeover { .. })));
    assert!(sam.on_key(Key::Enter).is_empty(), "not without a reason");
    typed(&mut sam, "otto is on another call");
    match one(sam.on_key(Key::Enter)) {
        Request::Takeover { alarm, reason } => {
            assert_eq!(alarm, d.alarm.id);
            assert_eq!(reason, "otto is on another call");
        }
        r => panic!("{r:?}"),
    }
    // Mine, on the queue and on the alarm.
    let mut mine = d.clone();
    mine.alarm.owner = Some("sam".into());
    sam.alarm = Some(mine);
    assert!(render(&sam, 80, 24).contains("handled by you (sam)"));
}

#[test]
fn s_on_the_queue_takes_and_opens_the_selected_alarm() {
    let mut app = logged_in();
    app.on_key(Key::Home);
    let id = app.selected_alarm().map(|a| a.id.clone()).expect("selected");
    let sent = app.on_key(Key::Char('s'));
    let ops: Vec<_> = sent
        .iter()
        .map(|e| (e.request.op(), e.request.alarm().map(str::to_string)))
        .collect();
    assert_eq!(ops, [(Op::Start, Some(id.clone())), (Op::Alarm, Some(id))]);
}

// ---- 3. Closing deliberately ---------------------------------------------------------------

#[test]
fn closing_asks_the_note_the_reason_and_a_confirmation_and_escape_goes_back_a_step() {
    let mut app = logged_in();
    let d = detail(false, false); // step 2 is mandatory and open
    open(&mut app, &d);
    app.on_key(Key::Char('c'));
    let pick = |app: &mut App, name: &str| {
        app.on_key(Key::Home);
        loop {
            let Some(Dialog::Close(f)) = &app.dialog else {
                panic!("close dialog")
            };
            if f.chosen().is_some_and(|(_, l)| l == name) {
                break;
            }
            app.on_key(Key::Down);
        }
    };
    pick(&mut app, "False alarm");
    app.on_key(Key::Enter);
    let stage = |app: &App| match &app.dialog {
        Some(Dialog::Close(f)) => Some(f.stage),
        _ => None,
    };
    assert_eq!(stage(&app), Some(CloseStage::Note));
    assert!(app.on_key(Key::Enter).is_empty(), "a note is needed");
    assert_eq!(stage(&app), Some(CloseStage::Note));
    typed(&mut app, "cleaner pressed it");
    app.on_key(Key::Enter);
    assert_eq!(stage(&app), Some(CloseStage::Reason));
    let s = render(&app, 80, 24);
    assert!(s.contains("Mandatory step(s) 2 not done. Why?"), "{s}");
    typed(&mut app, "owner on site");
    app.on_key(Key::Enter);
    assert_eq!(stage(&app), Some(CloseStage::Confirm));
    assert!(render(&app, 80, 24).contains("Close as False alarm? y/n"));
    // Escape walks back, never out of the console.
    app.on_key(Key::Esc);
    assert_eq!(stage(&app), Some(CloseStage::Reason));
    app.on_key(Key::Esc);
    assert_eq!(stage(&app), Some(CloseStage::Note));
    app.on_key(Key::Enter);
    app.on_key(Key::Enter);
    assert!(app.on_key(Key::Char('n')).is_empty());
    assert_eq!(stage(&app), Some(CloseStage::Reason));
    app.on_key(Key::Enter);
    match one(app.on_key(Key::Char('y'))) {
        Request::Close {
            disposition,
            note,
            skipped_reason,
            ..
        } => {
            assert_eq!(disposition, Disposition::FalseAlarm);
            assert_eq!(note.as_deref(), Some("cleaner pressed it"));
            assert_eq!(skipped_reason.as_deref(), Some("owner on site"));
        }
        r => panic!("{r:?}"),
    }
    assert!(app.dialog.is_none());

    // Dispatched with every mandatory step done: straight to the confirmation, no note.
    let mut done = detail(false, false);
    done.procedure[1].done_by = Some("olga".into());
    open(&mut app, &done);
    app.on_key(Key::Char('c'));
    pick(&mut app, "Dispatched");
    app.on_key(Key::Enter);
    assert_eq!(stage(&app), Some(CloseStage::Confirm));
    match one(app.on_key(Key::Char('y'))) {
        Request::Close {
            note, skipped_reason, ..
        } => assert_eq!((note, skipped_reason), (None, None)),
        r => panic!("{r:?}"),
    }
    // Escape out of the first stage closes the dialog, and nothing else.
    app.on_key(Key::Char('c'));
    app.on_key(Key::Esc);
    assert!(app.dialog.is_none());
    assert_eq!(app.screen, Screen::Alarm);
    assert!(!app.quit && !app.confirm_quit);
}

#[test]
fn cancel_is_offered_only_with_both_factors() {
    let mut app = logged_in();
    open(&mut app, &detail(true, false));
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

// ---- 4. Escape only goes back -------------------------------------------------------------

#[test]
fn escape_never_quits_and_quitting_asks() {
    let mut app = logged_in();
    for _ in 0..5 {
        app.on_key(Key::Esc);
    }
    assert!(!app.quit && !app.confirm_quit, "Escape on the queue does nothing");
    app.on_key(Key::Char('q'));
    assert!(app.confirm_quit && !app.quit);
    assert!(render(&app, 80, 24).contains("Quit? y/n"));
    app.on_key(Key::Esc);
    assert!(!app.confirm_quit && !app.quit, "Escape says no");
    app.on_key(Key::Char('q'));
    app.on_key(Key::Char('n'));
    assert!(!app.confirm_quit && !app.quit);
    // Ctrl-C from the middle of a dialog asks too; "no" goes back to the dialog.
    open(&mut app, &detail(false, false));
    app.on_key(Key::Char('n'));
    typed(&mut app, "half a note");
    app.on_key(Key::CtrlC);
    assert!(app.confirm_quit);
    app.on_key(Key::Char('n'));
    assert!(matches!(&app.dialog, Some(Dialog::Note { text }) if text == "half a note"));
    // The end of a dialog chain and the alarm screen: Escape goes back, one step each.
    app.on_key(Key::Esc);
    assert!(app.dialog.is_none());
    assert_eq!(app.screen, Screen::Alarm);
    app.on_key(Key::Esc);
    assert_eq!(app.screen, Screen::Queue);
    app.on_key(Key::Esc);
    assert!(!app.quit);
    // The login screen: Escape is not quit either.
    let mut login = App::new();
    login.on_key(Key::Esc);
    assert!(!login.quit && !login.confirm_quit);
    login.on_key(Key::CtrlC);
    login.on_key(Key::Char('y'));
    assert!(login.quit, "y quits");
}

// ---- 5. After a session ends ---------------------------------------------------------------

#[test]
fn after_a_session_ends_the_login_form_keeps_the_name_and_waits_for_the_password() {
    let mut app = logged_in();
    open(&mut app, &detail(false, false));
    app.on_key(Key::Char('v'));
    typed(&mut app, "4829");
    app.on_message(ServerMessage::Push(Push::SessionEnded {
        reason: "logged out elsewhere".into(),
    }));
    assert_eq!(app.screen, Screen::Login);
    assert_eq!(app.login_name, "olga");
    assert_eq!(app.login_focus, 1, "the password field has the focus");
    assert!(app.dialog.is_none(), "the half-typed code is gone");
    let s = render(&app, 80, 24);
    assert!(
        s.contains("session ended (logged out elsewhere): enter your password"),
        "{s}"
    );
    // What is typed now goes into the password field.
    typed(&mut app, "secret-pass");
    assert_eq!(app.login_name, "olga");
    assert_eq!(app.login_password.len(), 11);
    assert!(!render(&app, 80, 24).contains("secret-pass"));
    assert!(!format!("{app:?}").contains("secret-pass"), "never in Debug either");

    // An Unauthorized answer does the same.
    let mut app = logged_in();
    let sent = app.on_key(Key::Char('R'));
    app.on_message(refuse(&sent[0], ErrorKind::Unauthorized, "session expired"));
    assert_eq!((app.screen, app.login_focus), (Screen::Login, 1));
    assert!(render(&app, 80, 24).contains("session ended (session expired): enter your password"));

    // Typing in the name field never sends anything, Enter included.
    let mut fresh = App::new();
    typed(&mut fresh, "olga");
    assert!(fresh.on_key(Key::Enter).is_empty());
    assert_eq!(fresh.login_focus, 1);
}

#[test]
fn login_screen_masks_the_password_and_a_lost_link_shows() {
    let mut app = App::new();
    typed(&mut app, "olga");
    app.on_key(Key::Tab);
    typed(&mut app, "secret-pass");
    app.on_disconnected(3, "connection refused".into());
    let s = render(&app, 80, 24);
    snapshot("login_80x24", &s);
    assert!(!s.contains("secret-pass") && s.contains("•••••••••••"));
    assert!(s.contains("CONNECTION LOST (retry 3)"));
    let sent = app.on_key(Key::Enter);
    assert_eq!(sent[0].request.op(), Op::Login);
    assert!(app.login_password.is_empty(), "the password is dropped once sent");
    assert!(!format!("{:?}", sent[0]).contains("secret-pass"));
}

// ---- 6. The alarm's record -----------------------------------------------------------------

#[test]
fn alarm_view_shows_everything_an_operator_needs() {
    let mut app = logged_in();
    open(&mut app, &detail(true, false));
    for (w, h) in [(80, 24), (120, 40)] {
        let s = render(&app, w, h);
        snapshot(&format!("alarm_{w}x{h}"), &s);
        for want in [
            "Bakkerij Demo",
            "Demostraat 1",
            "Flat above the shop",
            "Key safe",
            "Zone 3: Back door",
            "Panel disarm ✓",
            "at 13:00:45",
            "Armed: disarmed by user 5 at 13:00:45",
            "Phone code   ✗",
            "[x]",
            "P. Demo",
            "nobody handles it",
        ] {
            assert!(s.contains(want), "{want} at {w}x{h}:\n{s}");
        }
    }
}

#[test]
fn the_timeline_shows_every_action_with_who_and_when() {
    let mut app = logged_in();
    open(&mut app, &recorded());
    for (w, h) in [(80, 24), (200, 60)] {
        let mut app = app.clone();
        app.pane = Pane::Timeline;
        let s = render(&app, w, h);
        snapshot(&format!("timeline_{w}x{h}"), &s);
        for want in [
            "13:01:00 olga",
            "note",
            "13:01:10 sam",
            "recall set",
            "13:01:30 system",
            "recalled",
        ] {
            assert!(s.contains(want), "{want} at {w}x{h}:\n{s}");
        }
        if w == 200 {
            for want in [
                "13:00:50 olga",
                "called P. Demo on +31 20 555 0100: no answer",
                "13:00:20 panel",
                "acknowledged",
                "step done",
                "neighbour says the back door is open",
                "taken over from olga",
                "Earlier alarms at this site (2)",
                "false alarm by otto at 2026-01-10 13:10:00",
                "no answer 13:00:50",
            ] {
                assert!(s.contains(want), "{want} at {w}x{h}:\n{s}");
            }
        }
    }
    // At 80 columns the history has its own pane (Tab), and the timeline scrolls to the oldest.
    app.pane = Pane::Timeline;
    app.on_key(Key::Home);
    let s = render(&app, 80, 24);
    assert!(s.contains("13:00:00 panel") && s.contains("opened"), "{s}");
    app.on_key(Key::Tab);
    assert_eq!(app.pane, Pane::History);
    let s = render(&app, 80, 24);
    assert!(
        s.contains("Earlier alarms at this site (2)") && s.contains("dispatched by sam"),
        "{s}"
    );
}

#[test]
fn a_procedure_of_twelve_steps_scrolls_and_step_eleven_is_ticked_with_space() {
    let mut app = logged_in();
    let mut d = detail(false, false);
    d.procedure = (1..=12)
        .map(|n| step(n, &format!("Step number {n}"), n == 12, n == 11))
        .collect();
    open(&mut app, &d);
    assert_eq!(app.pane, Pane::Procedure);
    for _ in 0..10 {
        app.on_key(Key::Down);
    }
    assert_eq!(app.step_cursor, 10);
    for (w, h) in [(80, 24), (200, 60)] {
        let s = render(&app, w, h);
        snapshot(&format!("procedure_{w}x{h}"), &s);
        assert!(s.contains("11 [x] Step number 11"), "{w}x{h}:\n{s}");
        assert!(s.contains("10 [ ] Step number 10"), "{w}x{h}:\n{s}");
        if w == 200 {
            assert!(s.contains("12*[ ] Step number 12"), "{w}x{h}:\n{s}");
        }
    }
    // Space on step 11 unticks it (it is done); 1-9 still tick by number.
    match one(app.on_key(Key::Char(' '))) {
        Request::Step { step, done, .. } => assert_eq!((step, done), (11, false)),
        r => panic!("{r:?}"),
    }
    app.on_key(Key::Down);
    match one(app.on_key(Key::Enter)) {
        Request::Step { step, done, .. } => assert_eq!((step, done), (12, true)),
        r => panic!("{r:?}"),
    }
    match one(app.on_key(Key::Char('3'))) {
        Request::Step { step, done, .. } => assert_eq!((step, done), (3, true)),
        r => panic!("{r:?}"),
    }
    app.on_key(Key::Home);
    assert_eq!(app.step_cursor, 0);
    app.on_key(Key::End);
    assert_eq!(app.step_cursor, 11);
}

#[test]
fn a_supervisor_item_shows_the_frame_behind_it() {
    let mut sam = logged_in_as("sam", Role::Supervisor);
    let mut d = detail(false, false);
    d.customer = None;
    d.contacts.clear();
    d.procedure.clear();
    d.zone = None;
    d.alarm.category = String::new();
    d.alarm.queue = "supervisor".into();
    d.source = Some(SourceFrame {
        received_ms: T0 + 5_000,
        transport: "tcp".into(),
        peer: "127.0.0.1:40112".into(),
        raw: "\\nC1A70033\"SIA-DCS\"0007R1L1#9999[#9999|Nri1/BA02]_12:00:05,01-15-2026\\r".into(),
        verdict: "unknown_account, answered DUH".into(),
        decoded: Some("SIA-DCS seq 7 account 9999: #9999|Nri1/BA02".into()),
        imported: Some("imported since: site S-1001 (C-1001, Bakkerij)".into()),
    });
    open(&mut sam, &d);
    let s = render(&sam, 120, 40);
    for want in [
        "Frame received 13:00:05 over tcp from 127.0.0.1:40112",
        "Raw:",
        "\\nC1A70033\"SIA-DCS\"0007",
        "Decoded: SIA-DCS seq 7 account 9999",
        "Receiver: unknown_account, answered DUH",
        "Imported since: site S-1001",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
}

// ---- 7. The call list as work ---------------------------------------------------------------

#[test]
fn the_call_list_suggests_the_next_contact_and_a_call_is_logged() {
    let mut app = logged_in();
    let mut d = recorded();
    // P. Demo did not answer: still the one to call; after an answer, R. Demo is next.
    open(&mut app, &d);
    let s = render(&app, 120, 40);
    assert!(s.contains("Call list: next P. Demo"), "{s}");
    assert!(s.contains("no answer 13:00:50"), "{s}");
    d.calls.push(CallRow {
        contact: "a".repeat(32),
        phone: None,
        outcome: CallOutcome::Answered,
        at_ms: T0 + 85_000,
        operator: "olga".into(),
    });
    open(&mut app, &d);
    assert!(render(&app, 120, 40).contains("Call list: next R. Demo"));
    app.on_key(Key::Char('l'));
    let Some(Dialog::Call(f)) = &app.dialog else {
        panic!("call dialog")
    };
    assert_eq!((f.stage, f.contact), (CallStage::Contact, 1), "the suggested contact");
    // One number: straight to the outcome.
    app.on_key(Key::Enter);
    assert!(matches!(&app.dialog, Some(Dialog::Call(f)) if f.stage == CallStage::Outcome));
    assert!(render(&app, 80, 24).contains("wrong number"));
    app.on_key(Key::Down);
    match one(app.on_key(Key::Enter)) {
        Request::Call {
            contact,
            phone,
            outcome,
            ..
        } => {
            assert_eq!(contact, "b".repeat(32));
            assert_eq!(phone, None);
            assert_eq!(outcome, CallOutcome::NoAnswer);
        }
        r => panic!("{r:?}"),
    }
    // Several numbers: choose one; Escape goes back a stage at a time.
    app.on_key(Key::Char('l'));
    app.on_key(Key::Up);
    app.on_key(Key::Enter);
    assert!(matches!(&app.dialog, Some(Dialog::Call(f)) if f.stage == CallStage::Phone));
    app.on_key(Key::Down);
    app.on_key(Key::Enter);
    app.on_key(Key::Esc);
    assert!(matches!(&app.dialog, Some(Dialog::Call(f)) if f.stage == CallStage::Phone));
    app.on_key(Key::Enter);
    app.on_key(Key::End);
    match one(app.on_key(Key::Enter)) {
        Request::Call {
            contact,
            phone,
            outcome,
            ..
        } => {
            assert_eq!(contact, "a".repeat(32));
            assert_eq!(phone.as_deref(), Some("+31 6 5555 0100"));
            assert_eq!(outcome, CallOutcome::WrongNumber);
        }
        r => panic!("{r:?}"),
    }
    // From the call list pane: Enter calls the selected contact.
    app.pane = Pane::Contacts;
    app.on_key(Key::Down);
    app.on_key(Key::Enter);
    assert!(matches!(&app.dialog, Some(Dialog::Call(f)) if f.contact == 1));
}

// ---- 8. Deferral and handover --------------------------------------------------------------

#[test]
fn put_aside_for_n_minutes_with_a_note_and_back_to_the_queue() {
    let mut app = logged_in();
    open(&mut app, &detail(false, false));
    app.on_key(Key::Char('r'));
    app.on_key(Key::Backspace);
    app.on_key(Key::Backspace);
    app.on_key(Key::Char('x'));
    typed(&mut app, "10");
    assert!(render(&app, 80, 24).contains("It comes back by itself at 13:11:35."));
    app.on_key(Key::Tab);
    typed(&mut app, "keyholder calls back");
    let sent = app.on_key(Key::Enter);
    assert_eq!(sent.len(), 1);
    match &sent[0].request {
        Request::Recall { minutes, note, .. } => {
            assert_eq!(*minutes, 10);
            assert_eq!(note.as_deref(), Some("keyholder calls back"));
        }
        r => panic!("{r:?}"),
    }
    app.on_message(answer(&sent[0], serde_json::json!({"done": "recall"})));
    assert_eq!(app.screen, Screen::Queue);
    assert!(app.alarm.is_none());
    // Zero minutes is refused in the dialog.
    open(&mut app, &detail(false, false));
    app.on_key(Key::Char('r'));
    app.on_key(Key::Backspace);
    app.on_key(Key::Backspace);
    app.on_key(Key::Char('0'));
    assert!(app.on_key(Key::Enter).is_empty());
    assert!(app.dialog.is_some());
    // A life-safety alarm is never put aside.
    let mut fire = detail(false, false);
    fire.alarm.category = "fire".into();
    app.dialog = None;
    open(&mut app, &fire);
    assert!(app.on_key(Key::Char('r')).is_empty());
    assert!(app.dialog.is_none());
    assert!(app.status.as_ref().is_some_and(|(m, _)| m.contains("never put aside")));
}

#[test]
fn handover_notes_are_written_from_the_queue_and_shown_at_login_until_enter() {
    let mut app = logged_in();
    app.on_key(Key::Char('H'));
    typed(&mut app, "S-1001: keyholder on holiday");
    match one(app.on_key(Key::Enter)) {
        Request::HandoverAdd { text } => assert_eq!(text, "S-1001: keyholder on holiday"),
        r => panic!("{r:?}"),
    }
    let mut app = App::with_options(Options {
        time: amsterdam(),
        auto_present: true,
    });
    typed(&mut app, "otto");
    app.on_key(Key::Enter);
    typed(&mut app, "pw");
    let login = app.on_key(Key::Enter);
    let r = LoginResult {
        token: "t".into(),
        name: "otto".into(),
        role: Role::Operator,
        expires: String::new(),
        handover: vec![HandoverNote {
            at_ms: T0 - 3_600_000,
            author: "olga".into(),
            text: "S-1001: keyholder on holiday".into(),
        }],
    };
    let sent = app.on_message(answer(&login[0], json(&r)));
    let queue = sent.iter().find(|e| e.request.op() == Op::Queue).expect("queue");
    // Auto-present waits until the notes are read.
    assert!(
        app.on_message(answer(
            queue,
            json(&QueueResult {
                alarms: vec![alarm(1, "burglary", 3, 0)]
            })
        ))
        .is_empty()
    );
    let s = render(&app, 80, 24);
    assert!(s.contains("12:00:00  olga: S-1001: keyholder on holiday"), "{s}");
    assert!(app.on_key(Key::Char('q')).is_empty());
    assert!(!app.confirm_quit, "keys wait for Enter");
    let sent = app.on_key(Key::Enter);
    assert!(app.handover.is_empty());
    assert_eq!(sent.len(), 2, "then the next alarm is presented: {sent:?}");
}

// ---- 9. Mass events ------------------------------------------------------------------------

fn mass_event() -> Vec<AlarmSummary> {
    let mut v: Vec<AlarmSummary> = (0..5)
        .map(|i| {
            let mut a = alarm(20 + i, "technical", 6, i as i64);
            a.site_ref = "S-2001".into();
            a.site = "Kantoor, Proeflaan 20".into();
            a
        })
        .collect();
    v.push(alarm(30, "burglary", 3, 0));
    v
}

#[test]
fn g_groups_by_site_and_a_supervisor_acknowledges_or_closes_a_group() {
    let mut sam = logged_in_as("sam", Role::Supervisor);
    sam.set_queue(mass_event());
    sam.on_key(Key::Char('G'));
    assert!(sam.grouped);
    let s = render(&sam, 80, 24);
    assert!(s.contains("▾ DEMO-S1 Shop, Demostraat 1: 1 alarm(s)"), "{s}");
    assert!(s.contains("▾ S-2001 Kantoor, Proeflaan 20: 5 alarm(s), 2 new"), "{s}");
    let header = sam
        .rows()
        .iter()
        .position(|r| matches!(r, QueueRow::Site { key, .. } if key == "S-2001"))
        .expect("header");
    sam.selected = header;
    sam.on_key(Key::Char('a'));
    typed(&mut sam, "power cut in the area");
    sam.on_key(Key::Enter);
    assert!(render(&sam, 80, 24).contains("Acknowledge 5 alarm(s) of S-2001 Kantoor, Proeflaan 20? y/n"));
    match one(sam.on_key(Key::Char('y'))) {
        Request::BulkAcknowledge { alarms, reason } => {
            assert_eq!(alarms.len(), 5);
            assert_eq!(reason, "power cut in the area");
        }
        r => panic!("{r:?}"),
    }
    sam.on_key(Key::Char('c'));
    sam.on_key(Key::Down); // technical fault
    sam.on_key(Key::Enter);
    typed(&mut sam, "power cut in the area");
    sam.on_key(Key::Enter);
    let sent = sam.on_key(Key::Char('y'));
    match &sent[0].request {
        Request::BulkClose {
            alarms, disposition, ..
        } => {
            assert_eq!(alarms.len(), 5);
            assert_eq!(*disposition, Disposition::TechnicalFault);
        }
        r => panic!("{r:?}"),
    }
    let r = BulkResult {
        done: vec!["x".into(); 4],
        skipped: vec![(
            "y".into(),
            "a life-safety alarm is never closed in bulk: handle it on its own".into(),
        )],
    };
    sam.on_message(answer(&sent[0], json(&r)));
    assert!(render(&sam, 120, 30).contains("bulk close: 4 done, 1 skipped (a life-safety alarm is never closed"));
    // An operator cannot.
    let mut olga = logged_in();
    olga.set_queue(mass_event());
    olga.on_key(Key::Char('G'));
    olga.selected = header;
    assert!(olga.on_key(Key::Char('a')).is_empty());
    assert!(olga.dialog.is_none());
    // Ungrouped again, the selection stays on its alarm.
    olga.on_key(Key::Down);
    let id = olga.selected_alarm().map(|a| a.id.clone());
    olga.on_key(Key::Char('G'));
    assert_eq!(olga.selected_alarm().map(|a| a.id.clone()), id);
}

// ---- 11. Help and keys ---------------------------------------------------------------------

/// Every situation the console can be in, with something to act on.
fn situations() -> Vec<(&'static str, App)> {
    let mut v = Vec::new();
    let base = logged_in();
    v.push(("login", App::new()));
    let mut login_pw = App::new();
    typed(&mut login_pw, "olga");
    login_pw.on_key(Key::Tab);
    typed(&mut login_pw, "pw");
    v.push(("login password", login_pw));
    let mut q = base.clone();
    q.on_key(Key::Home);
    v.push(("queue", q.clone()));
    let mut empty = base.clone();
    empty.set_queue(vec![]);
    v.push(("empty queue", empty));
    let mut grouped = logged_in_as("sam", Role::Supervisor);
    grouped.set_queue(mass_event());
    grouped.on_key(Key::Char('G'));
    grouped.on_key(Key::Home);
    v.push(("grouped queue, site header", grouped.clone()));
    let mut handover = base.clone();
    handover.handover = vec![HandoverNote {
        at_ms: T0,
        author: "olga".into(),
        text: "x".into(),
    }];
    v.push(("handover notes", handover));
    let mut help = base.clone();
    help.on_key(Key::Char('?'));
    v.push(("help", help));
    let mut quit = base.clone();
    quit.on_key(Key::Char('q'));
    v.push(("quit?", quit));
    for (who, role) in [("olga", Role::Operator), ("sam", Role::Supervisor)] {
        let mut a = logged_in_as(who, role);
        open(&mut a, &recorded());
        for pane in [Pane::Procedure, Pane::Contacts, Pane::Timeline, Pane::History] {
            let mut p = a.clone();
            p.pane = pane;
            v.push(("alarm", p));
        }
    }
    let mut a = base.clone();
    open(&mut a, &recorded());
    let dialog = |a: &App, keys: &[Key], text: &str| {
        let mut d = a.clone();
        for k in keys {
            d.on_key(*k);
        }
        typed(&mut d, text);
        d
    };
    v.push(("note", dialog(&a, &[Key::Char('n')], "x")));
    v.push(("verify", dialog(&a, &[Key::Char('v')], "1")));
    v.push(("recall", dialog(&a, &[Key::Char('r')], "")));
    v.push(("recall note", dialog(&a, &[Key::Char('r'), Key::Tab], "x")));
    v.push(("call contact", dialog(&a, &[Key::Char('l'), Key::Home], "")));
    v.push(("call phone", dialog(&a, &[Key::Char('l'), Key::Home, Key::Enter], "")));
    v.push((
        "call outcome",
        dialog(&a, &[Key::Char('l'), Key::Home, Key::Enter, Key::Enter], ""),
    ));
    v.push(("close choose", dialog(&a, &[Key::Char('c')], "")));
    let mut false_alarm = a.clone();
    false_alarm.on_key(Key::Char('c'));
    while !matches!(&false_alarm.dialog, Some(Dialog::Close(f)) if f.chosen().is_some_and(|(d, _)| d == Disposition::FalseAlarm))
    {
        false_alarm.on_key(Key::Down);
    }
    false_alarm.on_key(Key::Enter);
    typed(&mut false_alarm, "x");
    v.push(("close note", false_alarm.clone()));
    false_alarm.on_key(Key::Enter);
    typed(&mut false_alarm, "x");
    v.push(("close reason", false_alarm.clone()));
    false_alarm.on_key(Key::Enter);
    v.push(("close confirm", false_alarm));
    v.push(("handover note", dialog(&base, &[Key::Char('H')], "x")));
    let mut sam = logged_in_as("sam", Role::Supervisor);
    open(&mut sam, &recorded());
    v.push(("takeover", dialog(&sam, &[Key::Char('t')], "x")));
    v.push(("bulk ack reason", dialog(&grouped, &[Key::Char('a')], "x")));
    v.push(("bulk ack confirm", dialog(&grouped, &[Key::Char('a')], "x")));
    if let Some((_, last)) = v.last_mut() {
        last.on_key(Key::Enter);
    }
    v.push(("bulk close choose", dialog(&grouped, &[Key::Char('c')], "")));
    let mut sup = base.clone();
    sup.on_key(Key::Char('2'));
    sup.overdue = (0..3)
        .map(|i| meldkamer::operator::queries::OverdueAccount {
            account: format!("{i}"),
            path: "primary".into(),
            site: String::new(),
            interval_secs: 90,
            last_seen: Some("2026-01-15T11:00:00.000Z".into()),
            overdue_secs: 30,
        })
        .collect();
    v.push(("supervision", sup));
    let mut search = base.clone();
    search.on_key(Key::Char('3'));
    typed(&mut search, "proef");
    search.search = Some(SearchResult {
        sites: vec![],
        alarms: vec![alarm(1, "burglary", 3, 0), alarm(2, "fire", 2, 0)],
        events: vec![],
    });
    v.push(("search input", search.clone()));
    search.search_focus = SearchFocus::Results;
    v.push(("search results", search));
    for (who, role) in [("olga", Role::Operator), ("sam", Role::Supervisor)] {
        let mut sched = logged_in_as(who, role);
        sched.on_key(Key::Char('4'));
        sched.schedules = Some(schedule_tab());
        v.push(("schedules, a late site", sched.clone()));
        sched.on_key(Key::End);
        v.push(("schedules, a period", sched.clone()));
        sched.on_key(Key::Char('t'));
        if sched.dialog.is_some() {
            v.push(("put on test", sched.clone()));
            sched.on_key(Key::Up);
            v.push(("put on test, how long", sched.clone()));
        }
        let mut end = logged_in_as(who, role);
        end.on_key(Key::Char('4'));
        end.schedules = Some(schedule_tab());
        end.on_key(Key::End);
        end.on_key(Key::Char('e'));
        if end.dialog.is_some() {
            v.push(("end a period?", end));
        }
        let mut a = logged_in_as(who, role);
        open(&mut a, &with_schedule());
        v.push(("alarm with a schedule", a.clone()));
        a.on_key(Key::Char('x'));
        v.push(("extend", a.clone()));
        a.on_key(Key::Tab);
        v.push(("extend, reason", a));
    }
    let mut empty_tab = base.clone();
    empty_tab.on_key(Key::Char('4'));
    v.push(("schedules, nothing", empty_tab));
    v
}

/// The schedule tab with a late site (its alarm open), a test under way and a test ended.
fn schedule_tab() -> SchedulesResult {
    let period = |mode: Mode, account: &str, ended: Option<i64>| PeriodView {
        mode,
        site_ref: "S-2001".into(),
        account: account.into(),
        site: "Kantoor, Proeflaan 20".into(),
        from_ms: T0 - 3_600_000,
        until_ms: T0 + 3_600_000,
        set_by: "sam".into(),
        reason: "installer replaces the back door detector".into(),
        events: 3,
        ended_ms: ended,
        summary: ended.map(|_| format!("{:032x}", 99)),
    };
    SchedulesResult {
        late: vec![LateSite {
            site_ref: "S-1001".into(),
            site: "Shop, Proefstraat 1".into(),
            kind: "late_to_close".into(),
            since_ms: T0 - 600_000,
            alarm: Some(format!("{:032x}", 40)),
        }],
        periods: vec![
            period(Mode::Test, "", None),
            period(Mode::Test, "2345", Some(T0 - 60_000)),
            period(Mode::OutOfService, "3456", None),
        ],
    }
}

/// A late-to-close alarm whose site has a schedule.
fn with_schedule() -> AlarmDetail {
    let mut d = detail(false, false);
    d.alarm.id = format!("{:032x}", 40);
    d.alarm.category = "late_to_close".into();
    d.alarm.title = "Late to close: not armed by 12:15 CET".into();
    d.alarm.priority = 5;
    d.alarm.site_ref = "S-1001".into();
    if let Some(c) = d.customer.as_mut() {
        // Left open: disarmed in the morning, not armed by close + grace.
        c.armed = "disarmed by user 5 at 2026-01-15T07:58:00.000Z".into();
    }
    d.schedule = Some(ScheduleView {
        time_zone: "Europe/Amsterdam".into(),
        open: false,
        next_change_ms: Some(T0 + 18 * 3_600_000),
        today: "08:00-12:00 (grace 15)".into(),
        extension: None,
        late: vec!["late to close".into()],
        period: None,
    });
    d
}

/// The schedule tab (issue "Schedules", item 5): late sites and periods listed; Enter opens a
/// late site's alarm; a supervisor puts a site on test for so many minutes with a reason and
/// ends a period (y/n); an operator may do neither; the tab reads again after each.
#[test]
fn the_schedule_tab_lists_late_sites_and_periods_and_a_supervisor_sets_them() {
    let mut olga = logged_in();
    match one(olga.on_key(Key::Char('4'))) {
        Request::Schedules => {}
        r => panic!("{r:?}"),
    }
    assert_eq!(olga.screen, Screen::Schedules);
    olga.schedules = Some(schedule_tab());
    let s = render(&olga, 120, 30);
    assert!(s.contains("[4 Schedules]"), "{s}");
    assert!(s.contains("late to close"), "{s}");
    assert!(s.contains("S-1001 Shop, Proefstraat 1"), "{s}");
    assert!(s.contains("on test (ended)"), "{s}");
    assert!(s.contains("#3456 (S-2001)"), "{s}");
    match one(olga.on_key(Key::Enter)) {
        Request::Alarm { alarm } => assert_eq!(alarm, format!("{:032x}", 40)),
        r => panic!("{r:?}"),
    }
    let mut olga = logged_in();
    olga.on_key(Key::Char('4'));
    olga.schedules = Some(schedule_tab());
    assert!(olga.on_key(Key::Char('t')).is_empty());
    assert!(olga.dialog.is_none(), "an operator puts nothing on test");
    assert!(olga.status.as_ref().is_some_and(|s| s.0.contains("supervisor")));

    let mut sam = logged_in_as("sam", Role::Supervisor);
    sam.on_key(Key::Char('4'));
    sam.schedules = Some(schedule_tab());
    sam.on_key(Key::Char('t'));
    assert!(matches!(&sam.dialog, Some(Dialog::Service(f)) if f.target == "S-1001" && f.amount == "60"));
    assert!(sam.on_key(Key::Enter).is_empty(), "no reason yet");
    typed(&mut sam, "installer on site");
    sam.on_key(Key::Tab); // to the target
    sam.on_key(Key::Tab); // how long
    sam.on_key(Key::Backspace);
    sam.on_key(Key::Backspace);
    typed(&mut sam, "90");
    let sent = sam.on_key(Key::Enter);
    assert_eq!(sent.len(), 1);
    match &sent[0].request {
        Request::Service {
            site,
            account,
            mode,
            until_ms,
            minutes,
            reason,
        } => {
            assert_eq!(
                (site.as_deref(), account, *mode, *until_ms, *minutes, reason.as_str()),
                (Some("S-1001"), &None, Mode::Test, None, Some(90), "installer on site")
            );
        }
        r => panic!("{r:?}"),
    }
    let follow = sam.on_message(answer(&sent[0], serde_json::json!({"done": "service"})));
    assert!(matches!(one(follow), Request::Schedules), "the tab is read again");

    // An account out of service, typed: # and its number, for days.
    sam.on_key(Key::Home);
    sam.on_key(Key::Char('o'));
    for _ in 0..6 {
        sam.on_key(Key::Up); // to the target field
        if matches!(&sam.dialog, Some(Dialog::Service(f)) if f.field == 0) {
            break;
        }
    }
    for _ in 0..6 {
        sam.on_key(Key::Backspace);
    }
    typed(&mut sam, "#7001");
    sam.on_key(Key::Down);
    sam.on_key(Key::Down);
    typed(&mut sam, "moved out");
    match one(sam.on_key(Key::Enter)) {
        Request::Service {
            account, minutes, mode, ..
        } => assert_eq!(
            (account.as_deref(), minutes, mode),
            (Some("7001"), Some(7 * 1440), Mode::OutOfService)
        ),
        r => panic!("{r:?}"),
    }

    // Ending the period under way: asked first.
    sam.on_key(Key::Home);
    sam.on_key(Key::Down);
    sam.on_key(Key::Char('e'));
    assert!(matches!(&sam.dialog, Some(Dialog::ServiceEnd { label, .. }) if label == "site S-2001 (on test)"));
    assert!(sam.on_key(Key::Char('n')).is_empty());
    assert!(sam.dialog.is_none());
    sam.on_key(Key::Char('e'));
    match one(sam.on_key(Key::Char('y'))) {
        Request::ServiceEnd { site, account } => assert_eq!((site.as_deref(), account), (Some("S-2001"), None)),
        r => panic!("{r:?}"),
    }
    for w in [(80, 24), (200, 60)] {
        let mut tab = logged_in_as("sam", Role::Supervisor);
        tab.on_key(Key::Char('4'));
        tab.schedules = Some(schedule_tab());
        snapshot(&format!("schedules_{}x{}", w.0, w.1), &render(&tab, w.0, w.1));
    }
}

/// The alarm view shows the site's schedule state (issue "Schedules", item 5); `x` extends it
/// with the site's local time and what the caller said (item 3).
#[test]
fn the_alarm_view_shows_the_schedule_and_x_extends_it() {
    let mut app = logged_in();
    open(&mut app, &with_schedule());
    let s = render(&app, 120, 40);
    assert!(
        s.contains("Schedule: CLOSED, may open from 2026-01-16 07:00:00"),
        "next change in local time: {s}"
    );
    assert!(s.contains("Today: 08:00-12:00 (grace 15) (Europe/Amsterdam)"), "{s}");
    assert!(s.contains("Now: late to close"), "{s}");
    assert!(s.contains("LATE CLOSE"), "{s}");
    snapshot("alarm_schedule_120x40", &s);
    assert!(app.on_key(Key::Char('x')).is_empty());
    typed(&mut app, "23:3");
    assert!(app.on_key(Key::Enter).is_empty(), "not a time yet");
    typed(&mut app, "0");
    assert!(app.on_key(Key::Enter).is_empty(), "no reason yet");
    assert!(
        matches!(&app.dialog, Some(Dialog::Extend { field: 1, .. })),
        "the reason field next"
    );
    typed(&mut app, "we stay until 23:30 tonight");
    match one(app.on_key(Key::Enter)) {
        Request::Extend {
            site,
            until_ms,
            until_local,
            reason,
        } => assert_eq!(
            (site.as_str(), until_ms, until_local.as_deref(), reason.as_str()),
            ("S-1001", None, Some("23:30"), "we stay until 23:30 tonight")
        ),
        r => panic!("{r:?}"),
    }
    // A site without a schedule offers no extension.
    let mut plain = logged_in();
    open(&mut plain, &recorded());
    assert!(plain.on_key(Key::Char('x')).is_empty());
    assert!(plain.dialog.is_none());
    assert!(!plain.hints().iter().any(|h| h.keys == "x"));
}

/// The footer names keys; each of them must do something on that screen: send a request,
/// change what is shown, or quit. The footer drawn is made of exactly those hints.
#[test]
fn every_key_the_footer_names_does_something_there() {
    for (name, app) in situations() {
        let hints = app.hints();
        assert!(!hints.is_empty(), "{name}");
        for h in &hints {
            let mut a = app.clone();
            let sent = a.on_key(h.press);
            assert!(
                !sent.is_empty() || a != app || a.quit,
                "{name}: {:?} ({} {}) does nothing",
                h.press,
                h.keys,
                h.what
            );
        }
        let s = render(&app, 200, 60);
        let footer = s.lines().last().unwrap_or_default().trim();
        let named: Vec<String> = hints.iter().map(|h| format!("{} {}", h.keys, h.what)).collect();
        for item in footer.split("  ") {
            assert!(
                named.iter().any(|n| n == item.trim()),
                "{name}: footer item {item:?} is no hint"
            );
        }
        assert_eq!(footer, keymap::footer(&hints, 200).trim(), "{name}");
    }
}

#[test]
fn the_help_overlay_lists_every_key_of_the_screen() {
    for (name, app) in situations() {
        if !app.help_available() {
            continue;
        }
        let mut a = app.clone();
        a.on_key(Key::Char('?'));
        assert!(a.help, "{name}");
        let s = render(&a, 200, 60);
        for h in app.hints() {
            assert!(s.contains(h.what), "{name}: {} missing from the help:\n{s}", h.what);
        }
        a.on_key(Key::Esc);
        assert!(!a.help);
    }
}

#[test]
fn home_and_end_in_the_queue_skip_the_put_aside_header() {
    let mut app = logged_in();
    app.on_key(Key::End);
    assert_eq!(app.selected_alarm().map(|a| a.title.as_str()), Some("Mains failure"));
    app.on_key(Key::Up);
    assert!(app.selected_alarm().is_some(), "over the section header");
    app.on_key(Key::Home);
    assert_eq!(app.selected, 0);
    app.on_key(Key::PageDown);
    assert!(app.selected_alarm().is_some());
}

// ---- 12. Search ----------------------------------------------------------------------------

#[test]
fn search_takes_free_text_and_enter_opens_an_alarm() {
    let mut app = logged_in();
    app.on_key(Key::Char('3'));
    assert_eq!(app.screen, Screen::Search);
    typed(&mut app, "Proef 1"); // digits are text here, not tab switches
    assert_eq!(app.screen, Screen::Search);
    let sent = app.on_key(Key::Enter);
    match &sent[0].request {
        Request::Search { query, .. } => assert_eq!(query, "Proef 1"),
        r => panic!("{r:?}"),
    }
    let mut closed = alarm(7, "burglary", 3, -86_400);
    closed.state = "closed".into();
    let open_one = alarm(8, "fire", 2, 0);
    let r = SearchResult {
        sites: vec![SiteHit {
            customer_ref: "C-1001".into(),
            customer_name: "Bakkerij".into(),
            site_ref: "S-1001".into(),
            site: "Shop, Proefstraat 1".into(),
            accounts: vec!["1234".into()],
        }],
        alarms: vec![open_one.clone(), closed.clone()],
        events: vec![
            EventRow {
                received: String::new(),
                received_ms: T0 + 60_000,
                account: "1234".into(),
                code: "SIA BA".into(),
                qualifier: "new".into(),
                description: "Burglary alarm".into(),
                zone: None,
                user: None,
                area: None,
                on_test: true,
            },
            EventRow {
                received: String::new(),
                received_ms: T0,
                account: "1234".into(),
                code: "SIA BA".into(),
                qualifier: "new".into(),
                description: "Burglary alarm".into(),
                zone: None,
                user: None,
                area: None,
                on_test: false,
            },
        ],
    };
    app.on_message(answer(&sent[0], json(&r)));
    assert_eq!(app.search_focus, SearchFocus::Results);
    let s = render(&app, 120, 30);
    for want in [
        "Sites (1)",
        "S-1001 Shop, Proefstraat 1",
        "Alarms (2)",
        "DONE",
        "Events (2)",
        "13:01:00 1234 SIA BA new Burglary alarm (on test)",
        "13:00:00 1234 SIA BA new Burglary alarm",
    ] {
        assert!(s.contains(want), "{want}:\n{s}");
    }
    let after = s.lines().find(|l| l.contains("13:00:00 1234")).unwrap_or_default();
    assert!(!after.contains("on test"), "{s}");
    app.on_key(Key::Down);
    match one(app.on_key(Key::Enter)) {
        Request::Alarm { alarm } => assert_eq!(alarm, closed.id, "a closed alarm opens too"),
        r => panic!("{r:?}"),
    }
    // Typing again goes back to the query; Escape goes back, one step at a time.
    app.on_key(Key::Char('x'));
    assert_eq!(app.search_focus, SearchFocus::Input);
    assert_eq!(app.search_input, "Proef 1x");
    app.on_key(Key::Esc);
    assert_eq!(app.screen, Screen::Queue);
}

// ---- the rest ------------------------------------------------------------------------------

#[test]
fn verify_dialog_masks_the_code_and_shows_duress_unmistakably() {
    let mut app = logged_in();
    open(&mut app, &detail(true, false));
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Secret::from("482913"),
        result: None,
    });
    let s = render(&app, 80, 24);
    snapshot("verify_80x24", &s);
    assert!(s.contains("••••••") && !s.contains("482913"), "the code is masked");
    assert!(!format!("{app:?}").contains("482913"), "and never in Debug");
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Secret::default(),
        result: Some(VerifyShown::Duress),
    });
    let s = render(&app, 80, 24);
    snapshot("verify_duress_80x24", &s);
    assert!(s.contains("DURESS! Thank the caller, end the call, dispatch"), "{s}");
    app.dialog = Some(Dialog::Verify {
        contact: 0,
        code: Secret::default(),
        result: Some(VerifyShown::Rejected(Some(3))),
    });
    assert!(render(&app, 80, 24).contains("3 attempt(s) left"));
}

#[test]
fn ten_thousand_alarms_render_only_what_fits() {
    let mut app = logged_in();
    app.set_queue((0..10_000).map(|i| alarm(i, "burglary", 3, i as i64)).collect());
    app.on_key(Key::End);
    let s = render(&app, 80, 24);
    assert!(s.contains("10000 open"));
    assert!(
        s.contains(&format!("{:04X}", 0x1234 + 9_999)),
        "the selection is scrolled into view"
    );
}

/// An answer that arrives after the operator left the alarm (Escape) must not pull them back
/// into it: after a close, the re-read of the closed alarm used to reopen its view over the
/// queue ("No open alarms" never showed). A re-read while the operator stays on the alarm
/// still updates it.
#[test]
fn a_late_re_read_does_not_reopen_an_alarm_the_operator_left() {
    let d = detail(true, true);
    let mut app = logged_in();
    app.set_queue(vec![d.alarm.clone()]);
    let open = app.on_key(Key::Enter);
    assert_eq!(open.len(), 1);
    app.on_message(answer(&open[0], json(&d)));
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
    app.on_message(answer(&reread[0], json(&closed)));
    assert_eq!(
        app.screen,
        Screen::Queue,
        "the late answer left the operator where they were"
    );
    assert!(app.alarm.is_none());

    // Staying on the alarm: the re-read updates it.
    let open = app.on_key(Key::Enter);
    app.on_message(answer(&open[0], json(&d)));
    let ack = app.on_key(Key::Char('a'));
    let reread = app.on_message(answer(&ack[0], serde_json::json!({"done": "acknowledge"})));
    let mut acked = d.clone();
    acked.alarm.state = "acknowledged".into();
    app.on_message(answer(&reread[0], json(&acked)));
    assert_eq!(app.screen, Screen::Alarm);
    assert_eq!(app.alarm.as_ref().map(|a| a.alarm.state.as_str()), Some("acknowledged"));
}
