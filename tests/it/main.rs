//! All integration tests in one binary (one link step, shared helpers).

mod at_rest;
mod audit;
mod automation;
mod bench;
mod cid_ip;
mod cli;
mod common;
mod console;
mod console_e2e;
mod crash;
mod disk_full;
mod import;
mod listeners;
mod operator;
mod operator_authz;
mod operator_hardening;
mod operator_props;
mod protocol_props;
mod protocol_sweep;
mod receiver;
mod replay;
mod scenarios;
mod schedules;
mod shift;
mod vectors;
mod verify;
