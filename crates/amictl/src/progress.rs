//! Progress on long waits, for a person at a terminal: a spinner naming the step.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use amictl_core::engine::Progress;

/// A spinner on stderr while a step runs; nothing when stderr is not a terminal.
pub struct Spinner {
    prefix: String,
    bar: Mutex<Option<indicatif::ProgressBar>>,
}

impl Spinner {
    pub fn new(prefix: &str) -> Self {
        Spinner { prefix: prefix.into(), bar: Mutex::new(None) }
    }
}

impl Progress for Spinner {
    fn begin(&self, what: &str) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(format!("{}: {what}", self.prefix));
        bar.enable_steady_tick(Duration::from_millis(120));
        *self.bar.lock().unwrap() = Some(bar);
    }

    fn note(&self, how: &str) {
        if let Some(bar) = self.bar.lock().unwrap().as_ref() {
            let step = bar.message().split(" (").next().unwrap_or_default().to_string();
            bar.set_message(format!("{step} ({how})"));
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().unwrap().take() {
            bar.finish_and_clear();
        }
    }
}
