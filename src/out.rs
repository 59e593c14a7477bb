//! Output that never panics. `println!`/`eprintln!` panic when the write fails, and writes do
//! fail at night: the ssh session a backup was started from drops (EIO on the tty) or the pipe a
//! log went into closes (EPIPE; Rust ignores SIGPIPE). A panic there would skip cleanup and leave
//! the snapshots behind, so every message goes through these and a failed write is dropped.

/// Like `eprintln!`, ignoring write errors.
macro_rules! say_err {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($t)*);
    }};
}

/// Like `println!`, ignoring write errors.
macro_rules! say_out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// Like `print!`, ignoring write errors.
macro_rules! say_out_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let mut o = std::io::stdout().lock();
        let _ = write!(o, $($t)*);
        let _ = o.flush();
    }};
}
