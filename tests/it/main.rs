//! All integration tests in one binary (one link step, shared helpers).

mod common;
mod disk_full;
mod protocol_props;
mod protocol_sweep;
mod receiver;
mod scenarios;
mod vectors;
