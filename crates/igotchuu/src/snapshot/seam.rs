//! The seam between the runner (run.rs) and the backends (btrfs, ZFS, LVM), in the order a
//! creation step goes through it:
//!
//! 1. the backend says what it is about to make, one [`Intent`] per snapshot (a [`Batch`]),
//!    touching nothing yet;
//! 2. the runner makes each snapshot's root-only directory and journals its record, fsynced,
//!    before the snapshot can exist;
//! 3. the backend makes the snapshots, in those directories, and returns what it made
//!    ([`Made`]): each snapshot with its identity, and why it stopped if it did;
//! 4. the runner journals each identity, and tracks each snapshot for the mount step and the
//!    cleanup.
//!
//! So a backend never writes the journal, and cannot make a snapshot the journal does not name:
//! it is handed its directories only once their records are on disk. That is the crash-safety
//! guarantee every backend had on its own before (each journaled before its `create`), now kept
//! in one place.

use std::path::PathBuf;

use super::mount::Destination;
use super::name::Name;
use super::{Backend, SnapError, Snapshot};

/// One snapshot a backend is about to make: what its journal record says before it exists.
pub struct Intent {
    pub backend: Backend,
    pub name: Name,
    /// The live path it is a snapshot of, and where it is mounted.
    pub source: PathBuf,
    /// The source's identity (subvolume UUID, dataset guid, LV uuid): recovery deletes only a
    /// snapshot of it.
    pub source_id: String,
    /// The mark the backend puts on the snapshot itself (a ZFS property, an LV tag), if any.
    pub mark: Option<String>,
    pub home: Home,
}

/// Where the runner puts an intended snapshot.
pub enum Home {
    /// In a root-only directory of its own, made in this destination.
    New(Destination),
    /// In the directory of the batch's `n`th snapshot, an earlier intent of the same batch (a
    /// btrfs source's nested subvolumes go in the source's, intent 0).
    With(usize),
}

/// A backend's creation step before anything is made: its intents, each with what the backend
/// itself needs to make it (`T`), and what is mounted without a snapshot.
pub struct Batch<T> {
    pub intents: Vec<(Intent, T)>,
    /// Things that cannot change, mounted as they are (read-only nested btrfs subvolumes).
    pub live: Vec<(PathBuf, MountFrom)>,
}

impl<T> Default for Batch<T> {
    fn default() -> Self {
        Batch {
            intents: Vec::new(),
            live: Vec::new(),
        }
    }
}

/// What a backend made of a batch.
#[derive(Default)]
pub struct Made {
    /// Every snapshot that exists now, or may (a failed `lvcreate` may have made its LV): all
    /// are deleted at cleanup.
    pub snapshots: Vec<Created>,
    /// Why it stopped short; the run fails.
    pub failed: Option<SnapError>,
}

/// One snapshot a backend made.
pub struct Created {
    /// Which of the batch's intents it is.
    pub intent: usize,
    pub snapshot: Snapshot,
    /// Its own identity (UUID, guid), journaled once known; `None` if it could not be read.
    pub id: Option<String>,
}

/// What goes on a place: a snapshot this run made (index into the run's snapshots), or something
/// that cannot change mounted as it is (a read-only nested btrfs subvolume: source index, nested
/// index).
pub enum MountFrom {
    Snapshot(usize),
    Live(usize, usize),
}
