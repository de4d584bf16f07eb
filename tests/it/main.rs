//! All integration tests in one binary (one link step, shared helpers).

mod protocol_props;
mod protocol_sweep;
mod vectors;
