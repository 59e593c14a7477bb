//! What a user types: one module per subcommand.

pub mod check;
pub mod daemon;
pub mod status;
pub mod watch;
