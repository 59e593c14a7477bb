//! One backup, start to end.

pub mod pipeline;
pub mod record;
pub mod recovery;
