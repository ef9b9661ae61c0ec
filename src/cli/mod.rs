//! The `pelagos-net` command line: parsing, dispatch, output and exit codes.
//!
//! One module per subcommand, each with an `Args` struct (clap derive) and
//! `run_cmd(args, &Context) -> Result<Exit, CliError>`. Shared pieces:
//! [`error`] (exit codes, [`CliError`]), [`output`] (all printing; never
//! `println!`, which panics on a closed pipe), [`net_args`] (the network
//! options of `run` and `plan`).
//!
//! To add a subcommand: write `cli/NAME.rs` like [`gc`], add a variant to
//! [`Command`] and an arm to [`dispatch`]. Its errors print once, here, as
//! `pelagos-net: error: …`; usage errors (clap's and the ones a subcommand
//! finds itself with [`CliError::usage`]) exit 125 naming the flag or value.

pub mod arena;
mod attach;
mod completions;
mod doctor;
mod error;
mod gc;
mod man;
mod net_args;
mod network;
mod output;
mod plan;
mod port;
mod ps;
mod run;
pub mod start;
mod status;

use crate::state::paths::{PathEnv, Paths};
use clap::{Parser, Subcommand};
use error::{CliError, EXIT_USAGE, Exit};
use std::path::PathBuf;

/// Rootless-first network namespaces for containers and CI.
#[derive(Debug, Parser)]
#[command(name = "pelagos-net", version, about)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// `run`'s own parser, used when `run` is the first argument: the same
/// global options and `run` subcommand as [`Cli`], without building the
/// definitions of every other subcommand, which took clap about 0.1 ms at
/// each start (`run` is timed against `unshare -Urn true`). Help, errors
/// and values are `run`'s alike (a test compares the two).
#[derive(Debug, Parser)]
#[command(name = "pelagos-net", version, about)]
struct RunCli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: RunOnly,
}

/// The one subcommand of [`RunCli`].
#[derive(Debug, Subcommand)]
enum RunOnly {
    /// Run a command in its own network namespace.
    Run(run::Args),
}

/// The global options that take a value (a test checks the list).
const GLOBAL_VALUES: [&str; 3] = ["--run-dir", "--config-dir", "--netns-dir"];

/// The subcommand of a command line: its first argument after the global
/// options (`None` when something else comes first, `--help` say).
fn subcommand_of(args: impl IntoIterator<Item = std::ffi::OsString>) -> Option<std::ffi::OsString> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else { return Some(arg) };
        let short_v = text.strip_prefix('-').is_some_and(|vs| !vs.is_empty() && vs.bytes().all(|b| b == b'v'));
        let verbose = text == "--verbose" || short_v;
        let valued =
            GLOBAL_VALUES.iter().find(|o| text.strip_prefix(**o).is_some_and(|r| r.is_empty() || r.starts_with('=')));
        match valued {
            Some(o) if text.len() == o.len() => drop(args.next()),
            Some(_) => {}
            None if verbose => {}
            None => return Some(arg),
        }
    }
    None
}

/// Parse the command line: through [`RunCli`] when its subcommand is `run`.
fn parse() -> Result<Cli, clap::Error> {
    if subcommand_of(std::env::args_os().skip(1)).is_some_and(|sub| sub == "run") {
        let RunCli { global, command: RunOnly::Run(args) } = RunCli::try_parse()?;
        return Ok(Cli { global, command: Command::Run(args) });
    }
    Cli::try_parse()
}

/// Options every subcommand accepts (listed under their own heading).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
struct GlobalArgs {
    /// Show pasta's arguments and output, timings and teardown details.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Runtime state directory (default: /run/pelagos-net as root, $XDG_RUNTIME_DIR/pelagos-net rootless).
    #[arg(long, global = true, env = "PELAGOS_NET_RUN_DIR", value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Configuration directory (network definitions).
    #[arg(long, global = true, env = "PELAGOS_NET_CONFIG_DIR", value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Directory of named network namespaces.
    #[arg(long, global = true, env = "PELAGOS_NET_NETNS_DIR", value_name = "DIR")]
    netns_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command in its own network namespace.
    Run(run::Args),
    /// Check this host: what works, what does not, and the fix for each problem.
    Doctor(doctor::Args),
    /// Show what `run` would do (mode, reasons, helper argv, links, rules), touching nothing.
    Plan(plan::Args),
    /// Remove what runs whose owner died left behind (helpers, netns names,
    /// forwards, leases, records); live runs are never touched.
    Gc(gc::Args),
    /// List live runs.
    Ps(ps::Args),
    /// Show a run's published ports.
    Port(port::Args),
    /// Manage bridge networks.
    #[command(subcommand)]
    Network(network::NetworkCmd),
    /// Network a namespace someone else made (`/proc/PID/ns/net`, `/run/netns/NAME`)
    /// and leave it networked until `detach`, or until the namespace is gone and `gc` runs.
    Attach(attach::Args),
    /// Undo an attachment (the id `attach` printed).
    Detach(attach::DetachArgs),
    /// Print a shell completion script (bash, zsh or fish).
    Completions(completions::Args),
    /// Print the manual page (or write every page into a directory).
    Man(man::Args),
}

/// What every subcommand gets besides its own options.
#[derive(Debug)]
pub struct Context {
    /// State, configuration, netns and proc roots (global options applied).
    pub paths: Paths,
    /// `-v` count.
    pub verbose: u8,
}

impl GlobalArgs {
    fn context(&self) -> Context {
        let mut paths = Paths::from_env(&PathEnv::current());
        if let Some(dir) = &self.run_dir {
            paths.run_dir = dir.clone();
        }
        if let Some(dir) = &self.netns_dir {
            paths.netns_dir = dir.clone();
        }
        if let Some(dir) = &self.config_dir {
            paths.config_dir = dir.clone();
        }
        Context { paths, verbose: self.verbose }
    }
}

fn dispatch(command: Command, ctx: &Context) -> Result<Exit, CliError> {
    match command {
        Command::Run(args) => run::run_cmd(args, ctx),
        Command::Doctor(args) => doctor::run_cmd(args, ctx),
        Command::Plan(args) => plan::run_cmd(args, ctx),
        Command::Gc(args) => gc::run_cmd(args, ctx),
        Command::Ps(args) => ps::run_cmd(args, ctx),
        Command::Port(args) => port::run_cmd(args, ctx),
        Command::Network(cmd) => network::run_cmd(cmd, ctx),
        Command::Attach(args) => attach::run_cmd(args, ctx),
        Command::Detach(args) => attach::detach_cmd(args, ctx),
        Command::Completions(args) => completions::run_cmd(args, ctx),
        Command::Man(args) => man::run_cmd(args, ctx),
    }
}

/// The clap definition of the whole command line (for completions and
/// manual pages, generated from the same source as the parser).
fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Parse the command line, run the subcommand, print its error once;
/// returns the exit status.
pub fn main() -> i32 {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return parse_failed(&e),
    };
    output::init_logger(cli.global.verbose);
    let ctx = cli.global.context();
    let code = match dispatch(cli.command, &ctx) {
        Ok(exit) => exit.status(),
        Err(e) => {
            output::error(&e.message);
            Exit::code(e.code).status()
        }
    };
    // A socket that removed forwards must not make this exit wait for the
    // kernel's grace period (see `firewall::closer`).
    crate::bridge::firewall::closer::detach_pending();
    code
}

/// `--help` and `--version` print to stdout and succeed; a missing
/// subcommand prints the help to stderr; every other parse failure is a usage error (exit 125) in the one error style.
fn parse_failed(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            // Writes to stdout; a closed pipe is not worth reporting.
            let _ = e.print();
            Exit::SUCCESS.status()
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            output::error("a subcommand is required");
            Exit::code(EXIT_USAGE).status()
        }
        _ => {
            output::error(&error::clap_message(e));
            Exit::code(EXIT_USAGE).status()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `run` as the whole command line defines it.
    fn full_run() -> clap::Command {
        let mut cli = Cli::command();
        cli.build();
        cli.find_subcommand("run").cloned().expect("run")
    }

    fn run_only() -> clap::Command {
        let mut cli = RunCli::command();
        cli.build();
        cli.find_subcommand("run").cloned().expect("run")
    }

    #[test]
    fn runs_own_parser_has_runs_help() {
        assert_eq!(run_only().render_long_help().to_string(), full_run().render_long_help().to_string());
        assert_eq!(RunCli::command().get_version(), Cli::command().get_version());
    }

    #[test]
    fn the_subcommand_comes_after_the_global_options() {
        let sub = |line: &[&str]| subcommand_of(line.iter().map(std::ffi::OsString::from));
        assert_eq!(sub(&["run", "true"]), Some("run".into()));
        assert_eq!(sub(&["--run-dir", "/r", "--netns-dir=/n", "-vv", "--verbose", "run", "true"]), Some("run".into()));
        assert_eq!(sub(&["--run-dir", "run", "ps"]), Some("ps".into()));
        assert_eq!(sub(&["--help", "run"]), Some("--help".into()));
        assert_eq!(sub(&["--run-dirx", "run"]), Some("--run-dirx".into()));
        assert_eq!(sub(&["-v"]), None);
        let mut cli = clap::Command::new("x");
        cli = <GlobalArgs as clap::Args>::augment_args(cli);
        let mut valued: Vec<String> = cli
            .get_arguments()
            .filter(|a| a.get_action().takes_values())
            .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
            .collect();
        valued.sort();
        let mut listed = GLOBAL_VALUES.map(String::from).to_vec();
        listed.sort();
        assert_eq!(valued, listed);
    }

    #[test]
    fn runs_own_parser_parses_and_refuses_alike() {
        let lines: [&[&str]; 6] = [
            &["pelagos-net", "--run-dir", "/r", "-v", "--netns-dir=/n", "run", "--network", "loopback", "true"],
            &["pelagos-net", "run", "-v", "--network", "loopback", "-p", "8080:80", "--", "true", "-x"],
            &["pelagos-net", "run", "--run-dir", "/tmp/x", "--dns", "192.0.2.1", "sh"],
            &["pelagos-net", "run", "--bogus", "true"],
            &["pelagos-net", "run"],
            &["pelagos-net", "run", "--network"],
        ];
        for line in lines {
            let full = Cli::try_parse_from(line).map(|c| format!("{:?} {:?}", c.global, c.command));
            let own = RunCli::try_parse_from(line).map(|c| {
                let RunOnly::Run(args) = c.command;
                format!("{:?} {:?}", c.global, Command::Run(args))
            });
            match (full, own) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{line:?}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{line:?}"),
                (a, b) => panic!("{line:?}: {a:?} against {b:?}"),
            }
        }
    }
}
