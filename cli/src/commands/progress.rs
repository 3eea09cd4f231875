//! Transfer progress for pull and push: indicatif bars when stderr is a
//! terminal, nothing otherwise (logs and CI stay clean).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_registry::client::Progress;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress bars, one per blob.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

/// A progress reporter for the current terminal, or `None` when stderr is
/// not one.
pub fn for_terminal(quiet: bool) -> Option<Arc<dyn Progress>> {
    if quiet || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(Bars {
        multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
        bars: Mutex::new(HashMap::new()),
    }))
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

impl Progress for Bars {
    fn blob_started(&self, digest: &str, size: u64) {
        let bar = self.multi.add(ProgressBar::new(size));
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(short(digest).to_owned());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.to_owned(), bar);
        }
    }

    fn blob_progress(&self, digest: &str, done: u64) {
        if let Ok(bars) = self.bars.lock()
            && let Some(bar) = bars.get(digest)
        {
            bar.set_position(done);
        }
    }

    fn blob_done(&self, digest: &str, skipped: bool) {
        if let Ok(bars) = self.bars.lock()
            && let Some(bar) = bars.get(digest)
        {
            bar.finish_with_message(if skipped { "already exists" } else { "done" });
        }
    }

    fn retrying(&self, what: &str, attempt: u32, delay: Duration, error: &str) {
        let _ = self.multi.println(format!(
            "{what}: attempt {attempt} failed ({error}); retrying in {delay:?}"
        ));
    }
}
