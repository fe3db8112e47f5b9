//! Progress on long waits: a spinner naming the step for a person at a terminal; without one
//! (a pipe, CI, cron), a line on stderr when a step begins, whenever what it waits for changes,
//! and at least once a minute — what it waits for, how far, how long so far.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amictl_core::engine::Progress;

/// How often a wait that changes nothing says it is still waiting.
const STILL_WAITING: Duration = Duration::from_secs(60);

pub struct Spinner {
    prefix: String,
    terminal: bool,
    bar: Mutex<Option<indicatif::ProgressBar>>,
    /// Without a terminal: the step, when it began, the last note printed and when.
    lines: Mutex<Option<Lines>>,
}

struct Lines {
    step: String,
    began: Instant,
    note: String,
    printed: Instant,
}

impl Spinner {
    pub fn new(prefix: &str) -> Self {
        let terminal = std::io::stderr().is_terminal();
        Spinner { prefix: prefix.into(), terminal, bar: Mutex::new(None), lines: Mutex::new(None) }
    }

    fn line(&self, text: &str) {
        crate::out::eprint_line(&format!("{}: {text}", self.prefix));
    }
}

/// `1m05s`-style elapsed time, to the second.
fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

impl Progress for Spinner {
    fn begin(&self, what: &str) {
        if !self.terminal {
            self.line(what);
            let now = Instant::now();
            *self.lines.lock().unwrap() =
                Some(Lines { step: what.into(), began: now, note: String::new(), printed: now });
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{}: {what}", self.prefix));
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn note(&self, how: &str) {
        if !self.terminal {
            let mut guard = self.lines.lock().unwrap();
            let Some(l) = guard.as_mut() else { return };
            if l.note != how || l.printed.elapsed() >= STILL_WAITING {
                self.line(&format!("{}: {how} ({})", l.step, elapsed(l.began.elapsed())));
                l.note = how.into();
                l.printed = Instant::now();
            }
            return;
        }
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            let step = bar.message().split(" (").next().unwrap_or_default().to_string();
            bar.set_message(format!("{step} ({how})"));
        }
    }

    fn end(&self) {
        if !self.terminal {
            *self.lines.lock().unwrap() = None;
            return;
        }
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::elapsed;
    use std::time::Duration;

    #[test]
    fn elapsed_time_reads_to_the_second() {
        assert_eq!(elapsed(Duration::from_millis(4_500)), "4s");
        assert_eq!(elapsed(Duration::from_secs(65)), "1m05s");
        assert_eq!(elapsed(Duration::from_secs(3_600)), "60m00s");
    }
}
