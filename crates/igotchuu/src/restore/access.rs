//! The rule of restore: a user gets back what they could read at backup time.
//!
//! Judged from what restic recorded for each node (`restic ls --json`: uid, gid, mode) and the
//! user's uid and groups now (NSS). Mode bits only: restic's listing has no ACLs, so a file
//! readable only through an ACL stays root's to restore.
//!
//! - A path is reached only through directories the user could search (x), each of them a
//!   directory node in the snapshot: a symlink in the snapshot is never followed, a path through
//!   one is simply not there.
//! - A directory is listed only if the user could list it (r and x).
//! - An entry is visible (listed, restored) only if the user could have opened it: a file with r,
//!   a directory with r and x (a directory whose contents they could not list is left out whole),
//!   a symlink always (the link itself: it is restored as a link, never followed).
//! - Paths must be absolute and normalised: `.`, `..`, `//` and a trailing `/` are refused, not
//!   cleaned up, so no spelling of a path reaches something another spelling would not.
//! - A path the user may not reach and a path that does not exist get the same answer, so a
//!   refusal says nothing about what is there.
//!
//! Everything here is pure: the nodes come in as data, so the rule is tested without restic.

use std::collections::{BTreeMap, HashSet};

/// What a node is, as restic's `type` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Dir,
    File,
    Symlink,
    /// Devices, fifos, sockets: listed when readable, never restored.
    Other,
}

/// One node of a snapshot, as `restic ls --json` describes it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// Absolute, as restic prints it.
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Unix permission bits (0o7777), converted from Go's os.FileMode.
    pub mode: u32,
    pub size: u64,
    /// RFC 3339, as restic recorded it.
    pub mtime: Option<String>,
}

// Go's os.FileMode bits (io/fs): restic stores and prints these, not st_mode.
const GO_SETUID: u32 = 1 << 23;
const GO_SETGID: u32 = 1 << 22;
const GO_STICKY: u32 = 1 << 20;

/// Unix permission bits from Go's os.FileMode.
pub fn unix_mode(go_mode: u32) -> u32 {
    let mut m = go_mode & 0o777;
    if go_mode & GO_SETUID != 0 {
        m |= 0o4000;
    }
    if go_mode & GO_SETGID != 0 {
        m |= 0o2000;
    }
    if go_mode & GO_STICKY != 0 {
        m |= 0o1000;
    }
    m
}

/// Who asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// Root sees and restores everything.
    Root,
    /// Anyone else, judged by the rule.
    User { uid: u32, groups: Vec<u32> },
}

const R: u32 = 4;
const X: u32 = 1;

impl Who {
    /// The rwx bits of `node` that apply to this user (owner, else group, else other: the owner
    /// class applies to the owner even when it grants less than the group's).
    fn bits(&self, node: &Node) -> u32 {
        match self {
            Who::Root => 7,
            Who::User { uid, groups } => {
                if *uid == node.uid {
                    (node.mode >> 6) & 7
                } else if groups.contains(&node.gid) {
                    (node.mode >> 3) & 7
                } else {
                    node.mode & 7
                }
            }
        }
    }

    fn searchable(&self, node: &Node) -> bool {
        node.kind == Kind::Dir && self.bits(node) & X != 0
    }

    fn listable(&self, node: &Node) -> bool {
        node.kind == Kind::Dir && self.bits(node) & (R | X) == R | X
    }

    /// Whether the user could have opened `node` in a directory they could list.
    pub fn sees(&self, node: &Node) -> bool {
        match node.kind {
            Kind::Dir => self.listable(node),
            Kind::Symlink => true,
            Kind::File | Kind::Other => self.bits(node) & R != 0,
        }
    }
}

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("`{0}` is not an absolute, normalised path (no `.`, `..`, `//` or trailing `/`); write it as it appears in `igotchuu ls`")]
    NotNormalised(String),
    /// Not there, not reachable, or not readable: the same answer for all three.
    #[error("`{0}` is not in this snapshot, or not yours to read (you get back what you could read when the backup was made)")]
    Hidden(String),
    #[error(
        "`/` cannot be restored whole; name the directories below it (`igotchuu ls SNAPSHOT /`)"
    )]
    WholeSnapshot,
    #[error("`{0}` is not a directory in this snapshot")]
    NotADirectory(String),
}

/// The components of an absolute, normalised path (`/` has none).
pub fn components(path: &str) -> Result<Vec<&str>, Refused> {
    let bad = || Refused::NotNormalised(path.to_owned());
    let rest = path.strip_prefix('/').ok_or_else(bad)?;
    if path.contains('\0') {
        return Err(bad());
    }
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return Err(bad());
    }
    Ok(parts)
}

/// `/a/b/c` → `["/a", "/a/b"]`: the directories a path is reached through (not `/`, which
/// restic does not store and which everyone may search).
pub fn ancestors(path: &str) -> Result<Vec<String>, Refused> {
    let parts = components(path)?;
    Ok((1..parts.len())
        .map(|n| format!("/{}", parts[..n].join("/")))
        .collect())
}

/// The nodes restic listed, by path.
#[derive(Debug, Default)]
pub struct Nodes(BTreeMap<String, Node>);

impl Nodes {
    pub fn new(nodes: impl IntoIterator<Item = Node>) -> Nodes {
        Nodes(nodes.into_iter().map(|n| (n.path.clone(), n)).collect())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.0.get(path)
    }

    /// The direct children of `dir`, by name.
    fn children(&self, dir: &str) -> Vec<&Node> {
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        self.0
            .range(prefix.clone()..)
            .take_while(|(p, _)| p.starts_with(&prefix))
            .filter(|(p, _)| !p[prefix.len()..].contains('/'))
            .map(|(_, n)| n)
            .collect()
    }

    /// Whether `who` could reach `path`: every directory on the way a directory node they could
    /// search. `Hidden` otherwise.
    fn reach(&self, path: &str, who: &Who) -> Result<(), Refused> {
        for a in ancestors(path)? {
            match self.get(&a) {
                Some(n) if who.searchable(n) => {}
                _ => return Err(Refused::Hidden(path.to_owned())),
            }
        }
        Ok(())
    }

    /// The node at `path` if `who` could reach and open it.
    pub fn visible(&self, path: &str, who: &Who) -> Result<&Node, Refused> {
        if components(path)?.is_empty() {
            return Err(Refused::WholeSnapshot);
        }
        self.reach(path, who)?;
        match self.get(path) {
            Some(n) if who.sees(n) => Ok(n),
            _ => Err(Refused::Hidden(path.to_owned())),
        }
    }

    /// The entries of directory `path` that `who` may see, by name. `/` lists the snapshot's
    /// top directories.
    pub fn list(&self, path: &str, who: &Who) -> Result<Vec<&Node>, Refused> {
        if !components(path)?.is_empty() {
            let n = self.visible(path, who)?;
            if n.kind != Kind::Dir {
                return Err(Refused::NotADirectory(path.to_owned()));
            }
        }
        Ok(self
            .children(path)
            .into_iter()
            .filter(|n| who.sees(n))
            .collect())
    }

    /// What a restore of `path` sends: the node itself and, for a directory, every node below it
    /// whose directories on the way `who` could list and which they could open; parents before
    /// children.
    pub fn subtree(&self, path: &str, who: &Who) -> Result<Vec<&Node>, Refused> {
        let top = self.visible(path, who)?;
        let mut out = vec![top];
        if top.kind != Kind::Dir {
            return Ok(out);
        }
        let mut open: HashSet<&str> = HashSet::from([top.path.as_str()]);
        let prefix = format!("{path}/");
        // BTreeMap order puts a directory before everything below it (a prefix sorts first).
        for (p, n) in self.0.range(prefix.clone()..) {
            if !p.starts_with(&prefix) {
                break;
            }
            let Some((parent, _)) = p.rsplit_once('/') else {
                continue;
            };
            if open.contains(parent) && who.sees(n) {
                out.push(n);
                if n.kind == Kind::Dir {
                    open.insert(p.as_str());
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u32 = 1001;
    const B: u32 = 1002;
    const SHARED: u32 = 2000;

    fn node(path: &str, kind: Kind, uid: u32, gid: u32, mode: u32) -> Node {
        Node {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or_default().into(),
            kind,
            uid,
            gid,
            mode,
            size: 0,
            mtime: None,
        }
    }

    fn alice() -> Who {
        Who::User {
            uid: A,
            groups: vec![A, SHARED],
        }
    }

    /// /home (root 0755), /home/a (A 0755) with pub (A 0644), bdir (B 0700) holding secret,
    /// grp (B:SHARED 0640), tob (symlink to ../b), /home/b (B 0700) with b.txt (B 0644),
    /// /home/c (B 0711: searchable, not listable) with known (B 0644), /srv (root 0700).
    fn tree() -> Nodes {
        Nodes::new([
            node("/home", Kind::Dir, 0, 0, 0o755),
            node("/home/a", Kind::Dir, A, A, 0o755),
            node("/home/a/pub", Kind::File, A, A, 0o644),
            node("/home/a/bdir", Kind::Dir, B, B, 0o700),
            node("/home/a/bdir/secret", Kind::File, B, B, 0o644),
            node("/home/a/grp", Kind::File, B, SHARED, 0o640),
            node("/home/a/nogrp", Kind::File, B, B, 0o640),
            node("/home/a/tob", Kind::Symlink, A, A, 0o777),
            node("/home/b", Kind::Dir, B, B, 0o700),
            node("/home/b/b.txt", Kind::File, B, B, 0o644),
            node("/home/c", Kind::Dir, B, B, 0o711),
            node("/home/c/known", Kind::File, B, B, 0o644),
            node("/home/c/sub", Kind::Dir, B, B, 0o755),
            node("/srv", Kind::Dir, 0, 0, 0o700),
            node("/srv/x", Kind::File, 0, 0, 0o644),
        ])
    }

    fn names(v: Vec<&Node>) -> Vec<&str> {
        v.into_iter().map(|n| n.path.as_str()).collect()
    }

    #[test]
    fn another_users_0700_dir_inside_a_listable_dir_is_left_out() {
        let t = tree();
        let l = names(t.list("/home/a", &alice()).unwrap());
        assert_eq!(l, ["/home/a/grp", "/home/a/pub", "/home/a/tob"]);
        let s = names(t.subtree("/home/a", &alice()).unwrap());
        assert_eq!(s, ["/home/a", "/home/a/grp", "/home/a/pub", "/home/a/tob"]);
        assert!(matches!(
            t.list("/home/a/bdir", &alice()),
            Err(Refused::Hidden(_))
        ));
        assert!(matches!(
            t.visible("/home/a/bdir/secret", &alice()),
            Err(Refused::Hidden(_))
        ));
        // B sees it all.
        let bob = Who::User {
            uid: B,
            groups: vec![B],
        };
        assert!(t
            .subtree("/home/a", &bob)
            .unwrap()
            .iter()
            .any(|n| n.path == "/home/a/bdir/secret"));
    }

    #[test]
    fn group_read_counts_only_for_members() {
        let t = tree();
        assert!(t.visible("/home/a/grp", &alice()).is_ok());
        assert!(t.visible("/home/a/nogrp", &alice()).is_err());
        let outsider = Who::User {
            uid: A,
            groups: vec![A],
        };
        assert!(t.visible("/home/a/grp", &outsider).is_err());
        // The owner class applies to the owner even when the group's is wider.
        let owner_less = Nodes::new([
            node("/d", Kind::Dir, 0, 0, 0o755),
            node("/d/f", Kind::File, A, SHARED, 0o040),
        ]);
        assert!(owner_less.visible("/d/f", &alice()).is_err());
    }

    #[test]
    fn a_path_through_a_dir_that_was_not_searchable_is_hidden() {
        let t = tree();
        assert!(matches!(
            t.visible("/home/b/b.txt", &alice()),
            Err(Refused::Hidden(_))
        ));
        assert!(matches!(
            t.list("/home/b", &alice()),
            Err(Refused::Hidden(_))
        ));
        assert!(matches!(
            t.visible("/srv/x", &alice()),
            Err(Refused::Hidden(_))
        ));
        // Searchable but not listable: a name one knows can be restored, the directory cannot
        // be listed nor restored whole.
        assert!(t.visible("/home/c/known", &alice()).is_ok());
        assert!(t.list("/home/c", &alice()).is_err());
        assert!(t.subtree("/home/c", &alice()).is_err());
        // Missing and forbidden look alike.
        assert_eq!(
            t.visible("/home/b/nothing", &alice())
                .unwrap_err()
                .to_string(),
            t.visible("/home/b/b.txt", &alice())
                .unwrap_err()
                .to_string()
                .replace("b.txt", "nothing")
        );
        // A directory missing from the listing on the way counts as not searchable.
        let gap = Nodes::new([node("/x/y", Kind::File, A, A, 0o644)]);
        assert!(gap.visible("/x/y", &alice()).is_err());
    }

    #[test]
    fn symlinks_in_the_snapshot_are_never_followed() {
        let t = tree();
        // tob -> ../b: listing or reading through it finds nothing.
        assert!(matches!(
            t.list("/home/a/tob", &alice()),
            Err(Refused::NotADirectory(_))
        ));
        assert!(matches!(
            t.visible("/home/a/tob/b.txt", &alice()),
            Err(Refused::Hidden(_))
        ));
        // Even for root, a symlink is no directory.
        assert!(t.visible("/home/a/tob/b.txt", &Who::Root).is_err());
        // The link itself is restorable (as a link).
        assert_eq!(
            t.visible("/home/a/tob", &alice()).unwrap().kind,
            Kind::Symlink
        );
    }

    #[test]
    fn non_normalised_paths_are_refused() {
        let t = tree();
        for p in [
            "/home/a/../b",
            "/home/a/../b/b.txt",
            "home/a",
            "/home//a",
            "/home/a/",
            "/home/./a",
            "..",
            "/..",
            "",
            "/home/a\0",
        ] {
            assert!(
                matches!(t.visible(p, &Who::Root), Err(Refused::NotNormalised(_))),
                "{p:?}"
            );
            assert!(
                matches!(t.list(p, &alice()), Err(Refused::NotNormalised(_))),
                "{p:?}"
            );
        }
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(ancestors("/a/b/c").unwrap(), ["/a", "/a/b"]);
    }

    #[test]
    fn root_sees_everything_and_lists_the_top() {
        let t = tree();
        assert_eq!(names(t.list("/", &alice()).unwrap()), ["/home"]);
        assert_eq!(names(t.list("/", &Who::Root).unwrap()), ["/home", "/srv"]);
        assert!(t.subtree("/home", &Who::Root).unwrap().len() == 13);
    }

    #[test]
    fn go_modes_become_unix_modes() {
        // From restic 0.14's JSON: a 04755 file, a 0755 dir, a 01777 dir.
        assert_eq!(unix_mode(8389101), 0o4755);
        assert_eq!(unix_mode(2147484141), 0o755);
        assert_eq!(unix_mode(2148532735), 0o1777);
    }
}
