//! All integration tests in one binary (one link step, shared helpers).

mod at_rest;
mod audit;
mod automation;
mod backup;
mod bench;
mod cid_ip;
mod common;
mod console;
mod console_e2e;
mod crash;
mod disk_full;
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
mod service;
mod shift;
mod vectors;
mod verify;
