//! `troca-swarm-sim`: the swarm's real piece scheduler driven by a discrete-event model of a
//! crowd (see `model.rs`), printing how long each downloader took and the ratio of the last
//! to the fluid-model lower bound.

mod model;

use anyhow::{bail, Result};
use clap::Parser;

/// Simulates one seeder and N downloaders sharing a file.
#[derive(Debug, Parser)]
#[command(
    name = "troca-swarm-sim",
    after_help = "Examples:\n  troca-swarm-sim --peers 1000\n  troca-swarm-sim --peers 100 --join-over 30 --leave 0.3 --each"
)]
struct Args {
    /// Downloaders (the seeder comes on top); several give one run each, e.g. 10,100,1000.
    #[arg(long, default_value = "10,100,1000,10000", value_delimiter = ',')]
    peers: Vec<usize>,
    /// The file's size in MiB.
    #[arg(long, default_value_t = 256)]
    file_mib: usize,
    /// Piece size in KiB (default: troca's own for a file of that size).
    #[arg(long)]
    piece_kib: Option<usize>,
    /// Upload rate of every downloader, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    up: f64,
    /// Download rate of every downloader, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    down: f64,
    /// The seeder's upload rate, Mbit/s.
    #[arg(long, default_value_t = 100.0)]
    seed_up: f64,
    /// Round-trip time, ms.
    #[arg(long, default_value_t = 10.0)]
    rtt_ms: f64,
    /// Peers each downloader learns of from the tracker (a listing holds 20).
    #[arg(long, default_value_t = 20)]
    neighbors: usize,
    /// Pieces a downloader has coming at once, in all, among partial holders (one per peer).
    #[arg(long, default_value_t = troca_peer::download::CROWD_IN_FLIGHT)]
    max_incoming: usize,
    /// Requests a downloader keeps at each peer while all it knows hold the whole file.
    #[arg(long, default_value_t = troca_peer::download::DEFAULT_PIPELINE)]
    pipeline: usize,
    /// Pieces an uploader sends at once (0: every piece asked of it, sharing its rate). Past
    /// them a request is answered busy, as troca's peers do.
    #[arg(long, default_value_t = troca_peer::server::DEFAULT_UPLOAD_SLOTS)]
    upload_slots: usize,
    /// Turn initial seeding off (as `troca peer --no-super-seed`). With it, the seeder defers a
    /// request for a piece it gave a downloader still here while another piece has gone to no
    /// one, once per downloader and piece.
    #[arg(long)]
    no_super_seed: bool,
    /// Past the upload slots, a request waits its turn at the uploader instead of being
    /// answered busy.
    #[arg(long)]
    wait_for_slots: bool,
    /// Print how busy the links are every simulated second (stderr).
    #[arg(long)]
    trace: bool,
    /// Spread the downloaders' arrivals over this many seconds (0: all at once).
    #[arg(long, default_value_t = 0.0)]
    join_over: f64,
    /// The share of downloaders that leave once done (the others stay and share).
    #[arg(long, default_value_t = 0.0)]
    leave: f64,
    /// Print every downloader's time, not only the percentiles.
    #[arg(long)]
    each: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let file_bytes = (a.file_mib as u64) << 20;
    let piece_kib = a
        .piece_kib
        .unwrap_or_else(|| (troca_proto::pieces::Layout::for_len(file_bytes).piece >> 10) as usize);
    if piece_kib == 0 || a.file_mib * 1024 < piece_kib {
        bail!("the file must hold at least one piece");
    }
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8} {:>6} {:>6} {:>8} {:>10}",
        "peers",
        "bound s",
        "median s",
        "p99 s",
        "last s",
        "ratio",
        "upload",
        "extra",
        "seed+",
        "seeded s",
        "events"
    );
    for &peers in &a.peers {
        let setup = setup(&a, peers, piece_kib);
        let o = model::run(&setup);
        report(&setup, &o, a.each);
    }
    Ok(())
}

/// The model's set-up for one run of `peers` downloaders.
fn setup(a: &Args, peers: usize, piece_kib: usize) -> model::Setup {
    let mbit = |r: f64| r * 1e6 / 8.0;
    model::Setup {
        peers,
        pieces: a.file_mib * 1024 / piece_kib,
        piece_bytes: (piece_kib << 10) as f64,
        seed_up: mbit(a.seed_up),
        up: mbit(a.up),
        down: mbit(a.down),
        rtt: a.rtt_ms / 1e3,
        neighbors: a.neighbors,
        max_incoming: a.max_incoming.max(1),
        pipeline: a.pipeline.max(1),
        upload_slots: a.upload_slots,
        super_seed: !a.no_super_seed,
        busy: !a.wait_for_slots,
        trace: a.trace,
        join_over: a.join_over,
        leave: a.leave,
        seed: a.seed,
    }
}

/// One run's row of the table (and, with `each`, every downloader's time).
fn report(setup: &model::Setup, o: &model::Outcome, each: bool) {
    let peers = setup.peers;
    let mut took: Vec<f64> = o.took.iter().flatten().copied().collect();
    took.sort_by(f64::total_cmp);
    let unfinished = o.took.len() - took.len();
    let pct = |p: f64| {
        took.get(((took.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{peers:>7} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>8.3} {:>7.0}% {:>5.0}% {:>5.1}% {:>8.2} {:>10}",
        o.bound,
        pct(0.5),
        pct(0.99),
        o.last,
        o.last / o.bound,
        // How busy the uploads were: bytes sent over what every upload could carry.
        100.0 * o.sent as f64 * setup.piece_bytes
            / ((setup.seed_up + peers as f64 * setup.up) * o.last),
        100.0 * o.copies,
        100.0 * o.seed_copies,
        o.seed_all_out,
        o.events
    );
    if unfinished > 0 {
        println!("        {unfinished} downloaders never finished");
    }
    if each {
        for (i, t) in o.took.iter().enumerate() {
            match t {
                Some(t) => println!("        peer {:>6}  {t:.3} s", i + 1),
                None => println!("        peer {:>6}  unfinished", i + 1),
            }
        }
    }
}
