//! Read-side views for people: a customer card (customer, site, transmitters, zones, panel
//! users, contacts in call order, procedures, open alarms). Used by `meldkamer customer show`
//! and the operator API. Nothing here can contain a secret: keys are described by size and
//! format only, and there is no code of any kind to show.

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::clock::rfc3339_ms;
use crate::store::writer::{SEEN_COLUMN, SEEN_PENDING};

/// One transmitter path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransmitterView {
    /// Account number.
    pub account: String,
    /// Receiver ("" = any).
    pub receiver: String,
    /// Line ("" = any).
    pub line: String,
    /// Path name.
    pub path: String,
    /// "plain", or e.g. "AES-128 (hex key), encryption required".
    pub encryption: String,
    /// Supervision, e.g. "SP5: 90 s" or "none".
    pub supervision: String,
    /// Last valid traffic.
    pub last_seen: Option<String>,
    /// Quirks enabled.
    pub quirks: Vec<String>,
    /// Enabled.
    pub enabled: bool,
}

/// A zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneView {
    /// Number.
    pub number: String,
    /// Description.
    pub description: String,
    /// Type.
    pub zone_type: String,
}

/// A panel user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserView {
    /// Number.
    pub number: String,
    /// Name.
    pub name: String,
    /// Role.
    pub role: String,
}

/// A contact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContactView {
    /// Opaque id for the API.
    pub id: String,
    /// Name.
    pub name: String,
    /// Phone numbers.
    pub phones: Vec<String>,
    /// Call order.
    pub call_order: i64,
    /// May cancel by phone.
    pub may_cancel: bool,
}

/// Procedure steps for one category.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcedureView {
    /// Category.
    pub category: String,
    /// Steps in order.
    pub steps: Vec<String>,
    /// The numbers (1-based) of the steps that must be done, or the reason given, before a
    /// close.
    #[serde(default)]
    pub mandatory: Vec<u32>,
    /// The customer's own procedure (else the default set).
    pub customer_specific: bool,
}

/// A customer card for one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerCard {
    /// Customer reference.
    pub customer_ref: String,
    /// Customer name.
    pub customer_name: String,
    /// Notes.
    pub customer_notes: String,
    /// Site reference.
    pub site_ref: String,
    /// Site name.
    pub site_name: String,
    /// "street, postcode city".
    pub address: String,
    /// For responders.
    pub responder_notes: String,
    /// Armed state, with who and when.
    pub armed: String,
    /// When the armed state last changed, Unix ms (the time in `armed`, for a reader that
    /// shows it in its own time zone).
    #[serde(default)]
    pub armed_ms: Option<i64>,
    /// Transmitters of the site.
    pub transmitters: Vec<TransmitterView>,
    /// Zones.
    pub zones: Vec<ZoneView>,
    /// Panel users.
    pub users: Vec<UserView>,
    /// Contacts in call order.
    pub contacts: Vec<ContactView>,
    /// Procedures that apply.
    pub procedures: Vec<ProcedureView>,
}

fn transmitters(conn: &Connection, where_sql: &str, p: &dyn rusqlite::ToSql) -> rusqlite::Result<Vec<TransmitterView>> {
    // A sealed key is longer than the key by its nonce and tag.
    const OVERHEAD: usize = crate::store::sealed::OVERHEAD;
    let sql = format!(
        "WITH {SEEN_PENDING}
         SELECT a.account, a.receiver, a.line, a.path, a.dc09_key IS NOT NULL,
                length(a.dc09_key) - CASE WHEN a.key_sealed = 1 THEN {OVERHEAD} ELSE 0 END, a.key_format,
                a.require_encryption, a.ats_category, a.supervision_secs, {SEEN_COLUMN},
                a.quirk_crc_binary, a.quirk_cr_in_crc, a.quirk_trailing_nul, a.enabled
         FROM accounts a LEFT JOIN account_status st ON st.account_id = a.id
              LEFT JOIN seen_pending sp ON sp.account_id = a.id
         WHERE {where_sql}
         ORDER BY a.account, a.path, a.receiver, a.line"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([p], |r| {
        let keyed: bool = r.get(4)?;
        let encryption = if keyed {
            format!(
                "AES-{} ({} key){}",
                r.get::<_, i64>(5)? * 8,
                r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                if r.get::<_, bool>(7)? {
                    ", encryption required"
                } else {
                    ", plain also accepted"
                }
            )
        } else {
            "plain".to_string()
        };
        let cat: Option<String> = r.get(8)?;
        let secs: Option<i64> = r.get(9)?;
        let path: String = r.get(3)?;
        let supervision = match (secs, &cat) {
            (Some(s), _) => format!("every {s} s"),
            (None, Some(c)) => {
                let s = crate::correlate::supervision::ats_reporting_secs(c, path == "secondary").unwrap_or(0);
                format!("{c}: every {s} s")
            }
            (None, None) => "none".to_string(),
        };
        let mut quirks = Vec::new();
        if r.get::<_, bool>(11)? {
            quirks.push("crc_binary".to_string());
        }
        if r.get::<_, bool>(12)? {
            quirks.push("cr_in_crc".to_string());
        }
        if r.get::<_, bool>(13)? {
            quirks.push("trailing_nul".to_string());
        }
        Ok(TransmitterView {
            account: r.get(0)?,
            receiver: r.get(1)?,
            line: r.get(2)?,
            path,
            encryption,
            supervision,
            last_seen: r.get::<_, Option<i64>>(10)?.map(rfc3339_ms),
            quirks,
            enabled: r.get(14)?,
        })
    })?;
    rows.collect()
}

/// The card of a site.
pub fn customer_card(conn: &Connection, site_id: i64) -> rusqlite::Result<Option<CustomerCard>> {
    let head = conn
        .query_row(
            "SELECT c.ref, c.name, c.notes, s.ref, s.name, s.address, s.postcode, s.city, s.responder_notes,
                    s.armed_state, s.armed_changed_ms, s.armed_by_user, c.id
             FROM sites s JOIN customers c ON c.id = s.customer_id WHERE s.id = ?1",
            params![site_id],
            |r| {
                let armed_state: String = r.get(9)?;
                let when: Option<i64> = r.get(10)?;
                let by: Option<String> = r.get(11)?;
                let armed = match (when, by) {
                    (Some(t), Some(u)) => format!("{armed_state} by user {u} at {}", rfc3339_ms(t)),
                    (Some(t), None) => format!("{armed_state} at {}", rfc3339_ms(t)),
                    _ => armed_state,
                };
                let pc: String = r.get(6)?;
                let city: String = r.get(7)?;
                let street: String = r.get(5)?;
                let address = [street, format!("{pc} {city}").trim().to_string()]
                    .into_iter()
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(", ");
                Ok((
                    CustomerCard {
                        customer_ref: r.get(0)?,
                        customer_name: r.get(1)?,
                        customer_notes: r.get(2)?,
                        site_ref: r.get(3)?,
                        site_name: r.get(4)?,
                        address,
                        responder_notes: r.get(8)?,
                        armed,
                        armed_ms: when,
                        transmitters: Vec::new(),
                        zones: Vec::new(),
                        users: Vec::new(),
                        contacts: Vec::new(),
                        procedures: Vec::new(),
                    },
                    r.get::<_, i64>(12)?,
                ))
            },
        )
        .optional()?;
    let Some((mut card, customer_id)) = head else {
        return Ok(None);
    };
    card.transmitters = transmitters(conn, "a.site_id = ?1", &site_id)?;
    let mut stmt = conn.prepare(
        "SELECT number, description, zone_type FROM zones WHERE site_id = ?1 ORDER BY CAST(number AS INTEGER), number",
    )?;
    card.zones = stmt
        .query_map(params![site_id], |r| {
            Ok(ZoneView {
                number: r.get(0)?,
                description: r.get(1)?,
                zone_type: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut stmt = conn.prepare(
        "SELECT number, name, role FROM panel_users WHERE site_id = ?1 ORDER BY CAST(number AS INTEGER), number",
    )?;
    card.users = stmt
        .query_map(params![site_id], |r| {
            Ok(UserView {
                number: r.get(0)?,
                name: r.get(1)?,
                role: r.get(2)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    card.contacts = contacts(conn, customer_id)?;
    card.procedures = procedures(conn, customer_id)?;
    Ok(Some(card))
}

/// Contacts of a customer in call order.
pub fn contacts(conn: &Connection, customer_id: i64) -> rusqlite::Result<Vec<ContactView>> {
    let mut stmt = conn.prepare(
        "SELECT public_id, name, phones, call_order, may_cancel FROM contacts WHERE customer_id = ?1
         ORDER BY call_order, name",
    )?;
    stmt.query_map(params![customer_id], |r| {
        let phones: String = r.get(2)?;
        Ok(ContactView {
            id: r.get(0)?,
            name: r.get(1)?,
            phones: serde_json::from_str(&phones).unwrap_or_default(),
            call_order: r.get(3)?,
            may_cancel: r.get(4)?,
        })
    })?
    .collect()
}

/// The procedures that apply to a customer: its own per category, else the default set.
pub fn procedures(conn: &Connection, customer_id: i64) -> rusqlite::Result<Vec<ProcedureView>> {
    let mut stmt = conn.prepare(
        "SELECT category, step, instruction, customer_id IS NOT NULL, mandatory FROM procedure_steps
         WHERE customer_id = ?1
            OR (customer_id IS NULL AND category NOT IN (SELECT category FROM procedure_steps WHERE customer_id = ?1))
         ORDER BY category, step",
    )?;
    let mut out: Vec<ProcedureView> = Vec::new();
    for row in stmt.query_map(params![customer_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, bool>(4)?,
        ))
    })? {
        let (category, step, own, mandatory) = row?;
        let p = match out.last_mut() {
            Some(p) if p.category == category => p,
            _ => {
                out.push(ProcedureView {
                    category,
                    steps: Vec::new(),
                    mandatory: Vec::new(),
                    customer_specific: own,
                });
                out.last_mut().expect("just pushed")
            }
        };
        p.steps.push(step);
        if mandatory {
            p.mandatory.push(p.steps.len() as u32);
        }
    }
    Ok(out)
}

/// The sites an account number belongs to, and its transmitters without a site.
pub fn sites_of_account(conn: &Connection, account: &str) -> rusqlite::Result<(Vec<i64>, Vec<TransmitterView>)> {
    let mut stmt = conn.prepare("SELECT DISTINCT site_id FROM accounts WHERE account = ?1 AND site_id IS NOT NULL")?;
    let sites: Vec<i64> = stmt
        .query_map(params![account], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let orphans = transmitters(conn, "a.account = ?1 AND a.site_id IS NULL", &account)?;
    Ok((sites, orphans))
}

/// Render a card as text for a terminal.
pub fn render_card(c: &CustomerCard) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Customer {}  {}", c.customer_ref, c.customer_name);
    if !c.customer_notes.is_empty() {
        let _ = writeln!(s, "  Notes: {}", c.customer_notes);
    }
    let _ = writeln!(s, "Site {}  {}", c.site_ref, c.site_name);
    let _ = writeln!(s, "  Address: {}", c.address);
    if !c.responder_notes.is_empty() {
        let _ = writeln!(s, "  For responders: {}", c.responder_notes);
    }
    let _ = writeln!(s, "  Armed state: {}", c.armed);
    let _ = writeln!(s, "Transmitters");
    for t in &c.transmitters {
        let _ = writeln!(s, "  {}", render_transmitter(t));
    }
    if !c.zones.is_empty() {
        let _ = writeln!(s, "Zones");
        for z in &c.zones {
            let ty = if z.zone_type.is_empty() {
                String::new()
            } else {
                format!(" ({})", z.zone_type)
            };
            let _ = writeln!(s, "  {:>4}  {}{ty}", z.number, z.description);
        }
    }
    if !c.users.is_empty() {
        let _ = writeln!(s, "Panel users");
        for u in &c.users {
            let role = if u.role.is_empty() {
                String::new()
            } else {
                format!(" ({})", u.role)
            };
            let _ = writeln!(s, "  {:>4}  {}{role}", u.number, u.name);
        }
    }
    let _ = writeln!(s, "Contacts, in call order");
    for k in &c.contacts {
        let cancel = if k.may_cancel { "  [may cancel by phone]" } else { "" };
        let _ = writeln!(s, "  {}. {}  {}{cancel}", k.call_order, k.name, k.phones.join("; "));
    }
    if !c.procedures.is_empty() {
        let _ = writeln!(s, "Procedures");
        for p in &c.procedures {
            let own = if p.customer_specific { " (customer's own)" } else { "" };
            let _ = writeln!(s, "  {}{own}:", p.category);
            for (n, step) in (1u32..).zip(&p.steps) {
                let must = if p.mandatory.contains(&n) { " (mandatory)" } else { "" };
                let _ = writeln!(s, "    {n}. {step}{must}");
            }
        }
    }
    s
}

/// One transmitter as a line of text.
pub fn render_transmitter(t: &TransmitterView) -> String {
    let rl = match (t.receiver.is_empty(), t.line.is_empty()) {
        (true, true) => "any receiver/line".to_string(),
        _ => format!(
            "receiver {} line {}",
            if t.receiver.is_empty() { "any" } else { &t.receiver },
            if t.line.is_empty() { "any" } else { &t.line }
        ),
    };
    let seen = t.last_seen.as_deref().map_or("never".to_string(), str::to_string);
    let quirks = if t.quirks.is_empty() {
        String::new()
    } else {
        format!("; quirks: {}", t.quirks.join(", "))
    };
    let disabled = if t.enabled { "" } else { " [DISABLED]" };
    format!(
        "{}  {rl}  {} path  {}  supervision: {}  last seen: {seen}{quirks}{disabled}",
        t.account, t.path, t.encryption, t.supervision
    )
}
