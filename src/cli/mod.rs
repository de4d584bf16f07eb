//! Command implementations. `main.rs` parses arguments; these functions do the work and return
//! errors that `main` prints with their cause chain.

pub mod bench;
pub mod customer;
pub mod parse;
pub mod serve;
