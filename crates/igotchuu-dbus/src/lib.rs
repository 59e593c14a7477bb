//! What igotchuu and its clients share: the D-Bus names, a zbus proxy for the interface, the
//! typed values of a run and the human formatters. The tool produces these values; `igotchuu
//! status`/`watch` and the desktop monitor (crates/igotchuu-monitor) read them back, so they say
//! the same words a one-shot run prints.
//!
//! Kept small on purpose: no tokio runtime, no GTK, nothing root-only. A client depends on this
//! crate and zbus, nothing else of the tool.

pub mod format;
pub mod proxy;
pub mod types;

pub use proxy::IgotchuuProxy;
pub use types::{During, ErrorEvent, Outcome, OutcomeKind, Phase, Progress, Step, Summary};

/// The well-known name on the system bus.
pub const NAME: &str = "com.nyantec.IGotChuu";
/// The one object igotchuu serves.
pub const PATH: &str = "/com/nyantec/igotchuu";
/// The interface, as the original igotchuu named it.
pub const INTERFACE: &str = "com.nyantec.igotchuu1";
/// The group whose members may watch and stop backups (and, with the daemon, start them).
pub const GROUP: &str = "igotchuu";
