//! igotchuu as a library: the whole tool but `main`, so the integration tests (and a future
//! daemon or client crate) can call the config loader, the plan and the formatters in-process,
//! without root and without the binary.

#[macro_use]
pub mod out;

pub mod args;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dbus;
pub mod defaults;
pub mod escape;
pub mod events;
pub mod exit;
pub mod hook;
pub mod log;
pub mod namespace;
pub mod ops;
pub mod plan;
pub mod redact;
pub mod restic;
pub mod restore;
pub mod safe_fs;
pub mod schedule;
pub mod scope;
pub mod session;
pub mod snapshot;
pub mod state;
pub mod stop;
pub mod terminal;
pub mod trust;
pub mod users;
