//! The expected outcome of a scenario: what was stored and what it led to. Deterministic: no
//! row ids, no random identifiers, times relative to nothing but the virtual clock.

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::clock::rfc3339_ms;

/// Build the outcome document from a database.
pub fn outcome(conn: &Connection) -> Result<Value, rusqlite::Error> {
    let mut frames = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT outcome, ifnull(reason, ''), count(*) FROM frames GROUP BY outcome, reason ORDER BY outcome, reason",
    )?;
    for r in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
    })? {
        let (o, reason, n) = r?;
        frames.push(json!({"outcome": o, "reason": reason, "count": n}));
    }
    let mut events = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT account, seq, code_format, code, qualifier, ifnull(zone, ''), ifnull(user_no, ''), ifnull(area, ''),
                description, received_ms
         FROM events ORDER BY id",
    )?;
    for r in stmt.query_map([], |r| {
        Ok(format!(
            "{} #{} {} {} {} zone={} user={} area={} at {}: {}",
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, String>(7)?,
            rfc3339_ms(r.get::<_, i64>(9)?),
            r.get::<_, String>(8)?,
        ))
    })? {
        events.push(Value::String(r?));
    }
    let mut alarms = Vec::new();
    let mut stmt = conn.prepare(&format!(
        "WITH {}
             SELECT queue, account, ifnull(category, ''), priority, state, title, ifnull(zone, ''),
                    event_count + ifnull(p.n, 0), restored_ms IS NOT NULL, escalated_ms IS NOT NULL,
                    keypad_factor_user, keypad_factor_ms IS NOT NULL, phone_factor_ms IS NOT NULL, duress,
                    ifnull(disposition, ''), opened_ms
             FROM alarms LEFT JOIN pending p ON p.alarm_id = alarms.id ORDER BY id",
        crate::correlate::alarms::PENDING_EVENTS
    ))?;
    for r in stmt.query_map([], |r| {
        Ok(json!({
            "queue": r.get::<_, String>(0)?,
            "account": r.get::<_, String>(1)?,
            "category": r.get::<_, String>(2)?,
            "priority": r.get::<_, i64>(3)?,
            "state": r.get::<_, String>(4)?,
            "title": r.get::<_, String>(5)?,
            "zone": r.get::<_, String>(6)?,
            "events": r.get::<_, i64>(7)?,
            "restored": r.get::<_, bool>(8)?,
            "escalated": r.get::<_, bool>(9)?,
            "keypad_factor": if r.get::<_, bool>(11)? {
                Value::String(format!("user {}", r.get::<_, Option<String>>(10)?.unwrap_or_else(|| "?".into())))
            } else {
                Value::Null
            },
            "phone_factor": r.get::<_, bool>(12)?,
            "duress": r.get::<_, bool>(13)?,
            "disposition": r.get::<_, String>(14)?,
            "opened": rfc3339_ms(r.get::<_, i64>(15)?),
        }))
    })? {
        alarms.push(r?);
    }
    let mut sites = Vec::new();
    let mut stmt = conn.prepare("SELECT ref, armed_state, ifnull(armed_by_user, '') FROM sites ORDER BY ref")?;
    for r in stmt.query_map([], |r| {
        Ok(json!({"site": r.get::<_, String>(0)?, "armed": r.get::<_, String>(1)?, "by_user": r.get::<_, String>(2)?}))
    })? {
        sites.push(r?);
    }
    let mut out = json!({"frames": frames, "events": events, "alarms": alarms, "sites": sites});
    // Mass losses: each folded account's own record (only where there is one).
    let mut stmt = conn.prepare(
        "SELECT m.alarm_id, count(*), count(m.restored_ms), min(m.deadline_ms), max(m.deadline_ms)
         FROM mass_loss_accounts m GROUP BY m.alarm_id ORDER BY m.alarm_id",
    )?;
    let mut mass = Vec::new();
    for r in stmt.query_map([], |r| {
        Ok(json!({
            "accounts": r.get::<_, i64>(1)?,
            "restored": r.get::<_, i64>(2)?,
            "first_deadline": rfc3339_ms(r.get::<_, i64>(3)?),
            "last_deadline": rfc3339_ms(r.get::<_, i64>(4)?),
        }))
    })? {
        mass.push(r?);
    }
    if !mass.is_empty()
        && let Some(o) = out.as_object_mut()
    {
        o.insert("mass_loss".into(), Value::Array(mass));
    }
    // What schedules wrote on alarms' records (a kind joining another alarm, its end, an
    // extension): only in the outcomes of traces that have schedules.
    let mut log = Vec::new();
    let mut stmt = conn.prepare(
        "SELECT l.at_ms, l.actor, l.action, l.detail, a.title FROM alarm_log l JOIN alarms a ON a.id = l.alarm_id
         WHERE a.join_key LIKE 'schedule:%' OR l.action IN ('late_to_close', 'late_to_open', 'unexpected_opening',
               'early_close', 'late_to_close_ended', 'late_to_open_ended', 'unexpected_opening_ended',
               'early_close_ended', 'extended')
         ORDER BY l.id",
    )?;
    for r in stmt.query_map([], |r| {
        Ok(format!(
            "{} {} {} on \"{}\": {}",
            rfc3339_ms(r.get::<_, i64>(0)?),
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(3)?,
        ))
    })? {
        log.push(Value::String(r?));
    }
    if !log.is_empty() {
        out["schedule_log"] = Value::Array(log);
    }
    Ok(out)
}
