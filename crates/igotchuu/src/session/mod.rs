//! One backup, start to end, as a user would tell it: repair what crashed runs left
//! ([`recovery`]), take the snapshots and mount them, run restic, clean up ([`pipeline`], which
//! owns the order), and leave a record of how it went ([`record`]).
//!
//! The commands above (`backup`, `cleanup`, the daemon's child) set a session up: root, the
//! lock, the namespace, where events go. The libraries below do each stage's work without
//! knowing the order: snapshot/, restic/, state/. The plan a session follows is computed before
//! any of this (plan.rs) and lives below the libraries, not here, because the snapshot backends
//! and restic read it too: a plan inside this folder would make every library import back up.

pub mod pipeline;
pub mod record;
pub mod recovery;
