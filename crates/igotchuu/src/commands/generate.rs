//! `igotchuu generate man|completions DIR` (hidden, for packaging): the man page and the shell
//! completions, generated from the clap definition so they can never disagree with `--help`.
//! The definition comes in as a value (`clap::Command`), so this file needs nothing of cli.rs.

use std::path::Path;

use super::fail;
use crate::exit;

/// What to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// igotchuu.1
    Man,
    /// igotchuu.bash, _igotchuu (zsh), igotchuu.fish
    Completions,
}

/// Writes `what` for the command line `cmd` into `dir`; returns the exit code.
pub fn main(what: What, mut cmd: clap::Command, dir: &Path) -> i32 {
    if let Err(e) = std::fs::create_dir_all(dir) {
        return fail(format_args!("cannot create {}: {e}", dir.display()));
    }
    let result = match what {
        What::Man => {
            let mut buf = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut buf)
                .and_then(|()| std::fs::write(dir.join("igotchuu.1"), buf))
        }
        What::Completions => [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ]
        .into_iter()
        .try_for_each(|sh| clap_complete::generate_to(sh, &mut cmd, "igotchuu", dir).map(drop)),
    };
    match result {
        Ok(()) => exit::SUCCESS,
        Err(e) => fail(format_args!("cannot write to {}: {e}", dir.display())),
    }
}
