//! Unattended operation around the backups (issue 18): retention (`restic forget`/`prune` on this
//! profile's snapshots, crate::scope), verification (`restic check`, a rolling subset), monitoring
//! pings and end-of-run hooks ([`notify`]), the run conditions of scheduled runs ([`conditions`]),
//! and what they leave in `state_dir/ops.json`
//! ([`state`]).
//!
//! A layer of its own between the commands and the session: `igotchuu forget`/`verify` and the
//! backup command call it, and it reaches the state directory as the session's record does
//! (session::record), so it sits above the session and below the commands.

pub mod conditions;
pub mod notify;
pub mod retention;
pub mod state;
pub mod verify;
