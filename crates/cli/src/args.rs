//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "troca",
    version,
    about = "Share files on a network: a hub, its clients, and a swarm"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The hub to talk to.
    #[arg(
        long,
        global = true,
        env = "TROCA_HUB",
        default_value = "127.0.0.1:13370",
        value_name = "HOST:PORT"
    )]
    pub hub: String,
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or notes on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// The name this client shows to others (default: user@host).
    #[arg(long, global = true, env = "TROCA_NAME")]
    pub name: Option<String>,
    /// Read the access token from this file (or set TROCA_TOKEN).
    #[arg(long, global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a folder: run a hub.
    Serve(Serve),
    /// List the hub's files.
    Ls {
        /// Only names starting with this.
        prefix: Option<String>,
    },
    /// Upload files to the hub.
    Put {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The name to store a single file under (default: its file name).
        #[arg(long = "as", value_name = "NAME")]
        as_name: Option<String>,
        /// Replace files that already exist on the hub.
        #[arg(long)]
        force: bool,
    },
    /// Download files from the hub.
    Get {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Where to save: a folder, a file name (one NAME), or - for stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Overwrite local files instead of saving as NAME_downloaded.EXT.
        #[arg(long)]
        force: bool,
    },
    /// Delete files on the hub.
    Rm {
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct Serve {
    /// The folder to share (created if missing).
    #[arg(default_value = "./troca-files")]
    pub dir: PathBuf,
    /// Address for the native protocol; port 0 picks a free port. Use 0.0.0.0:13370 to expose
    /// the hub to the network.
    #[arg(long, default_value = "127.0.0.1:13370", value_name = "ADDR")]
    pub listen: String,
    /// Where the hub keeps its state (default: DIR/.troca).
    #[arg(long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// Connections served at once.
    #[arg(long, default_value_t = 16384)]
    pub max_connections: usize,
    /// How long a connection may stay idle between requests.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub idle_timeout: std::time::Duration,
    /// How long a transfer may go without progress before it is abandoned.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub stall_timeout: std::time::Duration,
    /// How long interrupted uploads are kept for resume.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub partial_ttl: std::time::Duration,
    /// How long to wait for transfers in progress at shutdown.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

/// Durations like `30s`, `15m`, `1h 30m`, `500ms`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    d.try_into()
        .map_err(|_| "durations cannot be negative".to_owned())
}
