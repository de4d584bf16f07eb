//! Console redraw cost with 10,000 open alarms (target: under 16 ms per frame).
//!
//! Run: `cargo bench --bench console`

use criterion::{Criterion, criterion_group, criterion_main};
use meldkamer::console::app::{App, Link, Screen};
use meldkamer::console::ui;
use meldkamer::operator::Role;
use meldkamer::operator::protocol::{Push, ServerMessage};
use meldkamer::operator::queries::AlarmSummary;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::hint::black_box;

fn alarm(i: usize) -> AlarmSummary {
    AlarmSummary {
        id: format!("{i:032x}"),
        queue: "operator".into(),
        priority: 1 + (i % 9) as i64,
        category: ["duress", "fire", "burglary", "technical", "communication"][i % 5].into(),
        title: format!("Burglary alarm, zone {}: Back door, ground floor", i % 64),
        account: format!("{:06X}", i),
        site: "Shop, Demostraat 1".into(),
        state: "new".into(),
        opened_ms: 1_768_478_400_000 + i as i64 * 1000,
        last_event_ms: 1_768_478_400_000 + i as i64 * 1000,
        events: 1,
        restored: false,
        escalated: false,
        keypad_factor: None,
        keypad_factor_ms: None,
        phone_factor: false,
        duress: false,
        owner: i.is_multiple_of(3).then(|| "olga".to_string()),
        recall_ms: None,
        site_ref: format!("S-{}", i % 500),
    }
}

fn bench(c: &mut Criterion) {
    let mut app = App::new();
    app.link = Link::Up;
    app.screen = Screen::Queue;
    app.operator = Some(("olga".into(), Role::Operator));
    app.token = Some("t".into());
    app.set_queue((0..10_000).map(alarm).collect());
    app.selected = 5_000;
    let now = 1_768_478_400_000 + 20_000_000;
    let mut g = c.benchmark_group("console_redraw_10k_alarms");
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        g.bench_function(format!("{w}x{h}"), |b| {
            b.iter(|| {
                t.draw(|f| ui::draw(f, black_box(&app), now)).expect("draw");
            })
        });
    }
    // A queue change: merge a push into 10,000 alarms (sort included), then redraw.
    let mut t = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    g.bench_function("push_merge_and_redraw_200x60", |b| {
        b.iter(|| {
            let push = Push::Queue {
                changed: vec![alarm(10_001)],
            };
            app.on_message(ServerMessage::Push(push));
            t.draw(|f| ui::draw(f, &app, now)).expect("draw");
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
