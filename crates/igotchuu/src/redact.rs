//! Keeps secrets out of everything igotchuu prints or publishes: `--dry-run`, logs, D-Bus.

/// restic flags whose value is secret or may contain one (a password command line often embeds
/// the password or a token).
const SECRET_FLAGS: &[&str] = &["--password-command"];

/// Environment variables whose values are secret.
pub fn is_secret_env(name: &str) -> bool {
    matches!(
        name,
        "RESTIC_PASSWORD"
            | "RESTIC_PASSWORD_COMMAND"
            | "AWS_SECRET_ACCESS_KEY"
            | "B2_ACCOUNT_KEY"
            | "AZURE_ACCOUNT_KEY"
            | "AZURE_ACCOUNT_SAS"
            | "GOOGLE_ACCESS_TOKEN"
            | "OS_PASSWORD"
            | "ST_KEY"
            | "RESTIC_REST_PASSWORD"
    ) || name.ends_with("_PASSWORD")
        || name.ends_with("_SECRET")
        || name.ends_with("_TOKEN")
}

/// Replaces the password in `scheme://user:password@host` (also inside restic's `rest:`/`s3:`
/// prefixes) with `***`.
pub fn url(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let auth_start = scheme_end + 3;
    let rest = &s[auth_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_owned();
    };
    let userinfo = &authority[..at];
    let redacted_userinfo = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        // A lone user part can be a token (e.g. GitHub-style), but for sftp it is a login name;
        // keep it, since it is needed to understand errors.
        None => userinfo.to_owned(),
    };
    format!(
        "{}{}{}",
        &s[..auth_start],
        redacted_userinfo,
        &s[auth_start + at..]
    )
}

/// Option names whose values are secrets inside a comma-separated option list, as in
/// `mount -t cifs -o username=u,password=…` in an `exec_before_snapshot`.
const SECRET_OPTIONS: &[&str] = &["password", "passwd", "pass", "secret", "token", "key"];

/// Masks the values of `password=…`-like options in a comma-separated list.
fn options(a: &str) -> String {
    if !a.contains('=') {
        return a.to_owned();
    }
    a.split(',')
        .map(|part| match part.split_once('=') {
            Some((k, _)) if SECRET_OPTIONS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Redacts one argument of a restic command line. `prev` is the argument before it, for the
/// `--flag value` form.
pub fn arg(prev: Option<&str>, a: &str) -> String {
    if let Some(p) = prev {
        if SECRET_FLAGS.contains(&p) {
            return "***".to_owned();
        }
    }
    if let Some((f, _)) = crate::args::inline_value(a, SECRET_FLAGS) {
        return format!("{f}=***");
    }
    options(&url(a))
}

/// Redacts a whole argv.
pub fn argv(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut prev: Option<&str> = None;
    for a in args {
        out.push(arg(prev, a));
        prev = Some(a.as_str());
    }
    out
}

/// The password part of `scheme://user:password@host…`, if any.
pub fn url_password(s: &str) -> Option<&str> {
    let rest = &s[s.find("://")? + 3..];
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let userinfo = &authority[..authority.rfind('@')?];
    let pw = &userinfo[userinfo.find(':')? + 1..];
    (!pw.is_empty()).then_some(pw)
}

/// Secret strings that restic may echo back (in an error naming the repository, say), collected
/// from the repository strings and password settings restic is given.
pub fn secrets_of(args: &[String], env: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut prev: Option<&str> = None;
    for a in args {
        if let Some(p) = url_password(a) {
            out.push(p.to_owned());
        }
        if prev.is_some_and(|p| SECRET_FLAGS.contains(&p)) {
            out.push(a.clone());
        }
        if let Some((_, v)) = crate::args::inline_value(a, SECRET_FLAGS) {
            out.push(v.to_owned());
        }
        prev = Some(a);
    }
    for (k, v) in env {
        if is_secret_env(k) {
            out.push(v.clone());
        } else if let Some(p) = url_password(v) {
            out.push(p.to_owned());
        }
    }
    // Very short values would blank out ordinary words; they are not worth hiding that way.
    out.retain(|s| s.len() >= 4);
    out.sort();
    out.dedup();
    out
}

/// Replaces every occurrence of a secret in `text` with `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut t = text.to_owned();
    for s in secrets {
        if t.contains(s.as_str()) {
            t = t.replace(s.as_str(), "***");
        }
    }
    t
}

/// Redacts an environment value by its variable's name.
pub fn env_value(name: &str, value: &str) -> String {
    if is_secret_env(name) {
        "***".to_owned()
    } else if name == "RESTIC_REPOSITORY" {
        url(value)
    } else {
        value.to_owned()
    }
}

/// A URL as it may be shown: scheme and host, nothing after (the path of a ping URL holds the
/// check's key; `user:password@` goes too).
pub fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            // user:password@ goes too.
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://{host}/…")
        }
        None => "<ping_url>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password_but_keep_user_and_host() {
        assert_eq!(
            url("rest:https://alice:hunter2@backup.example:8000/repo"),
            "rest:https://alice:***@backup.example:8000/repo"
        );
        assert_eq!(
            url("sftp:user@host:/srv/restic"),
            "sftp:user@host:/srv/restic"
        );
        assert_eq!(url("/srv/restic"), "/srv/restic");
        assert_eq!(
            url("s3:https://s3.example/bucket"),
            "s3:https://s3.example/bucket"
        );
    }

    #[test]
    fn password_command_values_are_hidden_in_both_forms() {
        let a: Vec<String> = [
            "--password-command",
            "echo hunter2",
            "--password-command=cat /k",
            "-x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            argv(&a),
            vec!["--password-command", "***", "--password-command=***", "-x"]
        );
    }

    #[test]
    fn secrets_echoed_by_restic_are_scrubbed() {
        let args: Vec<String> = [
            "-r",
            "rest:https://u:s3cret-pw@h/r",
            "--password-command",
            "pass show backup",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let env = vec![
            ("RESTIC_PASSWORD".to_owned(), "hunter22".to_owned()),
            (
                "RESTIC_REPOSITORY".to_owned(),
                "s3:https://k:envsecret@h/b".to_owned(),
            ),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let s = secrets_of(&args, &env);
        let text = "Fatal: unable to open rest:https://u:s3cret-pw@h/r (envsecret, hunter22): pass show backup failed; /root";
        assert_eq!(
            scrub(text, &s),
            "Fatal: unable to open rest:https://u:***@h/r (***, ***): *** failed; /root"
        );
    }

    #[test]
    fn mount_option_passwords_are_hidden() {
        let a: Vec<String> = [
            "mount",
            "-o",
            "username=bob,password=hunter2,vers=3",
            "//srv/x",
            "/mnt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            argv(&a).join(" "),
            "mount -o username=bob,password=***,vers=3 //srv/x /mnt"
        );
    }

    #[test]
    fn secret_env_values_are_hidden() {
        assert_eq!(env_value("RESTIC_PASSWORD", "hunter2"), "***");
        assert_eq!(env_value("RESTIC_PASSWORD_COMMAND", "echo x"), "***");
        assert_eq!(env_value("RESTIC_PASSWORD_FILE", "/root/pw"), "/root/pw");
        assert_eq!(
            env_value("RESTIC_REPOSITORY", "rest:http://u:p@h/"),
            "rest:http://u:***@h/"
        );
    }
}
