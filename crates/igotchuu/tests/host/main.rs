//! Small suites on the host, one test binary (linking one binary per small file cost more than
//! running their tests): each module was a test file of its own, and its tests keep their names
//! under the module's (`cargo test -p igotchuu --test host trees::`).
//!
//! - `backends`: journal records of earlier versions are still cleaned up;
//! - `demo`: the README's quick start, `scripts/demo`, run as a newcomer runs it;
//! - `journald`: structured entries in a real systemd-journald;
//! - `nested`: subvolumes nested below a source;
//! - `subcommands`: `igotchuu check` and `igotchuu mount`;
//! - `trees`: stable restic trees, against restic 0.14 and 0.18.
//!
//! Each needs root, btrfs-progs, restic and loop devices (and what its module says); otherwise
//! "SKIPPED" (or a failure with CI=true).

// The harness shim every test file shares (tests/common/mod.rs: the test kit, and `BIN`).
#[path = "../common/mod.rs"]
mod common;

mod backends;
mod demo;
mod journald;
mod nested;
mod subcommands;
mod trees;
