//! Command implementations. `main.rs` parses arguments; these functions do the work and return
//! errors that `main` prints with their cause chain.

pub mod archive;
pub mod audit;
pub mod backup;
pub mod code;
pub mod customer;
pub mod operator;
pub mod parse;
pub mod replay;
pub mod send;
pub mod serve;
pub mod service;
pub mod store;
