//! The `troca` command: parses arguments and hands each subcommand to its module. Errors end
//! here as one line on stderr and exit status 1 (clap's usage errors exit with 2).

mod args;
mod client;
mod config;
mod dry;
mod glob;
mod json;
mod known;
mod mirror;
mod output;
mod peer;
mod progress;
mod retry;
mod serve;
mod share;
mod shell;
mod swarm;
mod token;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_when_stdout_closes();
    let argv = match config::with_settings(std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(e) => {
            eprintln!("troca: {e}");
            return ExitCode::from(2);
        }
    };
    let args = args::Cli::parse_from(argv);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TROCA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // A folder download holds a descriptor for each file of its batches until they are named.
    troca_net::raise_fd_limit();
    let global = args::Global::resolve(&args.hub, args.command.hub_args(), args.output);
    let result = match args.command {
        args::Command::Completions { shell } => {
            let mut cmd = <args::Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "troca", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        args::Command::Man => {
            let cmd = <args::Cli as clap::CommandFactory>::command();
            match clap_mangen::Man::new(cmd).render(&mut std::io::stdout()) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(anyhow::Error::new(e).context("cannot write the manual page")),
            }
        }
        args::Command::Serve(serve) => serve::main(*serve),
        args::Command::Token(cmd) => token::main(&global, cmd),
        args::Command::Json { .. } => json::main(&global),
        args::Command::Shell { .. } => shell::main(&global),
        args::Command::Health {
            hub,
            state,
            timeout,
        } => serve::health(&hub, state.as_deref(), timeout),
        args::Command::Tracker {
            listen,
            lifetime,
            stats_every,
            metrics,
            limits,
        } => swarm::tracker(&listen, lifetime, stats_every, metrics.as_deref(), &limits),
        args::Command::Swarm(cmd) => swarm::main(&global, cmd),
        args::Command::Peer(peer) => peer::main(&global, peer),
        command => client::main(&global, command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("troca: {}", output::explain(&e, global.has_token()));
            ExitCode::from(1)
        }
    }
}

/// `troca ls | head`: once the reader of stdout has gone, printing more ends troca quietly
/// (status 0, as ripgrep does), as SIGPIPE ends `ls`, rather than with a panic and its trace.
/// (SIGPIPE itself stays ignored: a hub's socket closing must be an error troca handles, never
/// a signal that kills it mid-transfer.)
fn quiet_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}
