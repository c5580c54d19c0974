//! Transfers cut off by a lost connection are taken up again: the client waits a little,
//! connects again and runs the transfer once more, which resumes where it stopped (a download
//! from its `.part` file or from the bytes already written out, an upload from what the hub
//! holds of it). A few times, with growing pauses, as `--retries` says.

use crate::args::Global;
use std::time::Duration;
use troca_net::{ClientError, HubClient};
use troca_proto::ErrorCode;

/// Tries after the first, unless `--retries` says otherwise.
pub const DEFAULT_RETRIES: u32 = 5;
/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Whether another try may succeed where `e` failed: the connection was lost or went silent,
/// the hub could not be reached, or it was busy. A refusal, a failed check or a local error
/// would only fail again.
pub fn transient(e: &ClientError) -> bool {
    match e {
        ClientError::Io(_) | ClientError::Connect { .. } => true,
        ClientError::Hub { code, .. } => *code == ErrorCode::Busy,
        _ => false,
    }
}

/// The pause before the `n`th try again: 1 s, 2 s, 4 s … at most [`MAX_PAUSE`].
fn pause(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(MAX_PAUSE)
}

/// The tries left to one transfer.
pub struct Retries<'a> {
    global: &'a Global,
    used: u32,
}

impl<'a> Retries<'a> {
    pub fn new(global: &'a Global) -> Self {
        Retries { global, used: 0 }
    }

    /// Runs `transfer` on `client`, and again on a new connection after each lost one while
    /// tries are left.
    pub async fn run<T>(
        &mut self,
        client: &mut HubClient,
        what: &str,
        mut transfer: impl AsyncFnMut(&mut HubClient) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        loop {
            let e = match transfer(client).await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            if !self.again(client, what, &e).await {
                return Err(e);
            }
        }
    }

    /// After `err` cut off the transfer of `what`: `true` once `client` is connected again for
    /// another try; `false` when `err` is not worth another try or none is left (the caller
    /// reports `err`). Says on stderr what it does, unless quiet.
    pub async fn again(&mut self, client: &mut HubClient, what: &str, err: &ClientError) -> bool {
        if !transient(err) {
            return false;
        }
        let mut why = err.to_string();
        while self.used < self.global.retries {
            self.used += 1;
            let wait = pause(self.used);
            if !self.global.quiet {
                eprintln!(
                    "troca: {what}: {why}; trying again in {}s ({} of {})",
                    wait.as_secs(),
                    self.used,
                    self.global.retries
                );
            }
            tokio::time::sleep(wait).await;
            match crate::client::connect(self.global).await {
                Ok(c) => {
                    *client = c;
                    return true;
                }
                Err(e) => match e.downcast_ref::<ClientError>() {
                    Some(e) if transient(e) => why = e.to_string(),
                    // A changed key, say: no use trying again.
                    _ => {
                        if !self.global.quiet {
                            eprintln!("troca: {what}: {e:#}");
                        }
                        return false;
                    }
                },
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_half_a_minute() {
        let secs: Vec<u64> = (1..=8).map(|n| pause(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn only_a_lost_connection_or_a_busy_hub_is_tried_again() {
        let lost = ClientError::Io(std::io::ErrorKind::ConnectionReset.into());
        assert!(transient(&lost));
        let busy = ClientError::Hub {
            code: ErrorCode::Busy,
            message: "busy".into(),
        };
        assert!(transient(&busy));
        let taken = ClientError::Hub {
            code: ErrorCode::AlreadyExists,
            message: "taken".into(),
        };
        assert!(!transient(&taken));
        let local = ClientError::local(std::path::Path::new("x"), lost_io());
        assert!(!transient(&local));
    }

    fn lost_io() -> std::io::Error {
        std::io::ErrorKind::ConnectionReset.into()
    }
}
