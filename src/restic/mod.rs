//! restic: its output format (`parse`) and running it (`run`).
pub mod parse;
pub mod run;
