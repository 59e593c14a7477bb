//! The harness of igotchuu's integration tests lives in the test kit crate
//! (crates/igotchuu-testkit, shared with the monitor's tests). This shim keeps `mod common;` and
//! `common::…` working in every test file.
#![allow(dead_code, unused_imports)]

pub use igotchuu_testkit::*;

/// The igotchuu binary under test, as cargo names it for the tool's own tests: the same path as
/// the kit's [`bin()`], kept as a `&str` constant for the tests that format or copy it.
pub const BIN: &str = env!("CARGO_BIN_EXE_igotchuu");
