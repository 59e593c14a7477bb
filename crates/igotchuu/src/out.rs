//! Output that never panics. `println!`/`eprintln!` panic when the write fails, and writes do
//! fail at night: the ssh session a backup was started from drops (EIO on the tty) or the pipe a
//! log went into closes (EPIPE; Rust ignores SIGPIPE). A panic there would skip cleanup and leave
//! the snapshots behind, so every message goes through these and a failed write is dropped.
//!
//! They are also the last line of defence for the terminal: whatever they print passes through
//! [`crate::escape::text`], so a control character in a path or a message that a caller did
//! not escape is shown as `\x1b`, never obeyed. Newlines stay (a caller may print several lines
//! at once, like the plan); a field that must stay on one line is escaped with
//! [`crate::escape::line`] by its renderer before it gets here.

/// Like `eprintln!`, ignoring write errors; control characters other than `\n` escaped.
#[macro_export]
macro_rules! say_err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let s = format!($($t)*);
        let _ = writeln!(std::io::stderr().lock(), "{}", $crate::escape::text(&s));
    }};
}

/// Like `println!`, ignoring write errors; control characters other than `\n` escaped.
#[macro_export]
macro_rules! say_out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let s = format!($($t)*);
        let _ = writeln!(std::io::stdout().lock(), "{}", $crate::escape::text(&s));
    }};
}

/// Like `print!`, ignoring write errors; control characters other than `\n` escaped.
#[macro_export]
macro_rules! say_out_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let s = format!($($t)*);
        let mut o = std::io::stdout().lock();
        let _ = o.write_all($crate::escape::text(&s).as_bytes());
        let _ = o.flush();
    }};
}
