//! Standard output and error that a closed pipe cannot crash.
//!
//! `amictl audit --output json | head` closes stdout early. `println!` would panic there; these
//! functions instead stop writing quietly and let the command finish with the exit code its
//! work earned (a script reading the status still learns whether the audit failed). Any other
//! write error (a full disk) is remembered and turned into an error at exit.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
static WRITE_ERROR: Mutex<Option<String>> = Mutex::new(None);

/// Writes `text` to stdout as it is (no newline added).
pub fn print(text: &str) {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            if let Ok(mut slot) = WRITE_ERROR.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Writes one line to stderr; a closed stderr is ignored (there is nobody left to tell).
pub fn eprint_line(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A write error other than a closed pipe, if stdout had one.
pub fn write_error() -> Option<String> {
    WRITE_ERROR.lock().ok().and_then(|s| s.clone())
}

/// `println!` through [`print`].
macro_rules! outln {
    () => { $crate::out::print("\n") };
    ($($arg:tt)*) => { $crate::out::print(&format!("{}\n", format_args!($($arg)*))) };
}
pub(crate) use outln;
