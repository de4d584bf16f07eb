//! Schedules at ARC scale (issue "Schedules"): 100,000 sites with schedules in a real database
//! (the records `meldkamer bench --write-records --schedules` writes: Monday to Saturday, opens
//! spread over 06:00-09:59 and closes over 17:00-21:59 in Europe/Amsterdam, 15 minutes'
//! grace), plus 1,000 sites without one.
//!
//! - **per event**: what the writer does for an opening or closing report of a site, in the
//!   report's transaction: the site's armed state set ([`alarms::set_armed`]) and its schedule
//!   reconciled ([`schedule::store::on_report`]: plan read, conditions decided, an alarm raised
//!   or restored where they changed). An event does not move the site in the timer structure:
//!   its next edge depends on the schedule only. Each iteration is rolled back, so every one
//!   meets the same state; the transaction's begin and rollback are in the figure, a commit
//!   (shared by a commit group in the daemon) is not.
//! - **per minute**: the supervision task's look at the sites due ([`ScheduleTimers::tick`]):
//!   due sites off the timer structure, their armed states and raised kinds read in bulk,
//!   conditions decided, each set at its next edge, the sites whose conditions changed
//!   reconciled by the writer. An ordinary evening minute (about 1,000 sites at an edge, 99%
//!   of them armed, 1% left open and raised late to close), and the busiest minute there can
//!   be: all 100,000 due at once (after a restart, or every site with the same hours).
//! - the pieces: moving one key among 100,000 in [`Timers`], and one plan's next edge.
//!
//! Run: `cargo bench --bench schedules` (building the 100,000 sites takes a minute or two
//! before the first figure). Results in BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use meldkamer::correlate::alarms;
use meldkamer::correlate::schedule::{self, timer::ScheduleTimers};
use meldkamer::correlate::timers::Timers;
use meldkamer::loadgen::arc::records_toml;
use meldkamer::store::writer::{self, NoHook, WriterConfig, WriterHandle};
use rusqlite::{Connection, params};
use std::hint::black_box;

const SITES: u32 = 100_000;
const PLAIN_SITES: u32 = 1_000;
const MIN: i64 = 60_000;
const WEEK: i64 = 7 * 1440 * MIN;

/// Unix ms of a local time in Amsterdam.
fn local(y: i16, m: i8, d: i8, h: i8, min: i8) -> i64 {
    jiff::civil::date(y, m, d)
        .at(h, min, 0, 0)
        .to_zoned(jiff::tz::TimeZone::get("Europe/Amsterdam").expect("zone"))
        .expect("instant")
        .timestamp()
        .as_millisecond()
}

struct Db {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    /// Site ids with a schedule, in index order.
    scheduled: Vec<i64>,
    /// Site ids without.
    plain: Vec<i64>,
    /// An event row to link raised alarms to.
    event: i64,
}

/// 100,000 sites with schedules and 1,000 without; every site armed a week before `armed_at`,
/// except one in a hundred, disarmed then. Late to open and early close are not checked (the
/// common case; every fourth generated site asks for them).
fn build(armed_at: i64) -> Db {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("schedules-bench.db");
    let mut conn = meldkamer::store::open_write(&path, Duration::from_secs(5)).expect("db");
    let seal = meldkamer::store::sealed::SealKey::from_bytes(&[7; 32]);
    for (first, n, schedules) in [(0, SITES, true), (SITES, PLAIN_SITES, false)] {
        let r = meldkamer::records::parse_toml(&records_toml(first, n, 90, schedules), "bench").expect("records");
        meldkamer::records::apply(&mut conn, &r, &seal).expect("import");
    }
    conn.execute_batch("UPDATE schedules SET late_to_open = 0, early_close = 0")
        .expect("checks");
    let since = armed_at - WEEK;
    conn.execute(
        "UPDATE sites SET armed_state = CASE WHEN id % 100 = 0 THEN 'disarmed' ELSE 'armed' END,
                          armed_changed_ms = ?1",
        params![since],
    )
    .expect("armed");
    conn.execute_batch(
        "INSERT INTO frames (id, received_ms, transport, peer, raw, outcome) VALUES (1, 0, 'tcp', 'bench', x'00', 'accepted');
         INSERT INTO events (id, frame_id, received_ms, account, seq, code_format, code, qualifier, description)
             VALUES (1, 1, 0, 'E0000000', 1, 'sia', 'OP', 'new', 'Opening');",
    )
    .expect("event");
    // Sites by index: `BS{i}`.
    let ids = |from: u32, to: u32| -> Vec<i64> {
        let mut stmt = conn
            .prepare(
                "SELECT id FROM sites WHERE CAST(substr(ref, 3) AS INTEGER) >= ?1
                   AND CAST(substr(ref, 3) AS INTEGER) < ?2 ORDER BY CAST(substr(ref, 3) AS INTEGER)",
            )
            .expect("query");
        stmt.query_map(params![from, to], |r| r.get(0))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("ids")
    };
    let (scheduled, plain) = (ids(0, SITES), ids(SITES, SITES + PLAIN_SITES));
    assert_eq!((scheduled.len(), plain.len()), (SITES as usize, PLAIN_SITES as usize));
    Db {
        _dir: dir,
        path,
        scheduled,
        plain,
        event: 1,
    }
}

fn start_writer(path: &std::path::Path, now: i64) -> (WriterHandle, std::thread::JoinHandle<()>) {
    writer::start(
        WriterConfig {
            path: path.to_path_buf(),
            queue_depth: 1024,
            max_batch: 256,
            busy_timeout: Duration::from_secs(5),
            retransmission_window: Duration::from_secs(600),
            max_dedupe_entries: 1000,
            last_seen: None,
            changes: None,
            wal: Default::default(),
            status_flush: Duration::from_secs(1),
            polls: Default::default(),
        },
        now,
        Arc::new(meldkamer::metrics::Metrics::default()),
        Box::new(NoHook),
    )
    .expect("writer")
}

fn per_event(c: &mut Criterion, db: &Db) {
    let mut conn = meldkamer::store::open_write(&db.path, Duration::from_secs(5)).expect("db");
    // Wednesday 14 January 2026: 12:00 is inside every window, 03:00 outside all of them.
    let noon = local(2026, 1, 14, 12, 0);
    let night = local(2026, 1, 14, 3, 0);
    let mut g = c.benchmark_group("schedules/event");
    let mut k = 0usize;
    let mut one = |conn: &mut Connection, sites: &[i64], armed: bool, at: i64| {
        let site = sites[k % sites.len()];
        k = k.wrapping_add(7919);
        let tx = conn.transaction().expect("tx");
        alarms::set_armed(&tx, site, armed, Some("5"), at).expect("armed");
        let r = schedule::store::on_report(&tx, site, db.event, at, false).expect("reconcile");
        black_box(r);
        drop(tx);
    };
    g.bench_function("disarm in its window, 100k scheduled sites", |b| {
        b.iter(|| one(&mut conn, &db.scheduled, false, noon))
    });
    g.bench_function("arm in its window, 100k scheduled sites", |b| {
        b.iter(|| one(&mut conn, &db.scheduled, true, noon))
    });
    g.bench_function("disarm at 03:00 (raises an unexpected opening)", |b| {
        b.iter(|| one(&mut conn, &db.scheduled, false, night))
    });
    g.bench_function("disarm, a site without a schedule", |b| {
        b.iter(|| one(&mut conn, &db.plain, false, noon))
    });
    g.finish();
}

/// One tick at `now`; returns how long it took and what it found.
fn timed_tick(
    rt: &tokio::runtime::Runtime,
    timers: &mut ScheduleTimers,
    db: &std::path::Path,
    w: &WriterHandle,
    now: i64,
) -> (Duration, schedule::timer::TickReport) {
    let t = Instant::now();
    let r = rt.block_on(timers.tick(db, w, now));
    (t.elapsed(), r)
}

fn per_minute(c: &mut Criterion, db: &Db) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let wed_1900 = local(2026, 1, 14, 19, 0);
    let (w, _join) = start_writer(&db.path, wed_1900);
    let mut timers = ScheduleTimers::default();
    // The first tick loads every plan and looks at every site (a start).
    let (took, r) = timed_tick(&rt, &mut timers, &db.path, &w, wed_1900 - WEEK);
    eprintln!("first tick (load 100,000 plans, look at every site): {took:?}, {r:?}");
    let mut g = c.benchmark_group("schedules/minute");
    g.sample_size(20);
    // Evening minutes from 19:00 to 21:29 of successive Wednesdays (the week's jump, which
    // looks at every site, untimed).
    let mut week = 0i64;
    let mut minute = 150i64;
    let mut seen = (0usize, 0usize, 0usize);
    g.bench_function("an evening minute, 100k scheduled sites", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                if minute == 150 {
                    week += 1;
                    minute = 0;
                    timed_tick(&rt, &mut timers, &db.path, &w, wed_1900 + week * WEEK - MIN);
                }
                let (took, r) = timed_tick(&rt, &mut timers, &db.path, &w, wed_1900 + week * WEEK + minute * MIN);
                minute += 1;
                seen = (seen.0 + 1, seen.1 + r.due, seen.2 + r.reconciled);
                total += took;
            }
            total
        })
    });
    eprintln!(
        "evening minutes: {} ticks, {:.0} sites due and {:.1} reconciled per minute on average",
        seen.0,
        seen.1 as f64 / seen.0.max(1) as f64,
        seen.2 as f64 / seen.0.max(1) as f64
    );
    // Every site due at once: the same Wednesday 23:00 a week later each time (every site's
    // next edge, the next morning's, has passed).
    let wed_2300 = local(2026, 1, 14, 23, 0) + 60 * WEEK;
    let mut k = 0i64;
    let mut all = (0usize, 0usize, 0usize);
    g.sample_size(10);
    g.bench_function("every site due at once, 100k scheduled sites", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                let (took, r) = timed_tick(&rt, &mut timers, &db.path, &w, wed_2300 + k * WEEK);
                all = (all.0 + 1, all.1 + r.due, all.2 + r.reconciled);
                total += took;
            }
            total
        })
    });
    eprintln!(
        "every site due: {} ticks, {:.0} sites due and {:.1} reconciled per tick on average",
        all.0,
        all.1 as f64 / all.0.max(1) as f64,
        all.2 as f64 / all.0.max(1) as f64
    );
    g.finish();
}

fn pieces(c: &mut Criterion) {
    let mut g = c.benchmark_group("schedules/pieces");
    let mut t: Timers<i64> = Timers::default();
    let base = local(2026, 1, 14, 0, 0);
    for i in 0..i64::from(SITES) {
        t.set(i, base + (i % 1440) * MIN);
    }
    let mut k = 0i64;
    g.bench_function("Timers::set, move one key of 100k", |b| {
        b.iter(|| {
            k = (k + 7919) % i64::from(SITES);
            t.set(black_box(k), base + ((k * 31) % 1440) * MIN);
        })
    });
    let plan = schedule::plan::Plan::weekly(
        jiff::tz::TimeZone::get("Europe/Amsterdam").expect("zone"),
        vec![schedule::plan::WeeklyWindow {
            days: 0b0011_1111,
            hours: schedule::plan::Hours { open: 480, close: 1080 },
            grace: 15,
        }],
    );
    let mut at = base;
    g.bench_function("Plan::next_edge, Monday to Saturday 08:00-18:00", |b| {
        b.iter(|| {
            at = plan.next_edge(black_box(at));
            if at > base + WEEK {
                at = base;
            }
        })
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    pieces(c);
    let built = Instant::now();
    let db = build(local(2026, 1, 14, 12, 0));
    eprintln!("built 101,000 sites in {:?}", built.elapsed());
    per_event(c, &db);
    per_minute(c, &db);
}

criterion_group!(benches, bench);
criterion_main!(benches);
