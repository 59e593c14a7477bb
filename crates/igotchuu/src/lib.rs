//! igotchuu as a library: the whole tool but `main`, so the integration tests (and a future
//! daemon or client crate) can call the config loader, the plan and the formatters in-process,
//! without root and without the binary.

#[macro_use]
pub mod out;

pub mod args;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dbus;
pub mod events;
pub mod exit;
pub mod format;
pub mod hook;
pub mod journal;
pub mod journald;
pub mod lock;
pub mod metrics;
pub mod namespace;
pub mod notify;
pub mod ops_cmd;
pub mod ops_state;
pub mod pipeline;
pub mod plan;
pub mod record;
pub mod recovery;
pub mod redact;
pub mod restic;
pub mod retention;
pub mod safe_fs;
pub mod sanitize;
pub mod schedule;
pub mod scope;
pub mod snapshot;
pub mod status;
pub mod status_cmd;
pub mod stop;
pub mod terminal;
pub mod trust;
pub mod verify;
pub mod watch;
