//! "This host's snapshots of this profile", defined once: retention (retention.rs) forgets only
//! these, and restore (issue 20) lists them.
//!
//! A snapshot belongs to the profile when restic recorded it with this host's name and exactly
//! the profile's `places` as its paths (and, when the profile's restic arguments tag its backups,
//! with those tags). restic's own filters (`--host`, `--path`, `--tag`) are not exact: `--path
//! /home` also selects a snapshot of `/home` and `/srv` (another profile's), so every snapshot
//! restic returns is checked again here with [`Scope::owns`].

use std::path::PathBuf;

/// The snapshots a profile's backups make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// restic's `--host` of the backups: the one in `restic_args`/`restic_backup_args`, else the
    /// kernel's node name (what restic's os.Hostname() returns).
    pub host: String,
    /// The profile's places, as restic records them (absolute, sorted).
    pub paths: Vec<String>,
    /// Tags every backup of the profile gets (`--tag` in restic's arguments); empty: any.
    pub tags: Vec<String>,
}

/// The values of one of restic's flags in `args`, in both forms (`--host x`, `--host=x`).
fn flag_values(args: &[String], names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match crate::args::split(a) {
            (n, Some(v)) if names.contains(&n) => out.push(v.to_owned()),
            (n, None) if names.contains(&n) => {
                if let Some(v) = it.next() {
                    out.push(v.clone());
                }
            }
            _ => {}
        }
    }
    out
}

/// This machine's name as restic sees it.
pub fn hostname() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

impl Scope {
    /// The scope of backups made with `restic_args` (backup args then global ones, as the plan
    /// keeps them) of `places` on a machine called `host`.
    pub fn new(restic_args: &[String], places: &[PathBuf], host: &str) -> Scope {
        let host = flag_values(restic_args, &["--host", "-H", "--hostname"])
            .pop()
            .unwrap_or_else(|| host.to_owned());
        let mut paths: Vec<String> = places.iter().map(|p| p.display().to_string()).collect();
        paths.sort();
        paths.dedup();
        let mut tags: Vec<String> = flag_values(restic_args, &["--tag"])
            .iter()
            .flat_map(|t| t.split(','))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        tags.sort();
        tags.dedup();
        Scope { host, paths, tags }
    }

    /// restic's filter flags that select (at least) this scope's snapshots.
    pub fn restic_filter(&self) -> Vec<String> {
        let mut a = vec!["--host".to_owned(), self.host.clone()];
        for p in &self.paths {
            a.push("--path".into());
            a.push(p.clone());
        }
        if !self.tags.is_empty() {
            a.push("--tag".into());
            a.push(self.tags.join(","));
        }
        a
    }

    /// Whether a snapshot (as `restic snapshots --json`/`forget --json` describe it: host,
    /// paths, tags) is one of this scope's.
    pub fn owns(&self, host: &str, paths: &[String], tags: &[String]) -> bool {
        let mut p: Vec<&str> = paths.iter().map(String::as_str).collect();
        p.sort_unstable();
        p.dedup();
        host == self.host
            && p == self.paths.iter().map(String::as_str).collect::<Vec<_>>()
            && self.tags.iter().all(|t| tags.contains(t))
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {} paths {}", self.host, self.paths.join(" "))?;
        if !self.tags.is_empty() {
            write!(f, " tags {}", self.tags.join(","))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn host_and_tags_come_from_restics_arguments() {
        let places = [PathBuf::from("/srv"), PathBuf::from("/home")];
        let sc = Scope::new(&s(&["--tag=a,b", "--host", "h1", "-x"]), &places, "node");
        assert_eq!(sc.host, "h1");
        assert_eq!(sc.paths, s(&["/home", "/srv"]));
        assert_eq!(sc.tags, s(&["a", "b"]));
        assert_eq!(
            sc.restic_filter(),
            s(&["--host", "h1", "--path", "/home", "--path", "/srv", "--tag", "a,b"])
        );
        assert_eq!(Scope::new(&[], &places, "node").host, "node");
    }

    #[test]
    fn owns_only_the_exact_path_set_of_this_host() {
        let sc = Scope::new(&[], &[PathBuf::from("/home")], "me");
        assert!(sc.owns("me", &s(&["/home"]), &[]));
        assert!(!sc.owns("other", &s(&["/home"]), &[]));
        // restic's --path /home selects this one too: another profile's.
        assert!(!sc.owns("me", &s(&["/home", "/srv"]), &[]));
        let tagged = Scope::new(&s(&["--tag", "nightly"]), &[PathBuf::from("/home")], "me");
        assert!(tagged.owns("me", &s(&["/home"]), &s(&["nightly", "x"])));
        assert!(!tagged.owns("me", &s(&["/home"]), &s(&["x"])));
    }
}
