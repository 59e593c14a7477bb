//! Human-readable figures: sizes, durations, the progress line and the summary. They live in the
//! shared crate so that `igotchuu status`/`watch` and the desktop monitor say the same words.

pub use igotchuu_dbus::format::*;
