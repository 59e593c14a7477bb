//! The committed man page and shell completions match the command line.

use super::*;

/// The man page and completions committed under dist/ (what the .deb and the Nix package install)
/// are exactly what this build's `igotchuu generate` writes from the command line's definition, so
/// `man igotchuu` and tab completion never describe options that are not there.
#[test]
fn committed_man_page_and_completions_match_the_command_line() {
    let fresh = tempfile::tempdir().expect("tempdir");
    for what in ["man", "completions"] {
        ok(Command::new(BIN)
            .args(["generate", what])
            .arg(fresh.path().join(what)));
    }
    let files_under = |root: &Path| -> Vec<String> {
        ["man", "completions"]
            .iter()
            .flat_map(|d| walk(&root.join(d)))
            .filter(|p| p.is_file())
            .filter_map(|p| Some(p.strip_prefix(root).ok()?.display().to_string()))
            .collect()
    };
    let refresh = "run scripts/generate and commit dist/man and dist/completions";
    let generated = files_under(fresh.path());
    assert_eq!(
        files_under(&Path::new(REPO).join("dist")),
        generated,
        "dist/man and dist/completions (left) must hold exactly the files `igotchuu generate` writes \
         (right); {refresh}, and delete any file it does not write"
    );
    for rel in &generated {
        let new = fresh.path().join(rel);
        if read(&new) != read(&dist(rel)) {
            let diff = output(Command::new("diff").arg("-u").arg(dist(rel)).arg(&new));
            panic!(
                "dist/{rel} is stale: the command line (src/cli.rs) changed since it was generated; \
                 {refresh}. What changed:\n{}",
                text(&diff.stdout)
            );
        }
    }
}
