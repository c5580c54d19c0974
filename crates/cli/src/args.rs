//! Command-line arguments.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "troca",
    version,
    about = "Share files on a network: a hub, its clients, and a swarm",
    after_help = "Examples:\n  troca serve ~/shared                 share a folder (web page on :13380)\n  \
        troca --hub 192.168.1.20 ls         list another machine's hub\n  \
        troca put report.pdf photos/         upload a file and a folder\n  \
        troca get photos -o backup           download a folder\n  \
        troca shell                          an interactive shell"
)]
pub struct Cli {
    /// Where the client commands connect (they also take these after their name).
    #[command(flatten)]
    pub hub: HubArgs,
    #[command(flatten)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed: for every command that prints results.
#[derive(Debug, Args, Clone, Copy)]
pub struct Output {
    /// Print machine-readable JSON on stdout (people's notes stay on stderr).
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress bars or notes on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Which hub a client command talks to, as whom, with which token.
#[derive(Debug, Args, Clone, Default)]
pub struct HubArgs {
    /// The hub to talk to, e.g. `192.168.1.20` or `hub.lan:13370` (default port 13370; also
    /// TROCA_HUB; default 127.0.0.1:13370).
    #[arg(long, value_name = "HOST[:PORT]")]
    pub hub: Option<String>,
    /// The name you show to others in `who` and the history (also TROCA_NAME; default
    /// user@host).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Read your access token from this file (or set TROCA_TOKEN); never on the command line.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// The key the hub must show, as `troca serve` prints it (also TROCA_HUB_KEY, or a
    /// `troca://HOST:PORT/#KEY` given to --hub); else the one remembered in known_hubs.
    #[arg(long, value_name = "KEY")]
    pub hub_key: Option<String>,
    /// Trust a hub seen for the first time without asking, and remember its key.
    #[arg(long)]
    pub trust_new_hub: bool,
    /// No encryption: only with a hub run with --plaintext (a benchmark, a link already
    /// encrypted).
    #[arg(long)]
    pub plaintext: bool,
    /// Give up on a hub that says nothing (no answer, no bytes of a file) or takes no byte of
    /// an upload for this long, e.g. 30s, 5m (default 2m).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Option<std::time::Duration>,
    /// How many times a transfer cut off by a lost connection is taken up again where it
    /// stopped, after pauses of 1s, 2s, 4s… (default 5; 0 never).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Move at most this many bytes a second each way, over all connections to the hub, e.g.
    /// 500K, 20M (also TROCA_MAX_RATE; default no limit).
    #[arg(long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_rate: Option<u64>,
}

/// Everything a client command needs to know, from the options before and after its name and
/// the environment.
#[derive(Debug, Clone)]
pub struct Global {
    pub hub: String,
    pub json: bool,
    pub quiet: bool,
    pub name: Option<String>,
    pub token_file: Option<PathBuf>,
    pub hub_key: Option<String>,
    pub trust_new_hub: bool,
    pub plaintext: bool,
    pub timeout: Option<std::time::Duration>,
    /// Tries after the first for a transfer cut off by a lost connection.
    pub retries: u32,
    /// Bytes a second each way, over all of this process's connections (`None`: no limit).
    pub max_rate: Option<u64>,
}

impl Command {
    /// The hub options given after a client command's name.
    pub fn hub_args(&self) -> Option<&HubArgs> {
        match self {
            Command::Ls { hub, .. }
            | Command::Find { hub, .. }
            | Command::Mkdir { hub, .. }
            | Command::Share { hub, .. }
            | Command::Shares { hub }
            | Command::Unshare { hub, .. }
            | Command::Mv { hub, .. }
            | Command::Cp { hub, .. }
            | Command::Put { hub, .. }
            | Command::Get { hub, .. }
            | Command::Rm { hub, .. }
            | Command::History { hub, .. }
            | Command::Who { hub }
            | Command::Status { hub }
            | Command::Time { hub }
            | Command::Shell { hub }
            | Command::Json { hub } => Some(hub),
            _ => None,
        }
    }
}

impl Global {
    /// Whether a token is given (in a file, or in TROCA_TOKEN).
    pub fn has_token(&self) -> bool {
        self.token_file.is_some() || std::env::var("TROCA_TOKEN").is_ok_and(|t| !t.is_empty())
    }

    /// Options after the command's name win over those before it, then the environment.
    pub fn resolve(before: &HubArgs, after: Option<&HubArgs>, output: Output) -> Global {
        let after = after.cloned().unwrap_or_default();
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Global {
            hub: after
                .hub
                .or_else(|| before.hub.clone())
                .or_else(|| env("TROCA_HUB"))
                .unwrap_or_else(|| "127.0.0.1:13370".to_owned()),
            json: output.json,
            quiet: output.quiet,
            name: after
                .name
                .or_else(|| before.name.clone())
                .or_else(|| env("TROCA_NAME")),
            token_file: after.token_file.or_else(|| before.token_file.clone()),
            hub_key: after
                .hub_key
                .or_else(|| before.hub_key.clone())
                .or_else(|| env("TROCA_HUB_KEY")),
            trust_new_hub: after.trust_new_hub || before.trust_new_hub,
            plaintext: after.plaintext
                || before.plaintext
                || env("TROCA_PLAINTEXT").is_some_and(|v| v == "1"),
            timeout: after.timeout.or(before.timeout),
            retries: after
                .retries
                .or(before.retries)
                .unwrap_or(crate::retry::DEFAULT_RETRIES),
            max_rate: after
                .max_rate
                .or(before.max_rate)
                .or_else(|| env("TROCA_MAX_RATE").and_then(|r| parse_rate(&r).ok())),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Share a folder: run a hub.
    #[command(after_help = "Examples:\n  troca serve ~/shared\n  \
        troca serve ~/shared --listen 0.0.0.0:13370 --http 0.0.0.0:13380   (other machines too)\n  \
        troca serve ~/shared --read-only\n  \
        troca serve ~ --hide '.*' --hide '*.key'   (dotfiles and keys out of reach)")]
    Serve(Box<Serve>),
    /// List the hub's files (a folder with nothing in it shows as NAME/).
    #[command(
        after_help = "Examples:\n  troca ls\n  troca ls photos/\n  troca ls 'photos/*.jpg'\n  troca ls --search invoice"
    )]
    Ls {
        #[command(flatten)]
        hub: HubArgs,
        /// Only names starting with this, e.g. `photos/`; or, with a quoted wildcard (as for
        /// `get`), the names it matches and what is in the folders it matches.
        prefix: Option<String>,
        /// Instead: every file and folder, in any folder, whose own name contains TEXT (any
        /// case); a TEXT with a `/` is looked for in whole names.
        #[arg(long, short = 's', value_name = "TEXT", conflicts_with = "prefix")]
        search: Option<String>,
    },
    /// Find files and folders whose names contain TEXT (any case), in every folder.
    ///
    /// TEXT is looked for in each file's and folder's own name; a TEXT with a `/` in whole names
    /// (`2026/inv` finds `taxes/2026/invoice.pdf`).
    #[command(after_help = "Examples:\n  troca find report\n  troca find 2026/inv")]
    Find {
        #[command(flatten)]
        hub: HubArgs,
        /// What the names contain.
        text: String,
    },
    /// Create folders on the hub (and the folders on the way).
    #[command(after_help = "Example:\n  troca mkdir photos/2026")]
    Mkdir {
        #[command(flatten)]
        hub: HubArgs,
        /// The folders to create.
        #[arg(required = true, value_name = "FOLDER")]
        names: Vec<String>,
    },
    /// Make links that let anyone who has one download a file, or a folder and what is in it,
    /// until the link expires (needs a write or admin token). Prints each link on stdout.
    /// With --upload, a link to a folder that lets anyone send new files into it, and see
    /// nothing of what it holds.
    #[command(
        after_help = "Examples:\n  troca share report.pdf\n  troca share photos/trip/ --expires 2d\n  \
        troca share secret.pdf --max-downloads 1   (works for one download)\n  \
        troca share --upload photos/ --qr   (a code to scan with a phone, to send photos)\n  \
        troca share --upload inbox/ --max-size 2G   (anyone with the link can send files)\n  \
        troca shares          (your links)\n  troca unshare 12       (revokes link 12)"
    )]
    Share {
        #[command(flatten)]
        hub: HubArgs,
        /// The files and folders to share (wildcards as for `get`).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// How long each link works (`12h`, `7d`, `2w`); by default the hub's `--share-time`
        /// (7 days), at most its `--max-share-time` (30 days).
        #[arg(long, value_parser = parse_lifetime, value_name = "DURATION")]
        expires: Option<std::time::Duration>,
        /// Upload links: anyone who has one sends new files into the folder (never replacing
        /// one), and lists and downloads nothing. What comes in is yours to move and delete.
        #[arg(long)]
        upload: bool,
        /// The most an upload link takes, in all (by default the hub's --max-share-upload).
        #[arg(long, value_name = "SIZE", value_parser = parse_size, requires = "upload")]
        max_size: Option<u64>,
        /// The most files an upload link takes (by default the hub's
        /// --max-share-upload-files).
        #[arg(long, value_name = "N", requires = "upload")]
        max_files: Option<u64>,
        /// How many downloads each link allows, then stops working: each file downloaded
        /// through it counts, and a folder's zip once; a cut download resumed from the same
        /// address counts no more.
        #[arg(long, value_name = "N", conflicts_with = "upload", value_parser = clap::value_parser!(u64).range(1..))]
        max_downloads: Option<u64>,
        /// Also show each link as a QR code (on stderr), for a phone to scan.
        #[arg(long)]
        qr: bool,
    },
    /// List the share links your token made (with the admin token: every one).
    #[command(after_help = "Examples:\n  troca shares\n  troca --json shares")]
    Shares {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Revoke share links (yours; with the admin token, any): they stop working at once.
    #[command(after_help = "Example:\n  troca unshare 12")]
    Unshare {
        #[command(flatten)]
        hub: HubArgs,
        /// The links' ids, as `troca share` and `troca shares` show them.
        #[arg(required = true, value_name = "ID")]
        ids: Vec<u64>,
    },
    /// Move or rename files and folders on the hub (needs the right to change each one).
    #[command(
        after_help = "Examples:\n  troca mv draft.txt report.txt\n  troca mv a.jpg b.jpg photos/\n  \
        troca mv --force new.txt old.txt   (replaces old.txt)\n  \
        troca mv 'draft-*' drafts/"
    )]
    Mv {
        #[command(flatten)]
        hub: HubArgs,
        /// What to move (wildcards as for `get`), then where: a new name, or a folder (ending
        /// in / or existing) to move them into.
        #[arg(required = true, num_args = 2.., value_name = "NAME")]
        names: Vec<String>,
        /// Replace a file that already has the new name.
        #[arg(long, short)]
        force: bool,
    },
    /// Copy files and folders on the hub, by the hub: nothing crosses the network (needs the
    /// right to upload the copy; the copy is yours).
    #[command(
        after_help = "Examples:\n  troca cp report.pdf report-v2.pdf\n  troca cp photos/ backup/\n  \
        troca cp a.jpg b.jpg album/\n  \
        troca cp --force template.txt notes.txt   (replaces notes.txt)"
    )]
    Cp {
        #[command(flatten)]
        hub: HubArgs,
        /// What to copy (files or folders, with everything in them; wildcards as for `get`),
        /// then where: a new name, or a folder (ending in / or existing) to copy them into.
        #[arg(required = true, num_args = 2.., value_name = "NAME")]
        names: Vec<String>,
        /// Replace a file that already has the copy's name (a folder is never copied over
        /// anything).
        #[arg(long, short)]
        force: bool,
        /// Accepted for habit's sake: folders are always copied with everything in them.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Upload files and folders to the hub (a folder with everything in it, keeping its paths).
    #[command(after_help = "Examples:\n  troca put report.pdf holiday.mp4\n  \
        troca put photos/ --to trips          (trips/photos/...)\n  \
        troca put draft.txt --as notes/today.txt --force\n  \
        troca put photos/ --to backup --delete   (backup/photos/ the same as photos/)\n  \
        pg_dump db | troca put - --as db.sql\n  \
        troca put <(pg_dump db) --as db.sql")]
    Put {
        #[command(flatten)]
        hub: HubArgs,
        /// Files or folders to upload (`-` for standard input; a pipe is read once). In a
        /// folder, symbolic links and special files are left out, each named on stderr.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// The name to store a single file under (default: its file name).
        #[arg(long = "as", value_name = "NAME", conflicts_with = "to")]
        as_name: Option<String>,
        /// The hub folder to put them in (default: the top of the share).
        #[arg(long, value_name = "FOLDER")]
        to: Option<String>,
        /// Replace files that already exist on the hub.
        #[arg(long)]
        force: bool,
        /// Make each folder's place on the hub the same as the folder: replace what differs
        /// (as --force) and delete what the folder does not hold (as `rsync --delete`), files
        /// and folders, with the right to delete each. Nothing is deleted if anything could
        /// not be sent; links and special files left out are not deleted either.
        #[arg(long)]
        delete: bool,
        /// Say what would be sent, replaced, made and deleted (one line each on stdout), and
        /// change nothing: try it before --delete.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Accepted for habit (as with scp and cp): folders are always taken whole.
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
    },
    /// Download files and folders from the hub (`NAME/` or a folder's name takes everything in it).
    #[command(
        after_help = "Examples:\n  troca get holiday.mp4\n  troca get a.txt b.txt -o downloads/\n  \
        troca get trips/photos -o backup     (backup/photos/...)\n  \
        troca get trips/photos -o backup --delete   (backup/photos/ the same as the hub's)\n  \
        troca get big.iso -o - | sha256sum\n  \
        troca get 'photos/*.jpg' -o pics/    (quoted: the hub's names, not yours)\n  \
        troca get '**/*.pdf' -o pdfs/        (every PDF, in every folder)"
    )]
    Get {
        #[command(flatten)]
        hub: HubArgs,
        /// The files or folders to download. Quoted wildcards pick names on the hub: `*` and
        /// `?` within a folder, `**` across folders, `[abc]`; `\*` is a plain `*`.
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Where to save: a folder, a file name (one NAME), or - for stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Overwrite local files instead of saving as NAME_downloaded.EXT.
        #[arg(long)]
        force: bool,
        /// Make each local copy of a folder the same as the hub's: overwrite what differs (as
        /// --force) and delete here what the hub does not show (as `rsync --delete`), files,
        /// links and folders. Nothing is deleted if anything could not be downloaded.
        #[arg(long)]
        delete: bool,
        /// Say what would be downloaded (and where), replaced, made and deleted here (one line
        /// each on stdout), and change nothing: try it before --delete.
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Accepted for habit (as with scp and cp): folders are always taken whole.
        #[arg(short = 'r', long = "recursive")]
        recursive: bool,
    },
    /// Delete files and folders on the hub (what you uploaded, or anything with the admin token).
    #[command(
        after_help = "Examples:\n  troca rm notes.txt\n  troca rm -r old-photos/\n  troca rm 'logs/*.tmp'"
    )]
    Rm {
        #[command(flatten)]
        hub: HubArgs,
        /// The files (or empty folders) to delete (wildcards as for `get`).
        #[arg(required = true, value_name = "NAME")]
        names: Vec<String>,
        /// Delete folders with everything in them.
        #[arg(long, short = 'r', visible_short_alias = 'R')]
        recursive: bool,
    },
    /// Who is connected to the hub, and what each is doing.
    #[command(after_help = "Example:\n  troca who --json")]
    Who {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// The hub's record of requests, newest first.
    #[command(
        after_help = "Examples:\n  troca history --limit 20 --op rm\n  troca history --client ana --json"
    )]
    History {
        #[command(flatten)]
        hub: HubArgs,
        /// How many entries (a page holds at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only this client's requests (by name).
        #[arg(long)]
        client: Option<String>,
        /// Only this operation (list, get, put, rm, who, history, status, register, hello).
        #[arg(long)]
        op: Option<String>,
        /// Only entries older than this id (the id a previous page says to continue from).
        #[arg(long, value_name = "ID")]
        before: Option<u64>,
    },
    /// The hub's time, uptime, version and figures.
    #[command(after_help = "Example:\n  troca status --json")]
    Status {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// The hub's current time (RFC 3339, in the hub's offset).
    #[command(after_help = "Example:\n  troca time")]
    Time {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Ask a hub on this machine whether it can serve (a container's health check): exits 0
    /// if it says so in time (it reaches its files and its database), 1 if not. Needs no
    /// token; the hub's key is read from its state folder.
    #[command(after_help = "Example:\n  troca health --state /data/.troca")]
    Health {
        /// The hub's native address.
        #[arg(long, default_value = "127.0.0.1:13370", value_name = "ADDR")]
        hub: String,
        /// The hub's state folder: its key is pinned from there (else the hub is plaintext).
        #[arg(long, value_name = "DIR")]
        state: Option<PathBuf>,
        /// How long to wait for the answer.
        #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
        timeout: std::time::Duration,
    },
    /// Run a swarm tracker (UDP): which peers share which files.
    #[command(after_help = "Examples:\n  troca tracker\n  troca tracker --listen 0.0.0.0:13377")]
    Tracker {
        /// Address to listen on; 0.0.0.0:13377 exposes it. Give it twice for IPv4 and IPv6
        /// (`--listen 0.0.0.0:13377 --listen [::]:13377`).
        #[arg(long, default_value = "127.0.0.1:13377", value_name = "ADDR", num_args = 1, action = clap::ArgAction::Append)]
        listen: Vec<String>,
        /// How long a registration lasts unless refreshed.
        #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
        lifetime: std::time::Duration,
        /// How often to print statistics on stderr (0 never).
        #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
        stats_every: std::time::Duration,
        /// Serve Prometheus metrics at http://ADDR/metrics (off by default; keep ADDR private).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        limits: TrackerLimits,
    },
    /// The swarm: files shared by peers, as a tracker knows them.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// Share a folder with the swarm and download from it (menu when run in a terminal).
    #[command(after_help = "Examples:\n  troca peer ~/shared\n  \
        troca peer ~/photos --only images --listen 0.0.0.0:0 --tracker 192.168.1.20")]
    Peer(PeerArgs),
    /// An interactive shell: ls, put, get, rm, mkdir, mv, find, who, history, … (type help).
    #[command(after_help = "Example:\n  troca shell --hub 192.168.1.20 --name ana")]
    Shell {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Answer JSON requests, one per line on stdin, one JSON line each on stdout.
    #[command(after_help = "Example:\n  echo '{\"operation\": \"list\"}' | troca json")]
    Json {
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Manage access tokens (on the hub's machine).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Print a completion script for a shell.
    #[command(
        after_help = "Examples:\n  troca completions bash > ~/.local/share/bash-completion/completions/troca\n  \
        troca completions fish > ~/.config/fish/completions/troca.fish"
    )]
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    #[command(after_help = "Example:\n  troca man > ~/.local/share/man/man1/troca.1")]
    Man,
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// List the files on the swarm (id, name, size, peers).
    #[command(
        after_help = "Examples:\n  troca swarm ls\n  troca swarm ls holiday --tracker 192.168.1.20"
    )]
    Ls {
        #[command(flatten)]
        tracker: TrackerAddr,
        /// Only files whose name contains this.
        filter: Option<String>,
    },
    /// Download a file from every peer that has it at once, each piece verified, sharing the
    /// pieces it has with the others meanwhile.
    #[command(
        after_help = "Examples:\n  troca swarm get 3f2a9c1b\n  troca swarm get holiday.mp4 -o ~/Videos\n  troca swarm get holiday.mp4 --listen 0.0.0.0:0 --seed 10m"
    )]
    Get {
        #[command(flatten)]
        tracker: TrackerAddr,
        /// The file's id, the start of it (8+ hex digits, as `swarm ls` shows), or its name.
        #[arg(value_name = "ID|NAME")]
        what: String,
        /// Folder to save into (never overwrites: NAME_downloaded.EXT).
        #[arg(short, long, value_name = "DIR", default_value = ".")]
        output: PathBuf,
        /// Also download from peers that serve without TLS (peers run with --plaintext).
        #[arg(long)]
        plaintext: bool,
        /// Where to serve the pieces it has to other peers (port 0: the OS picks). 0.0.0.0:0
        /// serves other machines.
        #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
        listen: String,
        /// Keep sharing the file once it is here: for DURATION (e.g. 10m), or until stopped.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, default_missing_value = "forever",
              value_parser = parse_seed)]
        seed: Option<Seed>,
        /// Do not share while downloading (download only, as a client).
        #[arg(long, conflicts_with = "seed")]
        no_share: bool,
        /// Pieces sent to other peers at once; past it a request is answered busy and the
        /// downloader asks someone else (0: no limit).
        #[arg(long, default_value_t = troca_peer::server::DEFAULT_UPLOAD_SLOTS, value_name = "N")]
        upload_slots: usize,
    },
}

/// How long `swarm get --seed` keeps sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seed {
    For(std::time::Duration),
    UntilStopped,
}

fn parse_seed(s: &str) -> Result<Seed, String> {
    match s {
        "forever" => Ok(Seed::UntilStopped),
        other => parse_duration(other).map(Seed::For),
    }
}

/// Which tracker to ask.
#[derive(Debug, Args)]
pub struct TrackerAddr {
    /// The tracker to ask (also TROCA_TRACKER).
    #[arg(
        long = "tracker",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:13377",
        env = "TROCA_TRACKER",
        hide_env = true
    )]
    pub addr: String,
}

#[derive(Debug, Args)]
pub struct PeerArgs {
    /// The folder to share; downloads land here too (created if missing).
    #[arg(default_value = "troca-peer")]
    pub dir: PathBuf,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; keep ADDR private).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[command(flatten)]
    pub tracker: TrackerAddr,
    /// Where to serve pieces (port 0: the OS picks). 0.0.0.0:0 serves other machines.
    #[arg(long, default_value = "127.0.0.1:0", value_name = "ADDR")]
    pub listen: String,
    /// Share only files of this kind, told by their content (magic bytes), not their name.
    #[arg(long, value_parser = ["images"], value_name = "KIND")]
    pub only: Option<String>,
    /// How often to refresh the registration with the tracker.
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub refresh: std::time::Duration,
    /// Upload cap for all other peers together, e.g. 500K, 20M (bytes per second).
    #[arg(long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_rate: Option<u64>,
    /// Connections served at once.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Connections one address (an IPv6 /64) may hold at once.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_connections_per_ip: usize,
    /// Pieces sent to other peers at once; past it a request is answered busy and the
    /// downloader asks someone else (0: no limit).
    #[arg(long, default_value_t = troca_peer::server::DEFAULT_UPLOAD_SLOTS, value_name = "N")]
    pub upload_slots: usize,
    /// Turn initial seeding off. With it (the default), while some piece of a file in the
    /// folder has gone to nobody, a sharing downloader's request for a piece another already
    /// has from here is deferred (once): it asks for another piece at once, and the crowd gets
    /// each piece from this peer once before any twice.
    #[arg(long)]
    pub no_super_seed: bool,
    /// A connection silent for this long is closed (not while it waits for an upload slot);
    /// a piece must also go out within it (plus its time at --max-rate), or the connection is
    /// closed and its upload slot freed.
    #[arg(long, default_value = "120s", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
    /// Serve pieces without TLS, and download from peers that do too (a benchmark, a link
    /// already encrypted). Peers otherwise serve TLS with a key kept in
    /// ~/.local/share/troca/peer and registered with the tracker.
    #[arg(long)]
    pub plaintext: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; prints it, and only it, once.
    #[command(
        after_help = "Examples:\n  troca token create --role write --label ana > ana.token\n  \
                      troca token create --role read --expires 7d > guest.token\n  \
                      troca token create --role write --folder clients/acme > acme.token\n  \
                      troca token create --role write --quota 10G --label ana > ana.token"
    )]
    Create {
        /// What it allows: read (list and download), write (also upload, and change its own
        /// uploads), admin (everything), upload (send new files only: it lists, downloads
        /// and changes nothing, as an upload link).
        #[arg(long, value_parser = ["read", "write", "admin", "upload"])]
        role: String,
        /// A note for `token list`, e.g. who has it.
        #[arg(long, default_value = "")]
        label: String,
        /// How long it is accepted, e.g. `7d`, `12h`, `2w`; hubs refuse it afterwards (default:
        /// until revoked).
        #[arg(long, value_name = "DURATION", value_parser = parse_lifetime)]
        expires: Option<std::time::Duration>,
        /// Hold it to this folder of the share: it lists, reads and (by its role) changes only
        /// what is in it, and sees nothing of the rest, whatever anonymous clients may do
        /// (default: the whole share).
        #[arg(long, value_name = "FOLDER", value_parser = parse_folder)]
        folder: Option<String>,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        place: TokenPlace,
    },
    /// List tokens (never their secrets).
    #[command(after_help = "Example:\n  troca token list --state ~/shared/.troca")]
    List {
        #[command(flatten)]
        place: TokenPlace,
    },
    /// Revoke a token; hubs refuse it from their next check on.
    #[command(after_help = "Example:\n  troca token revoke 3")]
    Revoke {
        /// The token's id, as `token list` shows it.
        id: i64,
        #[command(flatten)]
        place: TokenPlace,
    },
    /// Change a token's quota; hubs use it from their next check of the token on.
    #[command(after_help = "Examples:\n  troca token quota 3 --quota 20G\n  \
                      troca token quota 3 --quota 0 --quota-files 0   (no bound)")]
    Quota {
        /// The token's id, as `token list` shows it.
        id: i64,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        place: TokenPlace,
    },
}

/// A token's quota, when it is made or changed (left out: none when made, unchanged when
/// changed).
#[derive(Debug, Args)]
pub struct QuotaArgs {
    /// The most its uploads may keep on the hub at once, e.g. `10G`: an upload that would pass
    /// it is refused ("quota"); what it deletes, or replaces with less, frees room (0: no bound)
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub quota: Option<u64>,
    /// The most files its uploads may keep on the hub at once (0: no bound)
    #[arg(long, value_name = "N")]
    pub quota_files: Option<u64>,
}

/// Where a hub's tokens are: its state folder, or the group's database.
#[derive(Debug, Args)]
pub struct TokenPlace {
    /// The hub's state folder (default: ./troca-files/.troca).
    #[arg(long, value_name = "PATH", conflicts_with = "db")]
    pub state: Option<PathBuf>,
    #[command(flatten)]
    pub database: Database,
}

/// The PostgreSQL database of a group of hubs.
#[derive(Debug, Args)]
pub struct Database {
    /// The PostgreSQL database of a group of hubs, `postgres://USER@HOST:PORT/DB`: the records
    /// (history, tokens, owners, partial uploads, who is connected) every hub given the same
    /// address shares. The password comes from PGPASSWORD or --db-password-file, never from the
    /// address.
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// A file holding the database password.
    #[arg(long, value_name = "PATH", requires = "db")]
    pub db_password_file: Option<PathBuf>,
    /// Certificates (PEM) to trust for the database's TLS, besides the system's (TLS is used
    /// when the server offers it; add `?sslmode=require` to the address to insist).
    #[arg(long, value_name = "PEM", requires = "db")]
    pub db_ca_file: Option<PathBuf>,
}

impl Database {
    /// Where the database is, if one was given.
    pub fn address(&self) -> Option<troca_hub::pg::DbAddress> {
        self.db.clone().map(|url| troca_hub::pg::DbAddress {
            url,
            password_file: self.db_password_file.clone(),
            ca_file: self.db_ca_file.clone(),
        })
    }
}

/// What one tracker holds at most: a bound on its memory and on what one address can take.
#[derive(Debug, Args)]
pub struct TrackerLimits {
    /// Peers registered in all; more are refused.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub max_peers: usize,
    /// Peers one address (an IPv6 /64) may register.
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub max_peers_per_ip: usize,
    /// Files one peer may register.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_files_per_peer: usize,
    /// Files all the peers of one address (an IPv6 /64) may register together.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    pub max_files_per_ip: usize,
    /// Files registered over all peers (one shared by three peers counts three; ~200 bytes each).
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_files: usize,
    /// BitTorrent peers remembered over all torrents (one in three torrents counts three). Past
    /// it an announce is answered but a new peer is not remembered.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub max_torrent_peers: usize,
    /// BitTorrent peers remembered from one address (an IPv6 /64), over all torrents.
    #[arg(long, default_value_t = 10_000, value_name = "N")]
    pub max_torrent_peers_per_ip: usize,
}

#[derive(Debug, Args)]
pub struct Serve {
    /// The folder to share (created if missing).
    #[arg(default_value = "./troca-files")]
    pub dir: PathBuf,
    /// Read settings from this TOML file, each an option below by its name without dashes
    /// (`listen = "0.0.0.0:13370"`, `read-only = true`, `hide = [".git", "*.key"]`) or `folder`
    /// for DIR; options given here win over the file's.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address for the native protocol; port 0 picks a free port. Use 0.0.0.0:13370 to expose
    /// the hub to the network.
    #[arg(
        help_heading = "Addresses",
        long,
        default_value = "127.0.0.1:13370",
        value_name = "ADDR"
    )]
    pub listen: String,
    /// troca has no --port: it says to use --listen (and --http) instead.
    // Hidden from help, yet still in completions (clap_complete lists hidden options): people
    // coming from other file servers try it first, and clap's nearest match would be
    // `--max-upload-rate-per-ip`.
    #[arg(long, hide = true, value_name = "PORT", value_parser = no_port)]
    pub port: Option<String>,
    /// Address for the web page and HTTP API; 0.0.0.0:13380 exposes it.
    #[arg(
        help_heading = "Addresses",
        long,
        default_value = "127.0.0.1:13380",
        value_name = "ADDR"
    )]
    pub http: String,
    /// Serve the native protocol only (no web page, no HTTP API).
    #[arg(help_heading = "Addresses", long, conflicts_with = "http")]
    pub no_http: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (off by default; keep ADDR private).
    #[arg(help_heading = "Addresses", long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// Serve the web page, HTTP API and WebDAV beneath this path (`/troca`: the page at
    /// /troca/, WebDAV at /troca/dav/), for a reverse proxy that forwards one path of its site.
    #[arg(
        help_heading = "Addresses",
        long,
        value_name = "PATH",
        default_value = "",
        hide_default_value = true,
        value_parser = troca_hub::config::web_prefix
    )]
    pub path_prefix: String,
    /// The web face's address as people outside reach it (`https://files.example.org/troca`),
    /// for the links `troca share` prints; by default the host a client reached the hub by,
    /// with the web face's port.
    #[arg(help_heading = "Addresses", long, value_name = "URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// A reverse proxy or load balancer in front of the hub (an address, or a network such as
    /// 10.0.0.0/8; repeat it or separate with commas). Its connections are taken to be for the
    /// client its PROXY protocol header names (both faces), or its web requests for the client
    /// their X-Forwarded-For names, so each client behind it has its own limits, quotas and
    /// place in `troca who`; without it they would all share the proxy's.
    #[arg(
        help_heading = "Addresses",
        long = "trusted-proxy",
        value_name = "ADDR[/PREFIX]"
    )]
    pub trusted_proxies: Vec<troca_hub::config::TrustedProxies>,
    /// Serve the native protocol without encryption (for benchmarks, or a link that is already
    /// encrypted); clients must say --plaintext too.
    #[arg(help_heading = "Encryption", long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub plaintext: bool,
    /// Serve the web page and HTTP API over plain HTTP (on loopback, or behind a reverse proxy
    /// that does TLS); by default they use HTTPS with the hub's key.
    #[arg(help_heading = "Encryption", long)]
    pub http_plaintext: bool,
    /// A certificate chain (PEM) to use instead of the hub's own key (with --tls-key).
    #[arg(
        help_heading = "Encryption",
        long,
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(
        help_heading = "Encryption",
        long,
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Refuse every upload, replacement and deletion.
    #[arg(help_heading = "Access", long)]
    pub read_only: bool,
    /// Refuse clients without a valid token.
    #[arg(help_heading = "Access", long)]
    pub require_token: bool,
    /// Keep names matching PATTERN out of sight and reach: no client lists, finds, reads,
    /// uploads, moves or deletes a file or folder whose name matches, nor anything in such a
    /// folder (admin included; repeat for more). A pattern is for one name, with `*`, `?`
    /// and `[...]`: `.*` (dotfiles), `*.key`, `node_modules`.
    #[arg(help_heading = "Access", long, value_name = "PATTERN", value_parser = parse_hide)]
    pub hide: Vec<String>,
    /// Connections served at once.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 16384,
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Connections one address may hold open at once, native and web together (an IPv6 /64
    /// counts as one address). More are told the hub is busy.
    #[arg(help_heading = "Limits", long, default_value_t = 256, value_name = "N")]
    pub max_connections_per_ip: usize,
    /// How long a client may take to send a request once it has begun (a native request frame,
    /// an HTTP request's headers).
    #[arg(help_heading = "Limits", long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub request_timeout: std::time::Duration,
    /// How long a connection may stay idle between requests.
    #[arg(help_heading = "Limits", long, default_value = "15m", value_parser = parse_duration, value_name = "DURATION")]
    pub idle_timeout: std::time::Duration,
    /// How long a transfer may go without progress, or a client without taking a byte of an
    /// answer, before its connection is dropped.
    #[arg(help_heading = "Limits", long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub stall_timeout: std::time::Duration,
    /// How long to wait for transfers in progress at shutdown.
    #[arg(help_heading = "Limits", long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub shutdown_grace: std::time::Duration,
    /// How long interrupted uploads are kept for resume.
    #[arg(help_heading = "Limits", long, default_value = "24h", value_parser = parse_duration, value_name = "DURATION")]
    pub partial_ttl: std::time::Duration,
    /// Bytes of interrupted uploads kept for resume per address (an IPv6 /64); beyond it the
    /// oldest go first. Any of them also goes when a new upload needs its space.
    #[arg(help_heading = "Limits", long, default_value = "4G", value_name = "SIZE", value_parser = parse_size)]
    pub partial_budget_per_ip: u64,
    /// Bytes of interrupted uploads kept for resume in all; beyond it the oldest of the address
    /// holding the most go first.
    #[arg(help_heading = "Limits", long, default_value = "32G", value_name = "SIZE", value_parser = parse_size)]
    pub partial_budget: u64,
    /// How many interrupted uploads are kept for resume per address (an IPv6 /64), however
    /// small; beyond it the oldest go first.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 1_000,
        value_name = "N"
    )]
    pub partial_files_per_ip: u64,
    /// How many interrupted uploads are kept for resume in all; beyond it the oldest of the
    /// address holding the most go first.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub partial_files: u64,
    /// Free space to leave on the disk of the shared folder: an upload that would leave less is
    /// refused ("not enough space"), so uploads never fill the disk (`1%`, `10G`; 0 turns it
    /// off). Not used with --store.
    #[arg(help_heading = "Limits", long, default_value = "1%", value_name = "SIZE|PERCENT", value_parser = parse_keep_free)]
    pub keep_free: troca_hub::store::KeepFree,
    /// Bytes one address (an IPv6 /64) may upload without a token per --upload-quota-window;
    /// what it stored drains away steadily over the window, so it may go on little by little.
    /// Uploads with a token are not counted, except through upload links. 0 turns it off.
    #[arg(help_heading = "Limits", long, default_value = "64G", value_name = "SIZE", value_parser = parse_size)]
    pub upload_quota_per_ip: u64,
    /// Files (and folders made) one address may upload without a token (or through upload
    /// links) per --upload-quota-window. 0 turns it off.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub upload_files_per_ip: u64,
    /// The window of the upload quotas above.
    #[arg(help_heading = "Limits", long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    pub upload_quota_window: std::time::Duration,
    /// How fast clients may download from the hub, all together, in bytes a second (`50M`);
    /// by default as fast as the network goes. Every face: native, web, WebDAV.
    #[arg(help_heading = "Limits", long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_download_rate: Option<u64>,
    /// How fast one address (an IPv6 /64) may download from the hub, in bytes a second.
    #[arg(help_heading = "Limits", long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_download_rate_per_ip: Option<u64>,
    /// How fast clients may upload to the hub, all together, in bytes a second.
    #[arg(help_heading = "Limits", long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_upload_rate: Option<u64>,
    /// How fast one address (an IPv6 /64) may upload to the hub, in bytes a second.
    #[arg(help_heading = "Limits", long, value_parser = parse_rate, value_name = "BYTES/S")]
    pub max_upload_rate_per_ip: Option<u64>,
    /// Walks of the share for a short answer running at once (a search, `find`; a folder's
    /// web page, which counts what each sub-folder holds); more wait in line, and each address
    /// runs one at a time.
    #[arg(help_heading = "Limits", long, default_value_t = 4, value_name = "N")]
    pub max_searches: usize,
    /// Folders downloaded as a .zip at once (each holds a thread for as long as its reader
    /// takes); more wait in line, and each address gets one at a time.
    #[arg(help_heading = "Limits", long, default_value_t = 16, value_name = "N")]
    pub max_zips: usize,
    /// How long a share link lasts when its maker does not say (`troca share --expires`).
    #[arg(help_heading = "Limits", long, default_value = "7d", value_parser = parse_lifetime, value_name = "DURATION")]
    pub share_time: std::time::Duration,
    /// The longest a share link may last.
    #[arg(help_heading = "Limits", long, default_value = "30d", value_parser = parse_lifetime, value_name = "DURATION")]
    pub max_share_time: std::time::Duration,
    /// How long a link that has expired stays listed by `troca shares`; then the hub forgets
    /// it (an upload link once none of the files it brought is left: its maker owns them
    /// through it).
    #[arg(help_heading = "Limits", long, default_value = "30d", value_parser = parse_lifetime, value_name = "DURATION")]
    pub share_keep: std::time::Duration,
    /// Share links one token may have working at once.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 1_000,
        value_name = "N"
    )]
    pub max_shares_per_token: usize,
    /// The most an upload link takes in all (`troca share --upload`), and what one takes
    /// unless its maker asks for less (0: no bound).
    #[arg(help_heading = "Limits", long, default_value = "10G", value_name = "SIZE", value_parser = parse_size)]
    pub max_share_upload: u64,
    /// The most files an upload link takes (0: no bound).
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_share_upload_files: u64,
    /// The most names one search looks at; past them it answers the matches it found and
    /// says it may have left names out (0: no bound).
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 2_000_000,
        value_name = "N"
    )]
    pub search_names: u64,
    /// The most names a folder's web page reads beneath its sub-folders to show the files and
    /// bytes each holds; past them the other sub-folders are shown without counts (0: no
    /// bound).
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 100_000,
        value_name = "N"
    )]
    pub count_names: u64,
    /// The most WebDAV locks held at once (a client asking for more gets "busy").
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 10_000,
        value_name = "N"
    )]
    pub max_locks: usize,
    /// The most WebDAV locks one token holds at once, so one cannot take them all.
    #[arg(
        help_heading = "Limits",
        long,
        default_value_t = 1_000,
        value_name = "N"
    )]
    pub max_locks_per_token: usize,
    /// The longest a WebDAV lock is held without a refresh (a client asking for longer, or for
    /// ever, gets this).
    #[arg(help_heading = "Limits", long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub max_lock_time: std::time::Duration,
    /// Memory for hot small files (`64M`, `1G`, or bytes; 0 turns the cache off).
    #[arg(help_heading = "Memory", long, default_value = "64M", value_name = "SIZE", value_parser = parse_size)]
    pub cache_size: u64,
    /// The largest file the cache holds (`1M`, or bytes).
    #[arg(help_heading = "Memory", long, default_value = "1M", value_name = "SIZE", value_parser = parse_size)]
    pub cache_max_file: u64,
    /// Memory all clients together may use for small files held until they are stored: batches
    /// of small files, web and WebDAV uploads of at most 1 MiB, and bodies sent without their
    /// length, 1 MiB each, while they are gathered (`64M`); a client that finds none free has
    /// its files streamed to disk one at a time.
    #[arg(help_heading = "Memory", long, default_value = "64M", value_name = "SIZE", value_parser = parse_size)]
    pub batch_memory: u64,
    /// How many files' BLAKE3 hashes are kept in memory, the most recently used (about 150
    /// bytes each); the state database keeps them all.
    #[arg(help_heading = "Memory", long, default_value_t = troca_hub::hashes::DEFAULT_ENTRIES, value_name = "N")]
    pub hash_cache: usize,
    /// Where the hub keeps its state (default: DIR/.troca).
    #[arg(help_heading = "State and history", long, value_name = "PATH")]
    pub state: Option<PathBuf>,
    /// How many history entries to keep (0 records none).
    #[arg(
        help_heading = "State and history",
        long,
        default_value_t = 1_000_000,
        value_name = "N"
    )]
    pub history_keep: u64,
    /// Keep the files in an S3-compatible object store instead of DIR (DIR then holds only
    /// the hub's own state): `s3://BUCKET?endpoint=URL&region=REGION`. Needs --db. The keys
    /// come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or --store-credentials-file.
    #[arg(help_heading = "Object store and database", long, value_name = "URL", value_parser = parse_store, requires = "db")]
    pub store: Option<troca_hub::store::S3Address>,
    /// A file with the object store's keys (`aws_access_key_id = …` and
    /// `aws_secret_access_key = …` lines, as in ~/.aws/credentials).
    #[arg(
        help_heading = "Object store and database",
        long,
        value_name = "PATH",
        requires = "store"
    )]
    pub store_credentials_file: Option<PathBuf>,
    #[command(flatten, next_help_heading = "Object store and database")]
    pub database: Database,
    /// How long an object no name refers to any more is kept before it is deleted, so
    /// downloads and uploads in flight finish (object store only).
    #[arg(help_heading = "Object store and database", long, default_value = "1h", value_name = "DURATION", value_parser = parse_duration)]
    pub object_grace: std::time::Duration,
    /// Memory for the parts of uploads to the object store, all uploads together (`512M`);
    /// an upload waits for room, a part being at least 8 MiB.
    #[arg(help_heading = "Object store and database", long, default_value = "512M", value_name = "SIZE", value_parser = parse_size, requires = "store")]
    pub store_part_memory: u64,
    /// How long a request to the object store may go without a byte moving either way (a
    /// store that stopped answering). A slow link is fine while bytes move. A request that
    /// fails (the store restarting, or silent) is tried again while it began less than twice
    /// this long ago, then fails with an error saying so (at most three times this long in
    /// all: above 40s a client may give up first); a download still being read goes on with a
    /// new request from where it stopped.
    #[arg(help_heading = "Object store and database", long, default_value = "30s", value_name = "DURATION", value_parser = parse_duration, requires = "store")]
    pub store_timeout: std::time::Duration,
    /// This hub's name among the hubs sharing one database, as `who` and `status` show it
    /// (default: HOST:PID).
    #[arg(help_heading = "Object store and database", long, value_name = "NAME")]
    pub hub_name: Option<String>,
}

fn parse_store(s: &str) -> Result<troca_hub::store::S3Address, String> {
    troca_hub::store::S3Address::parse(s)
}

/// `--port N` is refused with what to write instead.
fn no_port(port: &str) -> Result<String, String> {
    Err(format!(
        "troca serve has no --port: use --listen 127.0.0.1:{port} (this machine only) or \
         --listen 0.0.0.0:{port} (the network) for the native protocol, and --http ADDR for \
         the web page"
    ))
}

/// Durations like `30s`, `15m`, `1h 30m`, `500ms`, or bare seconds (`10`).
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    if let Ok(secs) = s.trim().parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{e}"))?;
    d.try_into()
        .map_err(|_| "durations cannot be negative".to_owned())
}

/// `--public-url`: an http or https URL without a query, kept without its trailing `/`.
fn public_url(s: &str) -> Result<String, String> {
    let t = s.trim().trim_end_matches('/');
    let rest = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .ok_or("the public URL starts with https:// (or http://)")?;
    if rest.is_empty() || rest.contains(['?', '#', ' ']) || rest.chars().any(char::is_control) {
        return Err("the public URL is a scheme, a host and an optional path".into());
    }
    Ok(t.to_owned())
}

/// A token's lifetime: days (`7d`) and weeks (`2w`) besides what [`parse_duration`] takes;
/// above zero.
pub(crate) fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let unit = match t.chars().last() {
        Some('d') => Some(86_400),
        Some('w') => Some(7 * 86_400),
        _ => None,
    };
    let by_unit = unit.and_then(|u| Some(t[..t.len() - 1].trim().parse::<u64>().ok()? * u));
    let d = match by_unit {
        Some(secs) => std::time::Duration::from_secs(secs),
        None => parse_duration(t)?,
    };
    if d.is_zero() {
        return Err("a token's lifetime must be above zero".into());
    }
    Ok(d)
}

/// A folder of the share a token is held to, by the usual name rule (`/` at either end
/// allowed and dropped).
fn parse_folder(s: &str) -> Result<String, String> {
    let t = s.trim().trim_matches('/');
    if t.is_empty() {
        return Err("name a folder of the share, e.g. clients/acme".into());
    }
    troca_proto::name::RemoteName::parse(t)
        .map(|n| n.as_str().to_owned())
        .map_err(|e| e.to_string())
}

/// A `--hide` pattern, checked as the hub will take it.
fn parse_hide(s: &str) -> Result<String, String> {
    troca_hub::hidden::Hidden::new(&[s.to_owned()])
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Sizes like `64M`, `1G`, `512K`, `2T` (binary multiples, an optional `B` or `iB`), or bytes;
/// 0 is allowed.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().trim_end_matches("iB").trim_end_matches(['B', 'b']);
    let (num, mult) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('G' | 'g') => (&t[..t.len() - 1], 1 << 30),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 64M, 1G or 4096"))?;
    if n.is_nan() || n < 0.0 {
        return Err("a size cannot be negative".into());
    }
    Ok((n * mult as f64) as u64)
}

/// A size (`10G`) or a share of the disk (`1%`, `0.5%`).
fn parse_keep_free(s: &str) -> Result<troca_hub::store::KeepFree, String> {
    use troca_hub::store::KeepFree;
    let Some(p) = s.trim().strip_suffix('%') else {
        return parse_size(s).map(KeepFree::Bytes);
    };
    match p.trim().parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(KeepFree::Percent(p)),
        _ => Err(format!("{s:?} is not a share of the disk like 1% or 0.5%")),
    }
}

/// Byte rates like `800K`, `20M`, `1G` (a size per second, `/s` optional), above zero.
fn parse_rate(s: &str) -> Result<u64, String> {
    let n = parse_size(s.trim().trim_end_matches("/s"))
        .map_err(|_| format!("{s:?} is not a rate like 500K or 20M"))?;
    if n == 0 {
        return Err("the rate must be above zero".into());
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every command has a description and an example; every argument and option a description.
    #[test]
    fn every_command_and_option_is_described_with_an_example() {
        fn check(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let here = format!("{path} {}", cmd.get_name());
            if cmd.get_about().is_none() {
                missing.push(format!("{here}: no description"));
            }
            let leaf = cmd.get_subcommands().next().is_none();
            let example = cmd
                .get_after_help()
                .is_some_and(|h| h.to_string().contains("Example"));
            if leaf && !example {
                missing.push(format!("{here}: no example"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id != "help" && id != "version" && arg.get_help().is_none() {
                    missing.push(format!("{here} {id}: no description"));
                }
            }
            for sub in cmd.get_subcommands() {
                check(sub, &here, missing);
            }
        }
        let mut missing = Vec::new();
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            check(sub, "troca", &mut missing);
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn free_space_to_keep_is_a_size_or_a_share_of_the_disk() {
        use troca_hub::store::KeepFree;
        assert_eq!(parse_keep_free("1%"), Ok(KeepFree::Percent(1.0)));
        assert_eq!(parse_keep_free(" 0.5 %"), Ok(KeepFree::Percent(0.5)));
        assert_eq!(parse_keep_free("10G"), Ok(KeepFree::Bytes(10 << 30)));
        assert_eq!(parse_keep_free("0"), Ok(KeepFree::Bytes(0)));
        for bad in ["101%", "-1%", "x%", "lots"] {
            assert!(parse_keep_free(bad).is_err(), "{bad}");
        }
    }
}
