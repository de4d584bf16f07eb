//! Integrator tooling: fixture traces (what a panel sent and what we answered), replayed
//! against the receiver in-process on a virtual clock (fully deterministic) and compared byte
//! for byte, with the differing fields named; and the expected outcome (events, alarms). The
//! trace format itself is [`crate::trace`], below both this and the receiver's recorder.
//!
//! | module | what |
//! |---|---|
//! | [`run`] | the in-process runner: temporary database, manual clock, seeded pads |
//! | [`diff`] | response comparison: encrypted responses on their decrypted content |
//! | [`outcome`] | the expected-outcome document: frames, events, alarms, sites |
//! | [`target`] | replay against a running daemon: frames re-stamped to the real clock |
//! | [`suite`] | many traces: collect, run, bless, report (text, JSON, JUnit XML) |
//! | [`side`] | the Contact ID input and the Sur-Gard output in traces (`@transport cid-tcp`, `cid-udp`, `automation`) |

pub mod diff;
pub mod outcome;
pub mod run;
pub mod side;
pub mod suite;
pub mod target;
