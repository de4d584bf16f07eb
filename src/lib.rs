//! meldkamer: an event-processing daemon for alarm receiving centres.
//!
//! Module map (dependencies point downward only):
//!
//! | module | responsibility |
//! |---|---|
//! | [`protocol`] | bytes in, typed messages out: DC-09 framing, CRC, AES, SIA-DCS, Contact ID, code tables. Pure. |
//! | [`event`] | the protocol-independent event model |
//! | [`trace`] | the fixture trace format (what a panel sent, what it was answered): read by [`replay`], written by the receiver's recorder (`serve --record`) |
//! | [`correlate`] | events → alarms: customer records, priorities, alarm states, supervision |
//! | [`admission`] | who may connect: the one accept path of every stream listener, connection caps, the descriptor budget |
//! | [`receiver`] | TCP and UDP listeners, limits, the response policy applied per frame; the Contact ID input (Sur-Gard, Lupusec, DC-05 framings) |
//! | [`automation`] | the durable outbox, the Sur-Gard output to automation software, the JSON Lines event stream |
//! | [`store`] | SQLite schema and migrations, the single writer with group commit, accounts; PostgreSQL being built ([`store::pg`]: schema, copy, checks) |
//! | [`records`] | records files (`meldkamer import`): validation and atomic, idempotent import |
//! | [`replay`] | fixture traces replayed in-process on a virtual clock; byte-exact diffs |
//! | [`daemon`] | `serve`: wiring, account reload, metrics endpoint, graceful shutdown |
//! | [`reload`] | `systemctl reload` (SIGHUP): settings compared and the live ones applied, records files imported again |
//! | [`service`] | the service manager (systemd): readiness, reload and stop notices, the watchdog |
//! | [`view`] | read-side views for people: the customer card |
//! | [`operator`] | operator accounts and the authenticated operator API (Unix socket / TLS) |
//! | [`console`] | the operators' terminal UI (ratatui), talking only to the operator API |
//! | [`config`] | the TOML configuration and its embedded, commented default |
//! | [`clock`] | injected time |
//! | [`keyfile`] | key files (pepper, audit key, account keys key): 32 random bytes, owner-only |
//! | [`hardening`] | files created owner-only, the umask, no core dumps |
//! | [`metrics`] | Prometheus counters and histograms |
//! | [`verify`] | phone cancellation codes: Argon2id verifiers with a pepper, verification on an open alarm, lockout, duress, the hash-chained audit log |
//! | [`release`] | support status of this release (end of life says so at start-up and in `--version`) |
//! | [`loadgen`] | `meldkamer bench`: the load generator (DC-09, Contact ID, ARC scenarios), the measuring instrument of `BENCHMARKS.md` |
//! | [`cli`] | the command implementations behind `main.rs` |
//!
//! Invariants (see `README.md`): an event is acknowledged only after it is committed; a
//! retransmission never becomes a second event; no input crashes, hangs or wedges the daemon;
//! secrets never reach logs, errors, `Debug`, APIs, exports or fixtures; time is injected.

#![forbid(unsafe_code)]

pub mod admission;
pub mod automation;
pub mod cli;
pub mod clock;
pub mod config;
pub mod console;
pub mod correlate;
pub mod daemon;
pub mod event;
pub mod hardening;
pub mod keyfile;
pub mod loadgen;
pub mod metrics;
pub mod operator;
pub mod protocol;
pub mod receiver;
pub mod records;
pub mod release;
pub mod reload;
pub mod replay;
pub mod service;
pub mod store;
pub mod trace;
pub mod verify;
pub mod view;
