//! meldkamer: an event-processing daemon for alarm receiving centres.
//!
//! Module map (dependencies point downward only):
//!
//! | module | responsibility |
//! |---|---|
//! | [`protocol`] | bytes in, typed messages out: DC-09 framing, CRC, AES, SIA-DCS, Contact ID, code tables. Pure. |
//! | [`event`] | the protocol-independent event model |
//! | [`cli`] | the command implementations behind `main.rs` |
//!
//! Invariants (see `README.md`): an event is acknowledged only after it is committed; a
//! retransmission never becomes a second event; no input crashes, hangs or wedges the daemon;
//! secrets never reach logs, errors, `Debug`, APIs, exports or fixtures; time is injected.

#![forbid(unsafe_code)]

pub mod cli;
pub mod event;
pub mod protocol;
