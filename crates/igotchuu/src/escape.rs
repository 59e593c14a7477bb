//! Text from outside shown to a person: file names restic reports, its error messages, paths and
//! values from a config. A file name is chosen by whoever owns the file, and a terminal obeys the
//! control characters in it: `x\e]0;TITLE\a\e[2J\e[31mEVIL` sets the admin's window title, clears
//! the screen and turns the rest red; a newline in it starts a line of its own, which can pass for
//! one of igotchuu's ("igotchuu: backup finished: success"). So every sink that renders for a
//! person (the terminal, the journal, stdout and stderr) passes text through here. Producers keep
//! the raw value, and so does D-Bus, where a string is data for a program, not text for a screen.
//!
//! The rendering: every control character (C0 U+0000–U+001F, DEL U+007F, C1 U+0080–U+009F, that
//! is exactly [`char::is_control`]) becomes `\xNN`, its code point as two lowercase hex digits:
//! ESC is `\x1b`, BEL `\x07`, a newline `\x0a`. One rule for all of them, short, and the form
//! Python, C and Rust readers know. A backslash is not doubled: the point is a harmless and
//! readable rendering, not a reversible encoding (the raw name is in the D-Bus signal and in the
//! restic snapshot), and doubling would garble every other message that holds a backslash.
//!
//! Two strengths: [`line`] for a field that must stay on one line (file name, error text, item,
//! any line igotchuu prints), [`text`] for multi-line text igotchuu lays out itself (the plan, the
//! summary), which keeps its newlines.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is escaped by [`line`] (all of them) and [`text`] (all but `\n`).
pub fn is_control(c: char) -> bool {
    c.is_control()
}

/// `s` for one line: every control character escaped, `\n` and `\r` included, so the text can
/// neither drive the terminal nor start a line of its own.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, |_| false)
}

/// `s` for multi-line text igotchuu lays out itself: like [`line`], but newlines stay.
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, |c| c == '\n')
}

/// Multi-line text quoted inside one entry (a `FAIL:` line quoting restic's stderr): each line
/// escaped as by [`line`], and every line after the first starts with `indent`, so none can pass
/// for an entry of its own.
pub fn indented(s: &str, indent: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, l) in s.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
            out.push_str(indent);
        }
        out.push_str(&line(l));
    }
    out
}

fn escape(s: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    let needs = |c: char| is_control(c) && !keep(c);
    let Some(first) = s.find(needs) else {
        return Cow::Borrowed(s);
    };
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str(&s[..first]);
    for c in s[first..].chars() {
        if needs(c) {
            // Every control character is below U+00A0, so two hex digits always suffice.
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOSTILE: &str = "x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\nname";

    #[test]
    fn a_hostile_file_name_is_shown_visibly_on_one_line() {
        assert_eq!(
            line(HOSTILE),
            r"x\x1b]0;TITLE\x07\x1b[2J\x1b[31mEVIL\x0aname"
        );
        assert_eq!(
            text(HOSTILE),
            "x\\x1b]0;TITLE\\x07\\x1b[2J\\x1b[31mEVIL\nname"
        );
    }

    #[test]
    fn every_kind_of_control_character_is_escaped() {
        assert_eq!(line("\0\t\r\n"), r"\x00\x09\x0d\x0a");
        assert_eq!(line("a\u{7f}b"), r"a\x7fb");
        // C1: an 8-bit CSI, which some terminals obey even UTF-8 encoded.
        assert_eq!(line("\u{80}\u{9b}31m\u{9f}"), r"\x80\x9b31m\x9f");
        assert_eq!(text("a\r\nb"), "a\\x0d\nb");
    }

    #[test]
    fn ordinary_text_is_left_alone_and_not_copied() {
        for s in [
            "",
            "/home/ana/Fotos/caf\u{e9} \u{1f600}.jpg",
            r"C:\path\x1b literally",
            "\u{a0}\u{ad}\u{200b}",
        ] {
            assert!(matches!(line(s), Cow::Borrowed(b) if b == s), "{s:?}");
            assert!(matches!(text(s), Cow::Borrowed(b) if b == s), "{s:?}");
        }
        assert!(matches!(text("two\nlines"), Cow::Borrowed(_)));
    }

    #[test]
    fn quoted_lines_are_indented_and_escaped() {
        assert_eq!(
            indented("Fatal: no repository\nok:   forged\r\x1b[2J", "      "),
            "Fatal: no repository\n      ok:   forged\\x0d\\x1b[2J"
        );
        assert_eq!(indented("one", "  "), "one");
    }

    proptest! {
        /// Whatever the input, no control character survives `line`, and only `\n` survives
        /// `text`, which keeps every line break; text without control characters comes through as
        /// it is.
        #[test]
        fn output_never_holds_a_control_character(s in any::<String>()) {
            let l = line(&s);
            prop_assert!(!l.chars().any(is_control), "{:?}", l);
            let t = text(&s);
            prop_assert!(!t.chars().any(|c| is_control(c) && c != '\n'), "{:?}", t);
            if !s.chars().any(is_control) {
                prop_assert_eq!(l.as_ref(), s.as_str());
            }
            prop_assert_eq!(t.split('\n').count(), s.split('\n').count());
        }

        /// Same for strings made mostly of escape-sequence material.
        #[test]
        fn escape_soup_is_defused(s in "[\\x00-\\x1f\\x7f\u{80}-\u{9f}\\[\\]a;0-9]{0,40}") {
            let l = line(&s);
            prop_assert!(!l.chars().any(is_control), "{:?}", l);
            let t = indented(&s, "  ");
            prop_assert!(!t.chars().any(|c| is_control(c) && c != '\n'), "{:?}", t);
            prop_assert!(t.split('\n').skip(1).all(|l| l.starts_with("  ")), "{:?}", t);
        }
    }
}
