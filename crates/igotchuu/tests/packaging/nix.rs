//! The Nix files (flake.nix, nix/) parse and evaluate.

use super::*;

fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        let name = e.file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        if p.is_dir() {
            nix_files(&p, found);
        } else if p.extension().is_some_and(|x| x == "nix") {
            found.push(p);
        }
    }
}

/// No store writes (works as any user, leaves /nix alone); no warning about Debian's missing
/// nixbld group.
const NIX_QUIET: [&str; 5] = ["--store", "dummy://", "--option", "build-users-group", ""];

fn nix_eval(expr: &str) -> String {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--eval", "--strict", "--json", "--expr", expr])
        .args(NIX_QUIET);
    ok(&mut cmd).trim().to_owned()
}

/// Every .nix file parses; the flake offers packages.<system>.default and nixosModules.default
/// (nix/module.nix, a module function), without needing nixpkgs to tell.
#[test]
fn nix_files_parse() {
    if !have(&["nix-instantiate"]) {
        return;
    }
    let mut files = Vec::new();
    nix_files(Path::new(REPO), &mut files);
    let names: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(REPO).unwrap().display().to_string())
        .collect();
    for must in [
        "flake.nix",
        "nix/module.nix",
        "nix/package.nix",
        "nix/monitor.nix",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "{must} is missing (found {names:?})"
        );
    }
    for f in &files {
        let mut cmd = Command::new("nix-instantiate");
        cmd.arg("--parse").arg(f).args(NIX_QUIET);
        ok(&mut cmd);
    }

    let flake = format!("{REPO}/flake.nix");
    let stub = r#"{ self = { }; nixpkgs = { lib.genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names); legacyPackages = { x86_64-linux = { }; aarch64-linux = { }; }; }; }"#;
    let outputs = format!("((import {flake}).outputs {stub})");
    assert_eq!(
        nix_eval(&format!(
            "builtins.attrNames {outputs}.packages.x86_64-linux"
        )),
        r#"["default","igotchuu","monitor"]"#
    );
    assert_eq!(
        nix_eval(&format!(
            "toString {outputs}.nixosModules.default == toString {REPO}/nix/module.nix"
        )),
        "true"
    );
    assert_eq!(
        nix_eval(&format!(
            "builtins.functionArgs (import {REPO}/nix/module.nix)"
        )),
        r#"{"config":false,"lib":false,"pkgs":false}"#
    );
    assert_eq!(
        nix_eval(&format!(
            "builtins.functionArgs (import {REPO}/nix/package.nix)"
        )),
        r#"{"installShellFiles":false,"lib":false,"rustPlatform":false}"#
    );
}
