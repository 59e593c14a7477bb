//! The documented install commands (README.md, docs/install.md), in a fresh clone.

use super::deb::{dpkg_status, generated_deb_files, installed_content, DEB_FILES};
use super::*;

/// The Debian install line of README.md's "Installing" section (`BUILD && INSTALL`), as the build
/// command and the install command. docs/install.md must give the same two, each on its own line.
fn documented_debian_install() -> (String, String) {
    let readme = read(&Path::new(REPO).join("README.md"));
    let section = readme
        .split("\n## Installing\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has no \"## Installing\" section");
    let line = section
        .lines()
        .find(|l| l.starts_with("cargo deb"))
        .expect("README.md's \"Installing\" section has no line starting with `cargo deb`");
    let (build, install) = line
        .split_once("&&")
        .unwrap_or_else(|| panic!("README.md's install line is not `BUILD && INSTALL`: {line}"));
    let (build, install) = (build.trim().to_owned(), install.trim().to_owned());
    let guide = read(&Path::new(REPO).join("docs/install.md"));
    for command in [&build, &install] {
        assert!(
            guide
                .lines()
                .any(|l| l.split(" #").next().unwrap_or_default().trim() == command.as_str()),
            "docs/install.md does not give `{command}` on a line of its own, as README.md does: \
             the two must agree"
        );
    }
    (build, install)
}

/// `sh` in `dir` with the environment of someone who has just cloned the repository: PATH, HOME,
/// locale, rustup's and cargo's homes, registry and proxy settings. None of what cargo sets for a
/// test run (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...) and no CARGO_TARGET_DIR: with one, cargo
/// builds, and cargo-deb writes the .deb, outside ./target, and `apt install
/// ./target/debian/...` as documented finds nothing.
fn user_shell(dir: &Path) -> Command {
    let mut cmd = Command::new("sh");
    cmd.current_dir(dir).env_clear().stdin(Stdio::null());
    for (key, value) in std::env::vars_os() {
        let name = key.to_string_lossy();
        let keep = matches!(
            &*name,
            "PATH"
                | "HOME"
                | "USER"
                | "LOGNAME"
                | "LANG"
                | "LC_ALL"
                | "RUSTUP_HOME"
                | "RUSTUP_TOOLCHAIN"
                | "CARGO_HOME"
                | "SSL_CERT_FILE"
                | "SSL_CERT_DIR"
        ) || name.to_ascii_lowercase().ends_with("_proxy")
            || [
                "CARGO_REGISTRIES_",
                "CARGO_REGISTRY_",
                "CARGO_NET_",
                "CARGO_HTTP_",
            ]
            .iter()
            .any(|p| name.starts_with(p));
        if keep {
            cmd.env(key, value);
        }
    }
    cmd
}

/// The install commands of README.md and docs/install.md, exactly as written, in a fresh `git
/// clone` of this repository: `cargo deb --locked` with nothing run before it builds the package,
/// which holds the man page and the completions, and `apt install ./target/debian/igotchuu_*.deb`
/// installs it. apt runs in a throwaway copy of this machine (tests/packaging/throwaway-root.sh:
/// an overlay over / in a private mount namespace), so the machine's own packages are untouched.
///
/// The clone is of the committed HEAD: uncommitted changes are not in it (a note says so). The
/// build is a full release build in the clone's own ./target, as a user's would be (no shared
/// target directory: see `user_shell`): 5.5 minutes (3 minutes of CPU) on 2 cores shared with
/// other builds when measured, the longest test of the suite. Its duration is reported, not
/// asserted.
#[test]
fn documented_debian_install_works_in_a_fresh_clone() {
    if !is_root() {
        return cannot_run(
            "installing the .deb into a throwaway root needs root (mount namespace, overlay, chroot)",
        );
    }
    if !have(&[
        "git", "dpkg-deb", "gzip", "bash", "unshare", "mount", "chroot",
    ]) {
        return;
    }
    let (build, install) = documented_debian_install();
    let work = tempfile::tempdir().expect("tempdir");
    let share = work.path().join("share");
    let clone = share.join("igotchuu");
    let results = share.join("results");
    fs::create_dir_all(&results).expect("mkdir");
    let has_cargo_deb = output(user_shell(work.path()).args(["-c", "cargo deb --version"]))
        .status
        .success();
    if !has_cargo_deb {
        return cannot_run(
            "`cargo deb` does not run in a user's shell here: cargo-deb is not installed, or cargo \
             is not in PATH (cargo install cargo-deb --locked; scripts/setup does)",
        );
    }
    let filesystems = fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !filesystems.contains("overlay") {
        // Loaded on first use on most kernels: try once.
        let _ = Command::new("modprobe").arg("overlay").status();
        if !fs::read_to_string("/proc/filesystems")
            .unwrap_or_default()
            .contains("overlay")
        {
            return cannot_run("the kernel offers no overlay filesystem for the throwaway root");
        }
    }

    // The committed state, as a user's `git clone` gets it.
    let head = ok(Command::new("git").args(["-C", REPO, "rev-parse", "HEAD"]))
        .trim()
        .to_owned();
    // Untracked files count: a new file not yet added is missing from the clone just the same.
    let dirty = ok(Command::new("git").args(["-C", REPO, "status", "--porcelain"]));
    if !dirty.trim().is_empty() {
        loud(&format!(
            "NOTE: the fresh-clone test builds the committed HEAD {head}, not these uncommitted \
             changes:\n{dirty}"
        ));
    }
    ok(Command::new("git")
        .args(["clone", "--quiet", "--no-checkout", REPO])
        .arg(&clone));
    ok(Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["checkout", "--quiet", "--detach", &head]));
    assert!(
        !clone.join("target").exists(),
        "the clone is not fresh: it has a target/ directory"
    );

    // 1. Build, as documented.
    let started = Instant::now();
    ok(user_shell(&clone).args(["-c", &build]));
    let took = started.elapsed();
    loud(&format!(
        "NOTE: `{build}` in a fresh clone took {:.0} s (a full release build)",
        took.as_secs_f64()
    ));
    let debs: Vec<PathBuf> = walk(&clone.join("target/debian"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "`{build}` in a fresh clone should leave exactly one .deb in target/debian, found {debs:?}"
    );
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(&debs[0]));
    for (installed, source) in generated_deb_files() {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!(" .{installed}"))),
            "the package built in a fresh clone lacks {installed} (from dist/{source}):\n{listing}"
        );
    }

    // 2. Install, as documented, in a throwaway root; collect what a user would look at.
    let generated: Vec<&str> = generated_deb_files().map(|(p, _)| p).collect();
    let r = results.display();
    let inspect = format!(
        "dpkg-query -W -f='${{Status}}' igotchuu >{r}/status
         dpkg -L igotchuu >{r}/files
         igotchuu --version >{r}/version
         bash -c '. /usr/share/bash-completion/completions/igotchuu && complete -p igotchuu' >{r}/bash-complete
         cp --parents {} {r}/",
        generated.join(" ")
    );
    let _usr = HOST_USR.lock().unwrap_or_else(|e| e.into_inner());
    let host_before = dpkg_status("igotchuu");
    let script = Path::new(CRATE).join("tests/packaging/throwaway-root.sh");
    let overlay = work.path().join("overlay");
    fs::create_dir(&overlay).expect("mkdir");
    let mut cmd = Command::new(&script);
    cmd.arg(&overlay)
        .arg(&share)
        .arg(format!(
            "cd igotchuu && {install} && {{\nset -e\n{inspect}\n}}"
        ))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null());
    let out = output(&mut cmd);
    assert!(
        out.status.success(),
        "`{install}`, as documented, failed in a throwaway root:\n{}",
        describe(&cmd, &out)
    );
    assert_eq!(
        dpkg_status("igotchuu"),
        host_before,
        "installing in the throwaway root changed this machine's own dpkg database"
    );

    let result = |name: &str| read(&results.join(name));
    assert_eq!(result("status"), "install ok installed");
    let files = result("files");
    for (installed, _) in DEB_FILES {
        assert!(
            files.lines().any(|l| l == installed),
            "dpkg -L igotchuu does not list {installed}:\n{files}"
        );
    }
    assert!(
        result("version").contains(env!("CARGO_PKG_VERSION")),
        "the installed igotchuu --version says: {}",
        result("version")
    );
    assert!(
        // "complete -o bashdefault -o default -o nosort -F _igotchuu igotchuu"
        result("bash-complete").contains(" -F _igotchuu "),
        "bash did not register a completion for igotchuu from the installed file: {}",
        result("bash-complete")
    );
    for (installed, source) in generated_deb_files() {
        let copy = results.join(installed.trim_start_matches('/'));
        assert_eq!(
            installed_content(&copy),
            read(&clone.join("dist").join(source)),
            "the installed {installed} differs from the committed dist/{source}"
        );
    }
}
