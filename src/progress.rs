//! Progress on long work at the command line (`sandlot prepare`, and `run`
//! when its language must be prepared first): a spinner naming the language,
//! the time so far and what the first preparation takes, on a terminal
//! (indicatif); elsewhere the log's plain lines say each step. Log lines
//! written while a spinner shows go above it (`LogWriter`), so the two never
//! garble each other.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::language::Language;
use crate::sync::lock;

/// The spinner on screen, if any: log lines are written around it.
static SHOWING: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A language being prepared, shown until `done` or drop.
pub struct Preparing {
    began: Instant,
    bar: Option<ProgressBar>,
}

impl Preparing {
    /// Shows a spinner for `language` if standard error is a terminal.
    pub fn start(language: Language) -> Preparing {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template");
            let bar = ProgressBar::new_spinner().with_style(style);
            bar.set_message(format!(
                "preparing {language} (its first preparation on a machine takes ~{} s):",
                language.first_preparation().as_secs()
            ));
            bar.enable_steady_tick(Duration::from_millis(120));
            *lock(&SHOWING) = Some(bar.clone());
            bar
        });
        Preparing { began: Instant::now(), bar }
    }

    /// Clears the spinner; how long the preparation took.
    pub fn done(self) -> Duration {
        self.began.elapsed()
    }
}

impl Drop for Preparing {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            lock(&SHOWING).take();
        }
    }
}

/// Standard error for the log: a line is written above the spinner when one shows.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let showing = lock(&SHOWING).clone();
        match showing {
            Some(bar) => bar.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
