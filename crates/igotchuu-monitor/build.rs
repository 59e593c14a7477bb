//! The integration tests share crates/igotchuu/tests/common, which names the tool's binary with
//! `env!("CARGO_BIN_EXE_igotchuu")`. Cargo sets that only for the tool's own package, so this sets
//! it for this package to the tool's binary in the same target directory (OUT_DIR is
//! <target>/<profile>/build/igotchuu-monitor-<hash>/out). The tests check that it exists and tell
//! to run `cargo build -p igotchuu` when it does not (scripts/test builds the workspace first).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(out) = std::env::var_os("OUT_DIR") else {
        return;
    };
    let out = std::path::PathBuf::from(out);
    if let Some(profile_dir) = out.ancestors().nth(3) {
        println!(
            "cargo:rustc-env=CARGO_BIN_EXE_igotchuu={}",
            profile_dir.join("igotchuu").display()
        );
    }
}
