//! Reading restic's command-line flags, in the two forms its flag parser (pflag) accepts:
//! `--flag value` and `--flag=value`. The plan (which flags igotchuu must know about), the global
//! options passed to other restic commands and the secret scrubber all read flags through here,
//! so the two forms are handled the same everywhere.

/// Splits `--flag=value` into the flag and its inline value; anything else is a flag (or word)
/// without one.
pub fn split(a: &str) -> (&str, Option<&str>) {
    match a.split_once('=') {
        Some((name, value)) if name.starts_with('-') => (name, Some(value)),
        _ => (a, None),
    }
}

/// Whether `a` is one of `names`, with or without an inline value.
pub fn is_any(a: &str, names: &[&str]) -> bool {
    names.contains(&split(a).0)
}

/// The inline value of `a` when it is one of `names` (`--password-command=cmd` → `cmd`).
pub fn inline_value<'a>(a: &'a str, names: &[&str]) -> Option<(&'a str, &'a str)> {
    match split(a) {
        (name, Some(v)) if names.contains(&name) => Some((name, v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_forms_are_read_alike() {
        assert_eq!(split("--cache-dir=/x=y"), ("--cache-dir", Some("/x=y")));
        assert_eq!(split("--cache-dir"), ("--cache-dir", None));
        assert_eq!(split("key=value"), ("key=value", None));
        assert!(is_any("--no-cache", &["--no-cache"]));
        assert!(is_any("--cache-dir=/c", &["--cache-dir"]));
        assert!(!is_any("--cache-directory", &["--cache-dir"]));
        assert_eq!(
            inline_value("-p=secret", &["-p", "--password-file"]),
            Some(("-p", "secret"))
        );
        assert_eq!(inline_value("-p", &["-p"]), None);
    }
}
