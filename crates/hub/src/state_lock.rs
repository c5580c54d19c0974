//! One hub per state folder. A hub starting clears what an earlier run left half-done in its
//! state folder (staged batches of small files) and keeps caches of its records in memory, so a
//! second hub on the same folder would delete the first one's uploads in progress and both would
//! go on from diverging views. The first hub holds an exclusive `flock` on `STATE/hub.lock` for
//! as long as it runs (the kernel drops it when the process ends, however it ends); a second is
//! refused at start with the first one's process id.

use crate::error::HubError;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file's name in the state folder.
const LOCK_FILE: &str = "hub.lock";

/// The hub's hold on its state folder, released when dropped.
#[derive(Debug)]
pub struct StateLock {
    _file: std::fs::File,
}

impl StateLock {
    /// Takes the state folder `dir` (which must exist), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, HubError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| HubError::io(format!("cannot open {}", path.display()), e))?;
        let locked = rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive);
        match locked {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => String::new(),
                    pid => format!(" (process {pid})"),
                };
                return Err(HubError::BadRequest(format!(
                    "another hub{holder} is using the state folder {}; stop it first, or give \
                     this hub a --state folder of its own",
                    dir.display()
                )));
            }
            Err(e) => {
                return Err(HubError::io(
                    format!("cannot lock {}", path.display()),
                    e.into(),
                ))
            }
        }
        // Who holds it, for the message a second hub gives.
        let written = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        written.map_err(|e| HubError::io(format!("cannot write {}", path.display()), e))?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_hold_on_one_state_folder_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        let second = StateLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            second.contains(&format!("process {}", std::process::id())),
            "{second}"
        );
        drop(first);
        StateLock::acquire(dir.path()).unwrap();
    }
}
