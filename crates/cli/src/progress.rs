//! Progress bars (indicatif) on a terminal; nothing otherwise. Notes (such as "resuming") go to
//! stderr unless `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use troca_net::Progress;

#[derive(Debug)]
pub struct Bar {
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Bar {
    pub fn new(label: &str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg:24!} {bar:30.cyan/blue} {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(label.to_owned());
            bar
        });
        Self { bar, quiet }
    }
}

impl Bar {
    /// A line on stderr that does not tear the bar (no `troca:` prefix: not a warning).
    pub fn note_plain(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64, done: u64) {
        if let Some(b) = &self.bar {
            b.set_length(total);
            b.set_position(done);
            b.reset_eta();
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn note(&self, msg: &str) {
        if self.quiet {
            return;
        }
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("troca: {msg}"),
        }
    }
    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// A running copy on a terminal: a spinner with the files and bytes the hub says it has
/// copied (nothing with `--json`, `--quiet`, or off a terminal).
#[derive(Debug)]
pub struct CopyShown {
    spinner: Option<ProgressBar>,
    from: String,
}

impl CopyShown {
    pub fn new(global: &crate::args::Global, from: &str) -> Self {
        let shown = !global.quiet && !global.json && std::io::stderr().is_terminal();
        let spinner = shown.then(|| {
            let s = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            s.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
            s.set_message(format!("copying {}", crate::output::safe(from)));
            s.enable_steady_tick(std::time::Duration::from_millis(200));
            s
        });
        Self {
            spinner,
            from: from.to_owned(),
        }
    }

    /// The hub's word of how far it has come.
    pub fn update(&self, files: u64, bytes: u64) {
        if let Some(s) = &self.spinner {
            s.set_message(format!(
                "copying {}: {} so far",
                crate::output::safe(&self.from),
                crate::client::copied_amount(files, bytes)
            ));
        }
    }

    pub fn finish(&self) {
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
    }
}
