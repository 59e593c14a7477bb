//! What igotchuu keeps on disk between runs.

pub mod dir;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod status;
