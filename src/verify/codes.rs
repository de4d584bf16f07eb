//! The code itself as a secret type, the rules a new code must pass, generation, and the
//! write-only operations on stored verifiers: set, reset, bulk invalidation. There is no
//! operation that reads a code back: none can exist, only verifiers are stored.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::audit::{self, AuditRecord};
use super::hash::NewVerifier;
use crate::store::StoreError;

/// Shortest code accepted.
pub const MIN_DIGITS: usize = 6;
/// Longest code accepted (Argon2 could take more; a phone code is spoken).
pub const MAX_LEN: usize = 64;
/// Digits of a generated code.
pub const GENERATED_DIGITS: usize = 6;

/// A phone cancellation or duress code, or a candidate for one. Deliberately without `Debug`,
/// `Display`, `Clone`, `Serialize` or comparison: the only ways out are hashing it and, for a
/// code the system generated, [`Code::reveal_generated`]. The buffer is zeroed when dropped.
pub struct Code(SecretString);

impl Code {
    /// Wrap a code as typed or spoken. Spaces, dashes and dots are dropped ("48 39 20" is
    /// 483920); the original buffer is zeroed.
    pub fn new(raw: impl Into<String>) -> Code {
        let raw = Zeroizing::new(raw.into());
        let mut norm = String::with_capacity(raw.len());
        for c in raw.chars() {
            if !(c.is_whitespace() || c == '-' || c == '.') {
                norm.push(c);
            }
        }
        Code(SecretString::from(norm))
    }

    /// For hashing only.
    pub(crate) fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.expose().chars().count()
    }

    /// Empty.
    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }

    /// Equal to another code, in constant time for equal lengths.
    pub fn same_as(&self, other: &Code) -> bool {
        use subtle::ConstantTimeEq;
        bool::from(self.expose().as_bytes().ct_eq(other.expose().as_bytes()))
    }

    /// A random code of `digits` digits from the operating system's CSPRNG, avoiding weak ones.
    pub fn generate(digits: usize, accounts: &[String]) -> Result<Code, super::hash::HashError> {
        let digits = digits.max(MIN_DIGITS);
        loop {
            let mut s = Zeroizing::new(String::with_capacity(digits));
            let mut buf = Zeroizing::new([0u8; 64]);
            while s.len() < digits {
                getrandom::fill(buf.as_mut_slice()).map_err(|_| super::hash::HashError::Random)?;
                for b in buf.iter() {
                    // 250 = 25 × 10: rejection sampling keeps every digit equally likely.
                    if *b < 250 && s.len() < digits {
                        s.push(char::from(b'0' + b % 10));
                    }
                }
            }
            let code = Code::new(s.as_str());
            if weakness(&code, accounts).is_none() {
                return Ok(code);
            }
        }
    }

    /// The one moment a code is shown: a code the system just generated, printed once for the
    /// person who hands it to the keyholder.
    pub fn reveal_generated(&self) -> &str {
        self.expose()
    }
}

/// Why a code is refused. Never contains the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Weakness {
    /// Fewer than six digits.
    #[error("a code has at least {MIN_DIGITS} digits")]
    TooShort,
    /// Too long to be a phone code.
    #[error("a code has at most {MAX_LEN} digits")]
    TooLong,
    /// Not digits only.
    #[error("a code has digits only")]
    NotDigits,
    /// One digit repeated.
    #[error("a code may not repeat one digit")]
    Repeated,
    /// 123456, 987654, 890123…
    #[error("a code may not be a run of ascending or descending digits")]
    Run,
    /// 121212, 123123…: a short pattern repeated.
    #[error("a code may not be a short pattern repeated")]
    Pattern,
    /// The customer's account number, or part of it.
    #[error("a code may not be (part of) an account number of the customer")]
    AccountNumber,
}

/// The first reason `code` is too weak to set, if any. `accounts`: the transmitter account
/// numbers of the contact's customer.
pub fn weakness(code: &Code, accounts: &[String]) -> Option<Weakness> {
    let s = code.expose();
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Weakness::NotDigits);
    }
    let d = s.as_bytes();
    if d.len() < MIN_DIGITS {
        return Some(Weakness::TooShort);
    }
    if d.len() > MAX_LEN {
        return Some(Weakness::TooLong);
    }
    if d.iter().all(|b| *b == d[0]) {
        return Some(Weakness::Repeated);
    }
    let step = |a: u8, b: u8| (i16::from(b) - i16::from(a)).rem_euclid(10);
    let first = step(d[0], d[1]);
    if (first == 1 || first == 9) && d.windows(2).all(|w| step(w[0], w[1]) == first) {
        return Some(Weakness::Run);
    }
    for period in 2..=d.len() / 2 {
        if d.len().is_multiple_of(period) && d.chunks(period).all(|c| c == &d[..period]) {
            return Some(Weakness::Pattern);
        }
    }
    for acct in accounts {
        let a = acct.trim();
        if a.is_empty() {
            continue;
        }
        if a.contains(s) || (a.len() >= 4 && s.contains(a)) {
            return Some(Weakness::AccountNumber);
        }
    }
    None
}

/// Which code of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The phone cancellation code.
    Cancel,
    /// The duress code: verifies as "accepted" to the caller, silently escalates the alarm.
    Duress,
}

impl Kind {
    /// Stored name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Cancel => "cancel",
            Kind::Duress => "duress",
        }
    }

    /// The other kind.
    pub fn other(&self) -> Kind {
        match self {
            Kind::Cancel => Kind::Duress,
            Kind::Duress => Kind::Cancel,
        }
    }
}

/// A contact as the code operations see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactRef {
    /// Row id.
    pub id: i64,
    /// The ARC's reference.
    pub reference: String,
    /// Customer row id.
    pub customer_id: i64,
    /// Customer reference.
    pub customer: String,
    /// May cancel by phone.
    pub may_cancel: bool,
}

/// A contact by its reference.
pub fn contact_by_ref(conn: &Connection, reference: &str) -> Result<Option<ContactRef>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT k.id, k.ref, k.customer_id, c.ref, k.may_cancel
             FROM contacts k JOIN customers c ON c.id = k.customer_id WHERE k.ref = ?1",
            params![reference],
            |r| {
                Ok(ContactRef {
                    id: r.get(0)?,
                    reference: r.get(1)?,
                    customer_id: r.get(2)?,
                    customer: r.get(3)?,
                    may_cancel: r.get(4)?,
                })
            },
        )
        .optional()?)
}

/// The transmitter account numbers of a customer (for the weak-code rule).
pub fn accounts_of_customer(conn: &Connection, customer_id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT DISTINCT a.account FROM accounts a JOIN sites s ON s.id = a.site_id WHERE s.customer_id = ?1
         ORDER BY a.account",
    )?;
    let v = stmt
        .query_map(params![customer_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok(v)
}

/// The stored verifier of a contact's code, if any.
pub fn stored(conn: &Connection, contact_id: i64, kind: Kind) -> Result<Option<super::hash::Stored>, StoreError> {
    Ok(conn
        .query_row(
            "SELECT argon2_phc, pepper_id FROM code_verifiers WHERE contact_id = ?1 AND kind = ?2",
            params![contact_id, kind.as_str()],
            |r| {
                Ok(super::hash::Stored {
                    phc: r.get(0)?,
                    pepper_id: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// Store a new verifier (replacing the old one, which is not archived) and audit it.
pub fn store_verifier(
    tx: &Transaction<'_>,
    contact: &ContactRef,
    kind: Kind,
    v: &NewVerifier,
    actor: &str,
    how: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO code_verifiers (contact_id, kind, argon2_phc, pepper_id, set_ms, set_by, invalidated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, NULL)
         ON CONFLICT (contact_id, kind) DO UPDATE SET argon2_phc = excluded.argon2_phc,
             pepper_id = excluded.pepper_id, set_ms = excluded.set_ms, set_by = excluded.set_by,
             invalidated_ms = NULL",
        params![contact.id, kind.as_str(), v.phc, v.pepper_id, now, actor],
    )?;
    audit::append(
        tx,
        now,
        &AuditRecord {
            actor,
            action: "code_set",
            subject: &format!("contact:{}", contact.reference),
            detail: &format!("customer:{} kind:{} {how}", contact.customer, kind.as_str()),
            result: "ok",
            failures: None,
        },
    )?;
    Ok(())
}

/// What a reset did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetReport {
    /// Verifiers removed.
    pub removed: usize,
    /// The customer's phone cancellation was locked by this contact and is now unlocked.
    pub unlocked: bool,
    /// The customer stays locked (by another contact's failures).
    pub still_locked_by: Option<String>,
}

/// Remove a contact's codes (both kinds, not archived), clear its failure counter and lift
/// the customer's lockout if this contact caused it. A supervisor action; audited.
pub fn reset(tx: &Transaction<'_>, contact: &ContactRef, actor: &str, now: i64) -> Result<ResetReport, StoreError> {
    let removed = tx.execute("DELETE FROM code_verifiers WHERE contact_id = ?1", params![contact.id])?;
    let failures: Option<i64> = tx
        .query_row(
            "SELECT consecutive FROM code_failures WHERE contact_id = ?1",
            params![contact.id],
            |r| r.get(0),
        )
        .optional()?;
    tx.execute("DELETE FROM code_failures WHERE contact_id = ?1", params![contact.id])?;
    let lock: Option<Option<i64>> = tx
        .query_row(
            "SELECT contact_id FROM code_lockouts WHERE customer_id = ?1",
            params![contact.customer_id],
            |r| r.get(0),
        )
        .optional()?;
    let mut report = ResetReport {
        removed,
        unlocked: false,
        still_locked_by: None,
    };
    match lock {
        Some(by) if by.is_none() || by == Some(contact.id) => {
            tx.execute(
                "DELETE FROM code_lockouts WHERE customer_id = ?1",
                params![contact.customer_id],
            )?;
            tx.execute(
                "DELETE FROM code_failures_foreign WHERE customer_id = ?1",
                params![contact.customer_id],
            )?;
            report.unlocked = true;
        }
        Some(Some(other)) => {
            report.still_locked_by = tx
                .query_row("SELECT ref FROM contacts WHERE id = ?1", params![other], |r| r.get(0))
                .optional()?;
        }
        _ => {}
    }
    let subject = format!("contact:{}", contact.reference);
    audit::append(
        tx,
        now,
        &AuditRecord {
            actor,
            action: "code_reset",
            subject: &subject,
            detail: &format!("customer:{} verifiers_removed:{removed}", contact.customer),
            result: "ok",
            failures,
        },
    )?;
    if report.unlocked {
        audit::append(
            tx,
            now,
            &AuditRecord {
                actor,
                action: "code_unlock",
                subject: &format!("customer:{}", contact.customer),
                detail: &format!("by resetting {subject}"),
                result: "ok",
                failures: None,
            },
        )?;
    }
    Ok(report)
}

/// Which codes a bulk invalidation covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// Every code.
    All,
    /// The codes of one customer's contacts.
    Customer(String),
    /// The codes of the contacts of every customer with a site that has this transmitter.
    Account(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::All => write!(f, "all"),
            Selector::Customer(c) => write!(f, "customer:{c}"),
            Selector::Account(a) => write!(f, "account:{a}"),
        }
    }
}

/// What a bulk invalidation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InvalidateReport {
    /// Codes newly invalidated.
    pub codes: usize,
    /// Contacts affected.
    pub contacts: usize,
}

/// Invalidate every code the selector covers: each answers "invalidated, use call-back" until
/// it is set again. One audit record per contact and one for the whole operation.
pub fn invalidate(
    tx: &Transaction<'_>,
    selector: &Selector,
    actor: &str,
    now: i64,
) -> Result<InvalidateReport, StoreError> {
    // The selector's value is always ?2 (?1 is the time in the update).
    let (filter, arg): (&str, Option<String>) = match selector {
        Selector::All => ("1", None),
        Selector::Customer(c) => (
            "v.contact_id IN (SELECT k.id FROM contacts k JOIN customers c ON c.id = k.customer_id WHERE c.ref = ?2)",
            Some(c.clone()),
        ),
        Selector::Account(a) => (
            "v.contact_id IN (SELECT k.id FROM contacts k JOIN sites s ON s.customer_id = k.customer_id
                              JOIN accounts a ON a.site_id = s.id WHERE a.account = ?2)",
            Some(crate::correlate::norm_number(a)),
        ),
    };
    let mut binds: Vec<rusqlite::types::Value> = vec![now.into()];
    if let Some(a) = &arg {
        binds.push(a.clone().into());
    }
    let select = format!(
        "SELECT k.ref, c.ref, count(*) FROM code_verifiers v JOIN contacts k ON k.id = v.contact_id
         JOIN customers c ON c.id = k.customer_id
         WHERE ?1 IS NOT NULL AND v.invalidated_ms IS NULL AND ({filter}) GROUP BY k.id ORDER BY k.ref"
    );
    let affected: Vec<(String, String, i64)> = tx
        .prepare(&select)?
        .query_map(rusqlite::params_from_iter(binds.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;
    let update =
        format!("UPDATE code_verifiers AS v SET invalidated_ms = ?1 WHERE v.invalidated_ms IS NULL AND ({filter})");
    let codes = tx.execute(&update, rusqlite::params_from_iter(binds.iter()))?;
    for (contact, customer, n) in &affected {
        audit::append(
            tx,
            now,
            &AuditRecord {
                actor,
                action: "code_invalidated",
                subject: &format!("contact:{contact}"),
                detail: &format!("customer:{customer} codes:{n} bulk:{selector}"),
                result: "ok",
                failures: None,
            },
        )?;
    }
    let report = InvalidateReport {
        codes,
        contacts: affected.len(),
    };
    audit::append(
        tx,
        now,
        &AuditRecord {
            actor,
            action: "code_bulk_invalidate",
            subject: &selector.to_string(),
            detail: &format!("codes:{} contacts:{}", report.codes, report.contacts),
            result: "ok",
            failures: None,
        },
    )?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weak(s: &str) -> Option<Weakness> {
        weakness(&Code::new(s), &["1234".to_string(), "7394015".to_string()])
    }

    #[test]
    fn weak_codes_are_refused() {
        assert_eq!(weak("12345"), Some(Weakness::TooShort));
        assert_eq!(weak("58394a"), Some(Weakness::NotDigits));
        assert_eq!(weak("000000"), Some(Weakness::Repeated));
        assert_eq!(weak("123456"), Some(Weakness::Run));
        assert_eq!(weak("654321"), Some(Weakness::Run));
        assert_eq!(weak("890123"), Some(Weakness::Run));
        assert_eq!(weak("121212"), Some(Weakness::Pattern));
        assert_eq!(weak("123123"), Some(Weakness::Pattern));
        assert_eq!(weak("561234"), Some(Weakness::AccountNumber), "contains account 1234");
        assert_eq!(weak("394015"), Some(Weakness::AccountNumber), "part of account 7394015");
        assert_eq!(weak("7394015"), Some(Weakness::AccountNumber));
        assert_eq!(weak("583947"), None);
        assert_eq!(weak("58 39 47"), None, "spaces are dropped");
        assert_eq!(weak("1234567890123"), Some(Weakness::Run));
        assert_eq!(weak(&"9".repeat(100)), Some(Weakness::TooLong));
    }

    #[test]
    fn weakness_messages_never_contain_the_code() {
        for s in ["12", "abcdef", "777777", "234567", "343434", "561234"] {
            let w = weak(s).expect("weak");
            assert!(!w.to_string().contains(s), "{w}");
        }
    }

    #[test]
    fn generated_codes_are_six_random_strong_digits() {
        let accounts = vec!["1234".to_string()];
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let c = Code::generate(GENERATED_DIGITS, &accounts).expect("generate");
            assert_eq!(c.len(), 6);
            assert!(weakness(&c, &accounts).is_none());
            seen.insert(c.reveal_generated().to_string());
        }
        assert!(seen.len() > 190, "random: {} distinct of 200", seen.len());
    }

    /// Compiles only while `T` implements none of the traits named: the inference of `_`
    /// becomes ambiguous as soon as one of them is implemented (static_assertions' trick).
    macro_rules! assert_not_impl {
        ($t:ty: $($tr:path),+) => {{
            trait AmbiguousIfImpl<A> {
                fn check() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            $({
                #[allow(dead_code)]
                struct Invalid;
                impl<T: ?Sized + $tr> AmbiguousIfImpl<Invalid> for T {}
            })+
            let _ = <$t as AmbiguousIfImpl<_>>::check;
        }};
    }

    #[test]
    fn secrets_cannot_be_printed_copied_or_serialised() {
        assert_not_impl!(Code: std::fmt::Debug);
        assert_not_impl!(Code: std::fmt::Display);
        assert_not_impl!(Code: Clone);
        assert_not_impl!(Code: serde::Serialize);
        assert_not_impl!(crate::verify::hash::Pepper: std::fmt::Debug);
        assert_not_impl!(crate::verify::hash::Pepper: Clone);
        assert_not_impl!(crate::verify::hash::Hasher: std::fmt::Debug);
    }

    #[test]
    fn same_as_compares_codes() {
        assert!(Code::new("583947").same_as(&Code::new("583 947")));
        assert!(!Code::new("583947").same_as(&Code::new("583948")));
        assert!(!Code::new("583947").same_as(&Code::new("5839470")));
    }
}
