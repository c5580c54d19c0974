//! `troca peer DIR`: shares DIR with the swarm until stopped. In a terminal it also shows the
//! numbered menu (1 register, 2 list files, 3 download, 4 update registration, 5 leave, 6 quit)
//! and takes typed commands; otherwise it just serves. It leaves the swarm (END) when it stops.

use crate::args::{Global, PeerArgs};
use crate::progress::Bar;
use crate::swarm::{print_listing, print_outcome, resolve};
use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use tokio_util::sync::CancellationToken;
use troca_peer::{download, Peer, PeerConfig, ServerConfig};

const MENU: &str = "\
  1 join the swarm   2 list files   3 download   4 refresh my files   5 leave the swarm   6 quit
  or type: ls|listar|procurar [TEXT] | get|baixar ID|NAME | join|entrar | refresh|atualizar |
           leave|deixar | quit|sair | help|ajuda";

pub fn main(global: &Global, args: PeerArgs) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run(global, args))
}

async fn run(global: &Global, args: PeerArgs) -> Result<ExitCode> {
    let tracker = resolve(&args.tracker.addr).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    if addr.ip().is_loopback() && !tracker.ip().is_loopback() {
        eprintln!(
            "troca: warning: serving on {addr}, which other machines cannot reach; \
             use --listen 0.0.0.0:0 to share with them"
        );
    }
    let stats = Arc::new(troca_peer::stats::PeerStats::default());
    let metrics = crate::serve::metrics_listener(args.metrics.as_deref()).await?;
    let config = peer_config(global, &args, tracker, &stats)?;
    let shutdown = CancellationToken::new();
    let peer = Peer::start(listener, config, shutdown.clone())
        .await
        .with_context(|| format!("cannot share {}", args.dir.display()))?;
    let signals = crate::serve::Signals::catch()?;
    println!("listening on {addr}");
    match peer.key() {
        Some(key) => println!("key {key}"),
        None => println!("plaintext (no TLS)"),
    }
    if let Some(listener) = metrics {
        println!("metrics http://{}/metrics", listener.local_addr()?);
        let registry = Arc::new(troca_peer::stats::PeerMetrics::new());
        let render: troca_web::metrics::Render = Arc::new(move || {
            let text = registry.encode(&stats);
            Box::pin(async move { text })
        });
        tokio::spawn(troca_web::metrics::serve(
            listener,
            render,
            shutdown.clone(),
        ));
    }
    std::io::stdout().flush()?;
    let n = peer.library().files().len();
    eprintln!(
        "troca: sharing {} from {} with tracker {tracker}",
        crate::output::count(n as u64, "file", "files"),
        peer.library().dir().display()
    );

    if std::io::stdin().is_terminal() {
        menu(global, &peer).await?;
    } else {
        signals.wait().await;
    }
    eprintln!("troca: leaving the swarm");
    if let Err(e) = peer.stop().await {
        // Not this peer's fault, and nothing is lost: the tracker drops it when its
        // registration lapses.
        unheard_leave(&e);
    }
    Ok(ExitCode::SUCCESS)
}

/// Says that stopping could not tell the tracker (a warning: nothing is lost, and the tracker
/// forgets a peer whose registration lapses).
pub(crate) fn unheard_leave(e: &troca_peer::Error) {
    eprintln!(
        "troca: warning: the tracker did not hear this peer leave ({e}); it forgets peers \
         that stop refreshing"
    );
}

/// The peer's settings, from the command line.
fn peer_config(
    global: &Global,
    args: &PeerArgs,
    tracker: std::net::SocketAddr,
    stats: &Arc<troca_peer::stats::PeerStats>,
) -> Result<PeerConfig> {
    let plaintext = args.plaintext || global.plaintext;
    Ok(PeerConfig {
        dir: args.dir.clone(),
        only_images: args.only.as_deref() == Some("images"),
        tracker,
        refresh: args.refresh,
        server: ServerConfig {
            max_rate: args.max_rate,
            max_connections: args.max_connections.max(1),
            max_connections_per_ip: args.max_connections_per_ip.max(1),
            upload_slots: args.upload_slots,
            super_seed: !args.no_super_seed,
            idle_timeout: args.idle_timeout,
            stats: Arc::clone(stats),
            ..ServerConfig::default()
        },
        download: download::Options {
            client_name: crate::client::client_name(global),
            allow_plaintext: plaintext,
            stats: Arc::clone(stats),
            ..download::Options::default()
        },
        identity: identity(plaintext)?,
        share_folder: true,
    })
}

/// This machine's peer key (made on first use in the data folder), or none in plaintext.
pub(crate) fn identity(plaintext: bool) -> Result<Option<Arc<troca_net::identity::Identity>>> {
    if plaintext {
        return Ok(None);
    }
    let state = crate::client::data_dir()
        .context("no HOME or XDG_DATA_HOME to keep this peer's TLS key in (or say --plaintext)")?
        .join("peer");
    let identity = troca_net::identity::Identity::load_or_create(&state)
        .with_context(|| format!("cannot load or make the peer's key in {}", state.display()))?;
    Ok(Some(Arc::new(identity)))
}

/// What the person asked for.
enum Choice {
    Register,
    List(String),
    Get(String),
    Update,
    Leave,
    Quit,
    Help,
    Unknown(String),
}

fn parse(line: &str) -> Option<Choice> {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim().to_owned();
    Some(match word {
        "" => return None,
        "1" | "join" | "entrar" | "reg" | "register" | "registrar" => Choice::Register,
        "2" | "ls" | "list" | "listar" | "find" | "procurar" | "buscar" => Choice::List(rest),
        "3" | "get" | "download" | "baixar" => Choice::Get(rest),
        "4" | "refresh" | "atualizar" | "upd" | "update" => Choice::Update,
        "5" | "leave" | "deixar" | "end" => Choice::Leave,
        "6" | "quit" | "exit" | "q" | "sair" => Choice::Quit,
        "help" | "ajuda" | "?" => Choice::Help,
        other => Choice::Unknown(other.to_owned()),
    })
}

/// Reads lines on a thread of their own (rustyline blocks) and acts on each in turn; a signal
/// ends it too.
async fn menu(global: &Global, peer: &Arc<Peer>) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<String>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    // The menu first: the reader prints its prompt as soon as it starts.
    eprintln!("{MENU}");
    std::thread::spawn(move || read_lines(tx, done_rx));
    loop {
        let line = tokio::select! {
            r = crate::serve::wait_for_signal() => { r?; return Ok(()); }
            line = rx.recv() => line.flatten(),
        };
        let Some(line) = line else { return Ok(()) };
        let Some(choice) = parse(&line) else {
            let _ = done_tx.send(());
            continue;
        };
        if matches!(choice, Choice::Quit) {
            return Ok(());
        }
        if let Err(e) = act(global, peer, choice).await {
            eprintln!("troca: {}", crate::output::one_line(&e));
        }
        let _ = done_tx.send(());
    }
}

async fn act(global: &Global, peer: &Arc<Peer>, choice: Choice) -> Result<()> {
    match choice {
        Choice::Register => {
            peer.register().await?;
            let n = peer.library().files().len();
            eprintln!(
                "joined the swarm, sharing {}",
                crate::output::count(n as u64, "file", "files")
            );
        }
        Choice::List(filter) => print_listing(global.json, &peer.list(&filter).await?)?,
        Choice::Get(what) if what.is_empty() => eprintln!("say which: get ID|NAME"),
        Choice::Get(what) => {
            let bar = Arc::new(Bar::new(&what, global.quiet));
            let outcome = peer.fetch(&what, bar).await?;
            print_outcome(global, &outcome)?;
        }
        Choice::Update => {
            let ch = peer.update().await?;
            eprintln!(
                "refreshed: {} added, {} removed",
                ch.added.len(),
                ch.removed.len()
            );
        }
        Choice::Leave => {
            peer.leave().await?;
            eprintln!("left the swarm (still serving what is shared); 1 joins again");
        }
        Choice::Help => eprintln!("{MENU}"),
        Choice::Unknown(w) => eprintln!("unknown choice {w:?}\n{MENU}"),
        Choice::Quit => {}
    }
    Ok(())
}

/// The line reader: one line at a time, waiting for each to be handled before prompting again,
/// so answers and the next prompt do not interleave. "3" alone asks which file.
fn read_lines(tx: tokio::sync::mpsc::UnboundedSender<Option<String>>, done: mpsc::Receiver<()>) {
    let Ok(mut editor) = rustyline::DefaultEditor::new() else {
        let _ = tx.send(None);
        return;
    };
    loop {
        let line = match editor.readline("peer> ") {
            Ok(l) => l,
            // Ctrl-C (which the line editor catches) and Ctrl-D stop the peer, as a signal does.
            Err(_) => {
                let _ = tx.send(None);
                return;
            }
        };
        let _ = editor.add_history_entry(line.as_str());
        let mut line = line.trim().to_owned();
        if line == "3" {
            match editor.readline("id or name> ") {
                Ok(what) => line = format!("get {}", what.trim()),
                Err(_) => continue,
            }
        }
        if tx.send(Some(line)).is_err() || done.recv().is_err() {
            return;
        }
    }
}
