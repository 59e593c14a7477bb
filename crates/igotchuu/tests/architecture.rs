//! The layers of docs/architecture.md, kept: every source file of every crate belongs to a row
//! of its crate's table, no import runs up a layer, and no files need each other in a circle.
//!
//! Read from the code as it is written, not compiled: each file's `use` statements (braces
//! expanded) and every path beginning `crate::`, `super::` or `self::` (and, in a binary, the
//! library's own name), with comments and string literals blanked out first. `#[cfg(test)]`
//! modules are left out: a unit test may build its fixtures from anywhere. A path is followed
//! through the module tree as far as its segments name modules (`crate::state::status::load` is
//! state/status.rs). Macros (`say_err!`, from out.rs in the lowest layer) are not paths and are
//! not counted.
//!
//! Needs nothing but the sources: no root, no build of the tool.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace root (this crate is crates/igotchuu).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One row of a crate's table: its number (1 = top) and the paths it names, relative to the
/// crate's src/ (`cli.rs`, or a folder `commands/`).
#[derive(Debug)]
struct Row {
    layer: usize,
    name: String,
    paths: Vec<String>,
}

/// The tables of docs/architecture.md, by crate directory name (`igotchuu`, `igotchuu-dbus`).
fn tables(doc: &str) -> BTreeMap<String, Vec<Row>> {
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        if let Some(h) = line.strip_prefix("## crates/") {
            current = Some(h.trim().to_owned());
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let Some(krate) = &current else { continue };
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // "| 3 | session | `session/` | why |" splits into ["", "3", "session", "`session/`", …].
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        let paths = cells
            .get(3)
            .map(|c| c.split('`').skip(1).step_by(2).map(str::to_owned).collect())
            .unwrap_or_default();
        out.entry(krate.clone()).or_default().push(Row {
            layer,
            name: cells.get(2).map_or("", |c| c).to_owned(),
            paths,
        });
    }
    out
}

/// Every .rs file under `dir`, relative to it, with '/' separators.
fn sources(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let rel = p.strip_prefix(root).expect("under root");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// `text` with comments, string and char literals replaced by spaces (newlines kept, so offsets
/// and line numbers stay), so that a path in a doc comment or a message is not an import.
fn code_only(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                let end = text[i..].find('\n').map_or(b.len(), |n| i + n);
                blank(&mut out, i, end);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i + 2..].find("*/").map_or(b.len(), |n| i + 2 + n + 2);
                blank(&mut out, i, end);
                i = end;
            }
            b'r' if (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
                && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')) =>
            {
                // r"…" or r#"…"#: ends at the quote followed by as many hashes.
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) != Some(&b'"') {
                    i += 1;
                    continue;
                }
                let close = format!("\"{}", "#".repeat(hashes));
                let start = i + 2 + hashes;
                let end = text[start..]
                    .find(&close)
                    .map_or(b.len(), |n| start + n + close.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(b.len());
                blank(&mut out, i, end);
                i = end;
            }
            b'\'' => {
                // A char literal ('x', '\n', '\u{7f}'), not a lifetime ('a).
                let rest = &text[i + 1..];
                let end = match rest.chars().next() {
                    Some('\\') => rest
                        .get(2..)
                        .and_then(|r| r.find('\''))
                        .map(|n| i + 3 + n + 1),
                    Some(c) => rest[c.len_utf8()..]
                        .starts_with('\'')
                        .then_some(i + 1 + c.len_utf8() + 1),
                    None => None,
                };
                match end {
                    Some(end) => {
                        blank(&mut out, i, end);
                        i = end;
                    }
                    None => i += 1,
                }
            }
            _ => i += 1,
        }
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

/// Blanks every `#[cfg(test)]` module (attribute to closing brace).
fn without_tests(code: &str) -> String {
    let mut out = code.to_owned();
    let mut from = 0;
    while let Some(n) = out[from..].find("#[cfg(test)]") {
        let at = from + n;
        let rest = &out[at..];
        let Some(open) = rest.find('{') else { break };
        // Only a module: `#[cfg(test)] mod tests {` (a test-only `use` or fn is left alone).
        if !rest[..open].contains("mod ") || rest[..open].contains(';') {
            from = at + 1;
            continue;
        }
        let mut depth = 0;
        let mut end = out.len();
        for (k, c) in out[at + open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        let blanked: String = out[at..end]
            .chars()
            .map(|c| if c == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(at..end, &blanked);
        from = end;
    }
    out
}

/// `a::{b, c::{d as e, self}}` → `a::b`, `a::c::d`, `a::c::self` (a rename changes no module).
fn expand(tree: &str) -> Vec<String> {
    let words: Vec<&str> = tree.split_whitespace().collect();
    let mut tree = String::new();
    let mut k = 0;
    while k < words.len() {
        if words[k] == "as" {
            // Drop `as NAME`, keep what follows the name (`,` or `}`).
            let next = words.get(k + 1).copied().unwrap_or("");
            tree.push_str(next.trim_start_matches(is_ident));
            k += 2;
        } else {
            tree.push_str(words[k]);
            k += 1;
        }
    }
    expand_joined(&tree)
}

fn expand_joined(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.to_owned()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (k, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| expand_joined(&format!("{prefix}{p}")))
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// A path's segments from `at` in `code` (`crate::a::b` → ["crate", "a", "b"]).
fn segments_at(code: &str, at: usize) -> Vec<String> {
    let mut segs = Vec::new();
    let mut rest = &code[at..];
    loop {
        let n = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        if n == 0 {
            break;
        }
        segs.push(rest[..n].to_owned());
        rest = &rest[n..];
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segs
}

/// One crate's files as modules.
struct Crate {
    src: PathBuf,
    files: BTreeSet<String>,
    /// The library's name as a binary names it (`igotchuu_monitor`).
    lib_name: String,
    /// The binary's files: main.rs and the modules it declares.
    bin: BTreeSet<String>,
}

impl Crate {
    /// The file of the module at `file` (`a/b.rs` → `a/b.rs`); its children live in `a/b/`,
    /// or, for a `mod.rs`, `lib.rs` or `main.rs`, next to it.
    fn children_dir(file: &str) -> String {
        match file.rsplit_once('/') {
            Some((dir, "mod.rs")) => format!("{dir}/"),
            Some((_, _)) => format!("{}/", file.trim_end_matches(".rs")),
            None if file == "lib.rs" || file == "main.rs" => String::new(),
            None => format!("{}/", file.trim_end_matches(".rs")),
        }
    }

    fn child(&self, module: &str, name: &str) -> Option<String> {
        let dir = Self::children_dir(module);
        [format!("{dir}{name}.rs"), format!("{dir}{name}/mod.rs")]
            .into_iter()
            .find(|f| self.files.contains(f))
    }

    fn root_of(&self, file: &str) -> String {
        if self.bin.contains(file) {
            "main.rs"
        } else {
            "lib.rs"
        }
        .to_owned()
    }

    fn parent(&self, file: &str) -> String {
        let dir = match file.rsplit_once('/') {
            Some((dir, "mod.rs")) => dir.rsplit_once('/').map_or("", |(d, _)| d).to_owned(),
            Some((dir, _)) => dir.to_owned(),
            None => return self.root_of(file),
        };
        if dir.is_empty() {
            return self.root_of(file);
        }
        [format!("{dir}/mod.rs"), format!("{dir}.rs")]
            .into_iter()
            .find(|f| self.files.contains(f))
            .unwrap_or_else(|| self.root_of(file))
    }

    /// The file a path leads to from `file`, or `None` for a path outside the crate.
    fn resolve(&self, file: &str, segs: &[String]) -> Option<String> {
        let mut it = segs.iter().peekable();
        let mut cur = match it.next()?.as_str() {
            "crate" => self.root_of(file),
            "self" => file.to_owned(),
            "super" => self.parent(file),
            s if s == self.lib_name && self.bin.contains(file) => "lib.rs".to_owned(),
            // A child module named without `self::` (`mount::Container` where `mod mount;`).
            s => self.child(file, s)?,
        };
        while it.peek().map(|s| s.as_str()) == Some("super") {
            it.next();
            cur = self.parent(&cur);
        }
        for s in it {
            match self.child(&cur, s) {
                Some(c) => cur = c,
                None => break,
            }
        }
        Some(cur)
    }
}

/// One import: where it is and what it names.
#[derive(Debug, Clone)]
struct Import {
    from: String,
    line: usize,
    path: String,
    to: String,
}

/// Every import of `file` within its crate.
fn imports(c: &Crate, file: &str) -> Vec<Import> {
    let text = fs::read_to_string(c.src.join(file)).expect("read source");
    let code = without_tests(&code_only(&text));
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut push = |at: usize, segs: Vec<String>| {
        if let Some(to) = c.resolve(file, &segs) {
            if to != file {
                out.push(Import {
                    from: file.to_owned(),
                    line: line_of(at),
                    path: segs.join("::"),
                    to,
                });
            }
        }
    };
    // `use` statements, braces expanded; their paths are then blanked so the scan below does
    // not count them twice.
    let mut rest_code = code.clone();
    let mut from = 0;
    while let Some(n) = code[from..].find("use ") {
        let at = from + n;
        from = at + 4;
        if at > 0 && is_ident(code[..at].chars().next_back().unwrap_or(' ')) {
            continue;
        }
        let Some(end) = code[at..].find(';').map(|e| at + e) else {
            break;
        };
        // A face's `pub use` (the crate's root, a folder's mod.rs) hands names on to the
        // face's users: part of the face's row, not an import of its own.
        let line_start = code[..at].rfind('\n').map_or(0, |n| n + 1);
        let face = file == "lib.rs" || file == "main.rs" || file.ends_with("/mod.rs");
        if face && code[line_start..at].trim_start().starts_with("pub") {
            rest_code.replace_range(at..end, &" ".repeat(end - at));
            continue;
        }
        for p in expand(&code[at + 4..end]) {
            push(at, p.split("::").map(str::to_owned).collect());
        }
        rest_code.replace_range(at..end, &" ".repeat(end - at));
    }
    // Paths in the code itself: `crate::…`, `super::…`, `self::…`, and the library's name.
    let starts = ["crate::", "super::", "self::"];
    for (at, _) in rest_code.char_indices() {
        let prev = rest_code[..at].chars().next_back();
        if prev.is_some_and(|p| is_ident(p) || p == ':') {
            continue;
        }
        let here = &rest_code[at..];
        let lib = format!("{}::", c.lib_name);
        if starts.iter().any(|s| here.starts_with(s))
            || (c.bin.contains(file) && here.starts_with(&lib))
        {
            push(at, segments_at(&rest_code, at));
        }
    }
    out
}

/// The strongly connected components with more than one node (Tarjan's algorithm).
fn circles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(lw));
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low[v];
                t.low.insert(v, lv.min(iw));
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Everything wrong with one crate against its table; empty when it keeps its layers.
fn faults(dir: &str, rows: &[Row]) -> Vec<String> {
    let root = workspace().join("crates").join(dir);
    let src = root.join("src");
    let files: BTreeSet<String> = sources(&src).into_iter().collect();
    let main_rs = fs::read_to_string(src.join("main.rs")).unwrap_or_default();
    let mut bin: BTreeSet<String> = BTreeSet::new();
    if files.contains("main.rs") {
        bin.insert("main.rs".into());
        for line in code_only(&main_rs).lines() {
            let l = line.trim();
            if let Some(m) = l
                .strip_prefix("mod ")
                .or_else(|| l.strip_prefix("pub mod "))
            {
                let m = m.trim_end_matches(';').trim();
                for f in [format!("{m}.rs"), format!("{m}/mod.rs")] {
                    if files.contains(&f) {
                        bin.insert(f);
                    }
                }
            }
        }
    }
    let c = Crate {
        src: src.clone(),
        files: files.clone(),
        lib_name: dir.replace('-', "_"),
        bin,
    };
    let mut faults = Vec::new();

    // Every file in exactly one row (the longest path that holds it), every row's path real.
    let mut unit_of: BTreeMap<String, (String, usize)> = BTreeMap::new();
    for f in &files {
        let best = rows
            .iter()
            .flat_map(|r| r.paths.iter().map(move |p| (p, r.layer)))
            .filter(|(p, _)| *p == f || (p.ends_with('/') && f.starts_with(p.as_str())))
            .max_by_key(|(p, _)| p.len());
        match best {
            Some((p, layer)) => {
                unit_of.insert(f.clone(), (p.clone(), layer));
            }
            None => faults.push(format!(
                "crates/{dir}/src/{f} is in no layer of docs/architecture.md: add it to the row it belongs to"
            )),
        }
    }
    for r in rows {
        for p in &r.paths {
            let there = if p.ends_with('/') {
                files.iter().any(|f| f.starts_with(p.as_str()))
            } else {
                files.contains(p)
            };
            if !there {
                faults.push(format!(
                    "docs/architecture.md names crates/{dir}/src/{p} (layer {} {}), which does not exist",
                    r.layer, r.name
                ));
            }
        }
    }

    // A reader that sees nothing passes everything: every crate here has at least one import
    // for every two files.
    let read: usize = files.iter().map(|f| imports(&c, f).len()).sum();
    if read * 2 < files.len() {
        faults.push(format!(
            "crates/{dir}: only {read} imports read in {} files; the reader no longer understands the sources",
            files.len()
        ));
    }

    let mut unit_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut evidence: BTreeMap<(String, String), Import> = BTreeMap::new();
    for f in &files {
        for imp in imports(&c, f) {
            let (Some((ua, la)), Some((ub, lb))) = (unit_of.get(&imp.from), unit_of.get(&imp.to))
            else {
                continue;
            };
            if lb < la {
                faults.push(format!(
                    "crates/{dir}/src/{}:{}: `{}` runs up from layer {la} ({ua}) to layer {lb} ({ub}); move what it needs down, or the module, and its row in docs/architecture.md",
                    imp.from, imp.line, imp.path
                ));
            }
            if ua != ub {
                unit_edges.entry(ua.clone()).or_default().insert(ub.clone());
                evidence
                    .entry((ua.clone(), ub.clone()))
                    .or_insert_with(|| imp.clone());
            }
            // A module's face (mod.rs, or the crate's root) declares its children and may
            // define what they share: a child using it is no circle.
            let ancestor = {
                let t = &imp.to;
                t == "lib.rs"
                    || t == "main.rs"
                    || (t.ends_with("/mod.rs")
                        && imp.from.starts_with(t.trim_end_matches("mod.rs")))
            };
            if !ancestor {
                file_edges
                    .entry(imp.from.clone())
                    .or_default()
                    .insert(imp.to.clone());
                evidence
                    .entry((imp.from.clone(), imp.to.clone()))
                    .or_insert(imp);
            }
        }
    }
    let show = |comp: &[String], edges: &BTreeMap<String, BTreeSet<String>>| -> String {
        let mut lines = Vec::new();
        for a in comp {
            for b in edges.get(a).into_iter().flatten() {
                if comp.contains(b) {
                    let e = &evidence[&(a.clone(), b.clone())];
                    lines.push(format!(
                        "    {a} -> {b} (crates/{dir}/src/{}:{}: `{}`)",
                        e.from, e.line, e.path
                    ));
                }
            }
        }
        lines.join("\n")
    };
    for comp in circles(&unit_edges) {
        faults.push(format!(
            "crates/{dir}: these layers' modules need each other in a circle: {}\n{}",
            comp.join(", "),
            show(&comp, &unit_edges)
        ));
    }
    for comp in circles(&file_edges) {
        faults.push(format!(
            "crates/{dir}: these files need each other in a circle: {}\n{}",
            comp.join(", "),
            show(&comp, &file_edges)
        ));
    }
    faults
}

#[test]
fn every_crate_keeps_its_layers() {
    let doc =
        fs::read_to_string(workspace().join("docs/architecture.md")).expect("docs/architecture.md");
    let tables = tables(&doc);
    for krate in [
        "igotchuu",
        "igotchuu-dbus",
        "igotchuu-monitor",
        "igotchuu-testkit",
    ] {
        assert!(
            tables.get(krate).is_some_and(|t| !t.is_empty()),
            "docs/architecture.md has no table under `## crates/{krate}`"
        );
    }
    let mut all = Vec::new();
    for (krate, rows) in &tables {
        all.extend(faults(krate, rows));
    }
    assert!(
        all.is_empty(),
        "the layers of docs/architecture.md are broken:\n{}",
        all.join("\n")
    );
}

/// The reader itself, on sources made up for it: a test that cannot see an import would pass
/// whatever the code does.
#[test]
fn the_reader_finds_imports_in_every_form() {
    let code = code_only(
        "use crate::a::{b, c::{self, D}};\n// crate::commented::out\nlet s = \"crate::in_a_string\";\nfn f() { super::x::y(); crate::e::F; }\n#[cfg(test)]\nmod tests { use crate::only_in_tests; }\n",
    );
    let code = without_tests(&code);
    assert!(
        !code.contains("commented")
            && !code.contains("in_a_string")
            && !code.contains("only_in_tests"),
        "{code}"
    );
    assert_eq!(
        expand("crate::a::{b as bee, c::{self, D}}"),
        ["crate::a::b", "crate::a::c::self", "crate::a::c::D"]
    );
    assert_eq!(expand("crate::a as b"), ["crate::a"]);
    let files: BTreeSet<String> = [
        "lib.rs", "a.rs", "a/c.rs", "e/mod.rs", "x.rs", "k/m.rs", "k/mod.rs",
    ]
    .map(String::from)
    .into();
    let c = Crate {
        src: PathBuf::new(),
        files,
        lib_name: "t".into(),
        bin: BTreeSet::new(),
    };
    let segs = |p: &str| p.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        c.resolve("x.rs", &segs("crate::a::c::D")).as_deref(),
        Some("a/c.rs")
    );
    assert_eq!(
        c.resolve("x.rs", &segs("crate::e::F")).as_deref(),
        Some("e/mod.rs")
    );
    assert_eq!(
        c.resolve("k/m.rs", &segs("super::x")).as_deref(),
        Some("k/mod.rs")
    );
    assert_eq!(
        c.resolve("k/m.rs", &segs("super::super::x::y")).as_deref(),
        Some("x.rs")
    );
    assert_eq!(
        c.resolve("k/mod.rs", &segs("m::f")).as_deref(),
        Some("k/m.rs")
    );
    assert_eq!(c.resolve("x.rs", &segs("std::fs")), None);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("p", "q"), ("q", "r"), ("r", "p"), ("r", "s")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(circles(&edges), [["p", "q", "r"]]);
}
