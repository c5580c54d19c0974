//! Watching the shared folder (inotify, through `notify`): any change outside hidden folders
//! wakes the peer, which rescans and tells the tracker. Events are gathered until the folder has
//! been quiet for a moment, so copying a large file in causes one rescan, not thousands.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long the folder must be quiet before a rescan.
const QUIET: Duration = Duration::from_millis(400);

/// A running watch; dropping it stops watching.
pub(crate) struct Watching {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    stop: CancellationToken,
}

pub(crate) fn start(dir: &Path, stop: CancellationToken) -> std::io::Result<Watching> {
    use notify::Watcher;
    let (tx, events) = mpsc::unbounded_channel();
    let root = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let relevant = match &ev {
            Ok(ev) => ev.paths.iter().any(|p| !hidden(&root, p)),
            // An overflowed queue means events were lost: rescan to be sure.
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(std::io::Error::other)?;
    watcher
        .watch(dir, notify::RecursiveMode::Recursive)
        .map_err(std::io::Error::other)?;
    Ok(Watching {
        _watcher: watcher,
        events,
        stop,
    })
}

/// Whether `path` is, or is inside, a hidden entry below `root` (partial downloads live in
/// `.troca-swarm`; their writes must not cause rescans).
fn hidden(root: &Path, path: &Path) -> bool {
    let rel: PathBuf = path.strip_prefix(root).unwrap_or(path).to_path_buf();
    rel.components().any(|c| match c {
        Component::Normal(s) => s.to_string_lossy().starts_with('.'),
        _ => false,
    })
}

impl Watching {
    /// Waits for a change followed by a quiet moment; false once stopped.
    pub(crate) async fn changed(&mut self) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => return false,
            got = self.events.recv() => if got.is_none() { return false },
        }
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return false,
                got = tokio::time::timeout(QUIET, self.events.recv()) => match got {
                    Err(_) => return true,
                    Ok(None) => return false,
                    Ok(Some(())) => continue,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_inside_hidden_folders_are_ignored() {
        let root = Path::new("/share");
        assert!(hidden(root, Path::new("/share/.troca-swarm/abc.part")));
        assert!(hidden(root, Path::new("/share/a/.x")));
        assert!(!hidden(root, Path::new("/share/a/b.txt")));
        assert!(!hidden(root, Path::new("/share")));
    }
}
