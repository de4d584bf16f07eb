//! The verification service the daemon (and the operator API) uses: reads on a reader
//! connection, hashes on the blocking pool (at most `max_concurrent_verifications` at once,
//! since each holds `argon2_memory_kib` of memory), records through the single store writer.
//! Attempts for one customer run one at a time, so counters and the lock cannot race.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::attempt::{self, Answer, Recorded, VerifyError, VerifyRequest};
use super::codes::{self, Code, ResetReport};
use super::hash::Hasher;
use super::lockout::Limits;
use crate::clock::{Clock, unix_ms};
use crate::store::writer::WriterHandle;

/// Phone code verification for a running daemon.
pub struct CodeService {
    writer: WriterHandle,
    db: PathBuf,
    busy: Duration,
    hasher: Arc<Hasher>,
    limits: Limits,
    clock: Arc<dyn Clock>,
    permits: Arc<Semaphore>,
    customers: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl CodeService {
    /// A service writing through `writer` into the database at `db`.
    pub fn new(
        hasher: Arc<Hasher>,
        limits: Limits,
        writer: WriterHandle,
        db: PathBuf,
        busy: Duration,
        clock: Arc<dyn Clock>,
        max_concurrent: usize,
    ) -> CodeService {
        CodeService {
            writer,
            db,
            busy,
            hasher,
            limits,
            clock,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            customers: Mutex::new(HashMap::new()),
        }
    }

    /// The hasher (its computation counter is what tests read).
    pub fn hasher(&self) -> &Arc<Hasher> {
        &self.hasher
    }

    /// The thresholds in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn customer_lock(&self, customer_id: i64) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.customers.lock().unwrap_or_else(|p| p.into_inner());
        // Forget the locks nobody holds or waits for.
        m.retain(|_, l| Arc::strong_count(l) > 1);
        m.entry(customer_id).or_default().clone()
    }

    async fn load(&self, req: &VerifyRequest) -> Result<attempt::Attempt, VerifyError> {
        let (db, busy, req) = (self.db.clone(), self.busy, req.clone());
        tokio::task::spawn_blocking(move || {
            let conn = crate::store::open_read(&db, busy)?;
            attempt::load(&conn, &req)
        })
        .await
        .map_err(|_| VerifyError::Interrupted)?
    }

    /// Verify `candidate` for the request's contact on the request's open alarm. See
    /// [`attempt`] for the verdicts and their effects. An operator past
    /// [`Limits::operator_max_per_hour`] verifications within the hour is refused before
    /// anything is hashed (audited, and the supervisor alerted).
    pub async fn verify(&self, req: VerifyRequest, candidate: Code) -> Result<Recorded, VerifyError> {
        let first = self.load(&req).await?;
        self.rate_limit(&req).await?;
        let lock = self.customer_lock(first.customer_id);
        let _serial = lock.lock().await;
        // Read again: an attempt for this customer may have committed while we waited.
        let a = self.load(&req).await?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| VerifyError::Interrupted)?;
        let hasher = self.hasher.clone();
        let a2 = a.clone();
        let computed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let c = attempt::compute(&hasher, &a2, &candidate);
            drop(candidate);
            c
        })
        .await
        .map_err(|_| VerifyError::Interrupted)??;
        let now = unix_ms(self.clock.now());
        let limits = self.limits;
        self.writer
            .run(move |tx| attempt::record(tx, &req, &a, &computed, now, &limits))
            .await
            .map_err(VerifyError::Store)?
    }

    /// Refuse an operator who made [`Limits::operator_max_per_hour`] verifications within the
    /// hour; the refusal is audited and raises (or joins) a supervisor alert.
    async fn rate_limit(&self, req: &VerifyRequest) -> Result<(), VerifyError> {
        let (db, busy, op) = (self.db.clone(), self.busy, req.operator.clone());
        let now = unix_ms(self.clock.now());
        let n = tokio::task::spawn_blocking(move || {
            let conn = crate::store::open_read(&db, busy)?;
            super::lockout::operator_attempts_last_hour(&conn, &op, now)
        })
        .await
        .map_err(|_| VerifyError::Interrupted)??;
        let max = i64::from(self.limits.operator_max_per_hour);
        if n < max {
            return Ok(());
        }
        let (limits, req) = (self.limits, req.clone());
        self.writer
            .run(move |tx| {
                let op = req.operator.as_str();
                super::audit::append(
                    tx,
                    now,
                    &super::audit::AuditRecord {
                        actor: op,
                        action: "code_verify",
                        subject: "contact:not checked",
                        detail: &format!("alarm:{} channel:phone", req.alarm),
                        result: "refused: rate limited",
                        failures: Some(n),
                    },
                )?;
                super::lockout::alert_supervisor(
                    tx,
                    &format!("code-rate:operator:{op}"),
                    &format!("Operator {op}: {n} phone code verifications within an hour; further ones are refused"),
                    &format!("operator:{op}"),
                    &limits,
                    now,
                )?;
                Ok(())
            })
            .await
            .map_err(VerifyError::Store)?;
        Err(VerifyError::RateLimited(n))
    }

    /// For interfaces: verify and return only what may be shown ([`Answer`]): a duress code
    /// answers exactly like the right one. `code` is copied into a [`Code`] at once.
    pub async fn verify_public(
        &self,
        alarm: &str,
        contact: &str,
        code: &str,
        operator: &str,
    ) -> Result<Answer, VerifyError> {
        let candidate = Code::new(code);
        let req = VerifyRequest {
            alarm: alarm.to_string(),
            contact: contact.to_string(),
            operator: operator.to_string(),
        };
        self.verify(req, candidate).await.map(|v| v.verdict.answer())
    }

    /// For interfaces (supervisor role checked by the caller): remove a contact's codes by its
    /// public id and lift the customer's lockout if this contact caused it. Audited.
    pub async fn reset_public(&self, contact: &str, operator: &str) -> Result<ResetReport, ResetError> {
        if operator.trim().is_empty() {
            return Err(ResetError::NoOperator);
        }
        let (contact, operator) = (contact.to_string(), operator.to_string());
        let now = unix_ms(self.clock.now());
        self.writer
            .run(move |tx| {
                let reference: Option<String> = tx
                    .query_row("SELECT ref FROM contacts WHERE public_id = ?1", [&contact], |r| {
                        r.get(0)
                    })
                    .map(Some)
                    .or_else(|e| match e {
                        rusqlite::Error::QueryReturnedNoRows => Ok(None),
                        e => Err(e),
                    })?;
                let Some(reference) = reference else {
                    return Ok(Err(ResetError::NoContact));
                };
                let Some(c) = codes::contact_by_ref(tx, &reference)? else {
                    return Ok(Err(ResetError::NoContact));
                };
                codes::reset(tx, &c, &operator, now).map(Ok)
            })
            .await
            .map_err(ResetError::Store)?
    }
}

/// A reset that could not be done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResetError {
    /// No such contact.
    #[error("no such contact")]
    NoContact,
    /// No operator given.
    #[error("an authenticated operator is required")]
    NoOperator,
    /// The database failed.
    #[error("database error")]
    Store(#[source] Arc<crate::store::StoreError>),
}
