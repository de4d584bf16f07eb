//! The outbox: one row per stored event, written by a writer hook in the event's own
//! transaction (so an event is never committed without its row, nor a row without its event),
//! rendered once as a Sur-Gard line and as a JSON object. Outputs read it in `id` order and
//! move their cursor (`outbox_cursors`) only after the other side acknowledged.

use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::json;

use crate::clock::rfc3339_ms;
use crate::event::{Event, EventCode, Qualifier};
use crate::protocol::cid::{CidEvent, CidQualifier};
use crate::protocol::surgard::{self, CidLayout, Header, QualifierStyle, SgContactId, SgSia};
use crate::store::StoreError;
use crate::store::writer::{AfterInsert, AlarmLink, Committed, FrameRecord, Outcome};

/// The event stream's schema version (the `version` field of every line).
pub const SCHEMA_VERSION: u32 = 1;

/// Cursor name of the Sur-Gard output.
pub const SINK_SURGARD: &str = "surgard";
/// Cursor name of the JSON Lines file.
pub const SINK_FILE: &str = "jsonl-file";

/// Two writer hooks, one after the other (correlation, then the outbox), in the same
/// transaction.
pub struct Chain(pub Box<dyn AfterInsert>, pub Box<dyn AfterInsert>);

impl AfterInsert for Chain {
    fn begin(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.0.begin(tx)?;
        self.1.begin(tx)
    }

    fn forget(&mut self) {
        self.0.forget();
        self.1.forget();
    }

    fn before_job(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.0.before_job(tx)?;
        self.1.before_job(tx)
    }

    fn after_job(&mut self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        self.0.after_job(tx)?;
        self.1.after_job(tx)
    }

    fn link_before_insert(&mut self, tx: &Transaction<'_>, r: &FrameRecord) -> Result<Option<AlarmLink>, StoreError> {
        match self.0.link_before_insert(tx, r)? {
            Some(l) => Ok(Some(l)),
            None => self.1.link_before_insert(tx, r),
        }
    }

    fn after_insert(&mut self, tx: &Transaction<'_>, r: &FrameRecord, c: &Committed) -> Result<(), StoreError> {
        self.0.after_insert(tx, r, c)?;
        self.1.after_insert(tx, r, c)
    }
}

/// The hook that fills the outbox.
pub struct OutboxHook {
    /// Receiver and line of the Sur-Gard lines.
    pub header: Header,
}

impl AfterInsert for OutboxHook {
    fn after_insert(&mut self, tx: &Transaction<'_>, r: &FrameRecord, c: &Committed) -> Result<(), StoreError> {
        if r.outcome != Outcome::Accepted || c.duplicate_of.is_some() {
            return Ok(());
        }
        let mut stmt =
            tx.prepare_cached("INSERT INTO outbox (event_id, created_ms, surgard, json) VALUES (?1, ?2, ?3, ?4)")?;
        for (ev, id) in r.events.iter().zip(&c.event_ids) {
            if ev.is_link_test() {
                continue;
            }
            let line = surgard_line(ev, &self.header);
            let json = event_json(ev, r, *id, c.frame_id);
            stmt.execute(params![id, r.received_ms, line, json])?;
        }
        Ok(())
    }
}

fn qualifier_name(q: Qualifier) -> String {
    match q {
        Qualifier::New => "new".into(),
        Qualifier::Restore => "restore".into(),
        Qualifier::Status => "status".into(),
        Qualifier::Unknown(d) => format!("unknown:{d}"),
    }
}

/// The event as the JSON object of the event stream (schema version [`SCHEMA_VERSION`]).
pub fn event_json(ev: &Event, r: &FrameRecord, event_id: i64, frame_id: Option<i64>) -> String {
    let (format, code) = match ev.code {
        EventCode::Sia(c) => ("sia", c.to_string()),
        EventCode::Cid(c) => ("cid", c.to_string()),
        EventCode::LinkTest => ("sia", "NULL".to_string()),
    };
    let ts = |t: Option<crate::protocol::timestamp::Timestamp>| {
        t.map(|t| rfc3339_ms(crate::clock::unix_ms(t.to_datetime())))
    };
    json!({
        "event_id": event_id,
        "frame_id": frame_id,
        "received": rfc3339_ms(r.received_ms),
        "input": r.token,
        "transport": r.transport.as_str(),
        "account": ev.account,
        "account_id": r.account_id,
        "receiver": ev.receiver,
        "line": ev.line,
        "seq": ev.seq,
        "code_format": format,
        "code": code,
        "qualifier": qualifier_name(ev.qualifier),
        "category": ev.meaning.map(|m| m.category.as_str()),
        "kind": ev.meaning.map(|m| m.kind.as_str()),
        "priority": ev.meaning.map(|m| m.priority),
        "description": ev.describe(),
        "zone": ev.zone,
        "user": ev.user,
        "area": ev.area,
        "address": ev.address,
        "text": ev.text,
        "occurred": ts(ev.occurred),
        "sent": ts(ev.sent),
        "old": ev.old,
    })
    .to_string()
}

/// One line of the event stream for an outbox row.
pub fn stream_line(seq: i64, event_json: &str) -> String {
    format!("{{\"version\":{SCHEMA_VERSION},\"type\":\"event\",\"seq\":{seq},\"event\":{event_json}}}\n")
}

fn hex_upper(s: &str) -> Option<String> {
    let u = s.to_ascii_uppercase();
    u.bytes().all(|b| b.is_ascii_hexdigit()).then_some(u)
}

fn pad(s: &str, n: usize) -> Option<String> {
    (s.len() <= n).then(|| format!("{}{s}", "0".repeat(n - s.len())))
}

/// The Sur-Gard line of an event, DC4 included; `None` when it has no Sur-Gard form (a
/// Contact ID account longer than ten characters, or fields that do not fit).
///
/// Contact ID events become `5` lines (accounts of up to four characters, zero-padded) or
/// `Q` lines (five to ten, zero-padded to ten), with the qualifier as a letter (E, R, P; an
/// unknown qualifier as its digit), GG from the area (`00` without) and CCC from the event's
/// address. SIA events become `S` lines: `[#ACCT|N` + `ri`area + code + address `]` (`O` for
/// an event reported late), the layout of the vendor examples.
pub fn surgard_line(ev: &Event, header: &Header) -> Option<Vec<u8>> {
    let account = hex_upper(&ev.account)?;
    match ev.code {
        EventCode::Cid(code) => {
            let (account, layout) = match account.len() {
                0 => return None,
                1..=4 => (pad(&account, 4)?, CidLayout::Four),
                5..=10 => (pad(&account, 10)?, CidLayout::Ten),
                _ => return None,
            };
            let qualifier = match ev.qualifier {
                Qualifier::New => CidQualifier::New,
                Qualifier::Restore => CidQualifier::Restore,
                Qualifier::Status => CidQualifier::Status,
                Qualifier::Unknown(d) => CidQualifier::Other(d),
            };
            let group = pad(ev.area.as_deref().unwrap_or("00"), 2)?;
            let zone = pad(ev.address.as_deref().unwrap_or("000"), 3)?;
            surgard::encode_contact_id(&SgContactId {
                header: header.clone(),
                layout,
                account,
                event: CidEvent {
                    qualifier,
                    code,
                    group,
                    zone,
                },
                style: QualifierStyle::Letter,
                time: None,
            })
        }
        EventCode::Sia(code) => {
            let mut data = format!("#{account}|{}", if ev.old { 'O' } else { 'N' });
            if let Some(a) = &ev.area {
                data.push_str("ri");
                data.push_str(a);
            }
            data.push_str(code.as_str());
            if let Some(a) = &ev.address {
                data.push_str(a);
            }
            surgard::encode_sia(&SgSia {
                id: 'S',
                header: header.clone(),
                data,
            })
        }
        EventCode::LinkTest => None,
    }
}

/// One outbox row as an output reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Delivery order.
    pub id: i64,
    /// The Sur-Gard line, if the event has one.
    pub surgard: Option<Vec<u8>>,
    /// The event as JSON.
    pub json: String,
}

/// Rows after `after`, oldest first, at most `limit`.
pub fn rows_after(conn: &rusqlite::Connection, after: i64, limit: usize) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, surgard, json FROM outbox WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok(Row {
            id: r.get(0)?,
            surgard: r.get(1)?,
            json: r.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// A sink's cursor (0 before its first delivery).
pub fn cursor(conn: &rusqlite::Connection, sink: &str) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT delivered_id FROM outbox_cursors WHERE sink = ?1",
            params![sink],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Move a sink's cursor forward (never back).
pub fn advance(tx: &Transaction<'_>, sink: &str, id: i64, now_ms: i64) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO outbox_cursors (sink, delivered_id, updated_ms) VALUES (?1, ?2, ?3)
         ON CONFLICT (sink) DO UPDATE SET delivered_id = max(delivered_id, excluded.delivered_id),
                                          updated_ms = excluded.updated_ms",
    )?
    .execute(params![sink, id, now_ms])?;
    Ok(())
}

/// The oldest and newest row ids (`None` when empty).
pub fn bounds(conn: &rusqlite::Connection) -> Result<Option<(i64, i64)>, StoreError> {
    Ok(conn
        .query_row("SELECT min(id), max(id) FROM outbox", [], |r| {
            Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?))
        })
        .map(|(a, b)| a.zip(b))?)
}

/// Rows after `after` (for the backlog gauge).
pub fn count_after(conn: &rusqlite::Connection, after: i64) -> Result<i64, StoreError> {
    Ok(
        conn.query_row("SELECT count(*) FROM outbox WHERE id > ?1", params![after], |r| {
            r.get(0)
        })?,
    )
}

/// Delete rows older than `before_ms` that every cursor in `sinks` has passed.
pub fn prune(tx: &Transaction<'_>, sinks: &[&str], before_ms: i64) -> Result<usize, StoreError> {
    let mut upto = i64::MAX;
    for s in sinks {
        let c: i64 = tx
            .query_row(
                "SELECT delivered_id FROM outbox_cursors WHERE sink = ?1",
                params![s],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        upto = upto.min(c);
    }
    Ok(tx.execute(
        "DELETE FROM outbox WHERE id <= ?1 AND created_ms < ?2",
        params![upto, before_ms],
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{DecodeOptions, Token, decode_frame};

    /// Counts the calls it gets, in a log shared with the test.
    struct Calls(std::sync::Arc<std::sync::Mutex<Vec<&'static str>>>);

    impl AfterInsert for Calls {
        fn begin(&mut self, _tx: &Transaction<'_>) -> Result<(), StoreError> {
            self.0.lock().expect("log").push("begin");
            Ok(())
        }
        fn forget(&mut self) {
            self.0.lock().expect("log").push("forget");
        }
        fn before_job(&mut self, _tx: &Transaction<'_>) -> Result<(), StoreError> {
            self.0.lock().expect("log").push("before_job");
            Ok(())
        }
        fn after_job(&mut self, _tx: &Transaction<'_>) -> Result<(), StoreError> {
            self.0.lock().expect("log").push("after_job");
            Ok(())
        }
        fn link_before_insert(
            &mut self,
            _tx: &Transaction<'_>,
            _r: &FrameRecord,
        ) -> Result<Option<AlarmLink>, StoreError> {
            self.0.lock().expect("log").push("link_before_insert");
            Ok(None)
        }
        fn after_insert(&mut self, _tx: &Transaction<'_>, _r: &FrameRecord, _c: &Committed) -> Result<(), StoreError> {
            self.0.lock().expect("log").push("after_insert");
            Ok(())
        }
    }

    /// Correlation behind the outbox still hears when a transaction begins, a job ran or a
    /// rollback happened: without it, its remembered state (owners, open alarms) outlived
    /// imports and rollbacks whenever an output was configured.
    #[test]
    fn a_chain_passes_every_call_to_both_hooks() {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut chain = Chain(Box::new(Calls(log.clone())), Box::new(Calls(log.clone())));
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        let tx = conn.transaction().expect("tx");
        chain.begin(&tx).expect("begin");
        chain.before_job(&tx).expect("before");
        chain.after_job(&tx).expect("after");
        chain.forget();
        let r = FrameRecord::new(
            0,
            crate::store::writer::Transport::Tcp,
            "p".into(),
            Vec::new(),
            Outcome::Accepted,
        );
        let c = Committed {
            frame_id: None,
            duplicate_of: None,
            event_ids: Vec::new(),
            ..Committed::default()
        };
        assert_eq!(chain.link_before_insert(&tx, &r).expect("link"), None);
        chain.after_insert(&tx, &r, &c).expect("insert");
        let calls = log.lock().expect("log").clone();
        for call in [
            "begin",
            "before_job",
            "after_job",
            "forget",
            "link_before_insert",
            "after_insert",
        ] {
            assert_eq!(calls.iter().filter(|c| **c == call).count(), 2, "{call}: {calls:?}");
        }
    }

    fn events(token: crate::protocol::frame::Token, data: &str) -> Vec<Event> {
        use crate::protocol::frame::{AccountField, Body, Frame, Framing, Plain};
        let raw = Frame {
            framing: Framing::default(),
            token,
            encrypted: false,
            seq: 1,
            receiver: Some("1".into()),
            line: "1".into(),
            account: AccountField::Number("1234".into()),
            body: Body::Plain(Plain {
                data: data.into(),
                xdata: vec![],
                timestamp: None,
            }),
        }
        .encode();
        let f = decode_frame(&raw, &DecodeOptions::default()).expect("frame");
        let crate::protocol::frame::Body::Plain(p) = &f.body else {
            panic!("plain")
        };
        crate::event::events_from(&f, p).expect("events")
    }

    fn line(ev: &Event, rr: &str, l: &str) -> Option<String> {
        surgard_line(ev, &Header::new(rr, l).expect("header")).map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    #[test]
    fn contact_id_events_become_5_and_q_lines() {
        let ev = &events(Token::AdmCid, "#1234|1130 01 003")[0];
        assert_eq!(line(ev, "01", "1").as_deref(), Some("5011 181234E13001003\x14"));
        assert_eq!(line(ev, "01", "100").as_deref(), Some("501100 181234E13001003\x14"));
        // A restore, a user-addressed code, no group.
        let ev = &events(Token::AdmCid, "#1234|3401 00 012")[0];
        assert_eq!(line(ev, "01", "1").as_deref(), Some("5011 181234R40100012\x14"));
        let mut long = ev.clone();
        long.account = "123456".into();
        assert_eq!(
            line(&long, "01", "1").as_deref(),
            Some("Q011 580000123456R40100012\x14")
        );
        long.account = "123".into();
        assert_eq!(line(&long, "01", "1").as_deref(), Some("5011 180123R40100012\x14"));
        long.account = "123456789012".into();
        assert_eq!(line(&long, "01", "1"), None, "no Contact ID line holds 12 characters");
        long.qualifier = Qualifier::Unknown(2);
        long.account = "1234".into();
        assert_eq!(line(&long, "01", "1").as_deref(), Some("5011 181234240100012\x14"));
    }

    #[test]
    fn sia_events_become_s_lines() {
        let evs = events(Token::SiaDcs, "#1234|Nri1/BA01");
        assert_eq!(line(&evs[0], "01", "1").as_deref(), Some("S011[#1234|Nri1BA01]\x14"));
        assert_eq!(
            line(&evs[0], "01", "002").as_deref(),
            Some("S01002[#1234|Nri1BA01]\x14")
        );
        // The line reads back through the Sur-Gard decoder and the SIA parser to the same event.
        let back = crate::protocol::surgard::decode_line(b"S011[#1234|Nri1BA01]\x14").expect("decodes");
        let crate::protocol::surgard::SgMessage::Sia(s) = back else {
            panic!("sia")
        };
        let d = crate::protocol::sia::parse_sia_data(&s.data).expect("sia data");
        assert_eq!(d.account.as_deref(), Some("1234"));
    }

    #[test]
    fn pruning_respects_every_cursor_and_ids_are_never_reused() {
        let mut conn = rusqlite::Connection::open_in_memory().expect("db");
        crate::store::schema::migrate(&conn).expect("schema");
        conn.pragma_update(None, "foreign_keys", "OFF")
            .expect("no events needed here");
        let insert = |conn: &rusqlite::Connection, event: i64, at: i64| {
            conn.execute(
                "INSERT INTO outbox (event_id, created_ms, surgard, json) VALUES (?1, ?2, NULL, '{}')",
                params![event, at],
            )
            .expect("insert");
            conn.last_insert_rowid()
        };
        for e in 1..=4 {
            insert(&conn, e, e * 1000);
        }
        let tx = conn.transaction().expect("tx");
        advance(&tx, SINK_SURGARD, 3, 0).expect("cursor");
        advance(&tx, SINK_SURGARD, 1, 0).expect("never back");
        advance(&tx, SINK_FILE, 2, 0).expect("cursor");
        // Both cursors count: only rows both passed (1, 2) that are old enough (< 2000 ms: 1).
        assert_eq!(prune(&tx, &[SINK_SURGARD, SINK_FILE], 2000).expect("prune"), 1);
        assert_eq!(prune(&tx, &[SINK_SURGARD, SINK_FILE], 10_000).expect("prune"), 1);
        assert_eq!(cursor(&tx, SINK_SURGARD).expect("c"), 3);
        advance(&tx, SINK_FILE, 4, 0).expect("cursor");
        advance(&tx, SINK_SURGARD, 4, 0).expect("cursor");
        assert_eq!(prune(&tx, &[SINK_SURGARD, SINK_FILE], 10_000).expect("prune"), 2);
        assert_eq!(bounds(&tx).expect("bounds"), None, "empty");
        tx.commit().expect("commit");
        // An empty table does not hand out ids the cursors have passed.
        assert_eq!(insert(&conn, 5, 5000), 5);
        assert_eq!(rows_after(&conn, 4, 10).expect("rows").len(), 1);
        assert_eq!(count_after(&conn, 4).expect("count"), 1);
    }

    #[test]
    fn json_has_the_schema_version_and_the_event() {
        let ev = &events(Token::AdmCid, "#1234|1130 01 003")[0];
        let mut r = FrameRecord::new(
            1_768_478_400_000,
            crate::store::writer::Transport::Tcp,
            "127.0.0.1:1".into(),
            Vec::new(),
            Outcome::Accepted,
        );
        r.token = Some("ADM-CID".into());
        r.account_id = Some(7);
        let j = event_json(ev, &r, 42, Some(9));
        let line = stream_line(5, &j);
        assert!(line.ends_with('\n'));
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).expect("json");
        assert_eq!(v["version"], 1);
        assert_eq!(v["type"], "event");
        assert_eq!(v["seq"], 5);
        let e = &v["event"];
        assert_eq!((e["event_id"].as_i64(), e["frame_id"].as_i64()), (Some(42), Some(9)));
        assert_eq!(e["code"], "130");
        assert_eq!(e["code_format"], "cid");
        assert_eq!(e["qualifier"], "new");
        assert_eq!(e["category"], "burglary");
        assert_eq!(e["zone"], "003");
        assert_eq!(e["area"], "01");
        assert_eq!(e["received"], "2026-01-15T12:00:00.000Z");
        assert_eq!(e["input"], "ADM-CID");
    }
}
