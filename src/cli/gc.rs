//! `pelagos-net gc`: remove what dead runs left behind.

use super::error::{CliError, Exit};
use super::{Context, output};
use crate::flow::gc::gc;

/// Options of `gc`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only report what would be removed.
    #[arg(long)]
    dry_run: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Collect; exit 1 when something could not be removed.
pub fn run_cmd(args: Args, ctx: &Context) -> Result<Exit, CliError> {
    let report = gc(&ctx.paths, args.dry_run).map_err(|e| CliError::from_error(&e))?;
    if args.json {
        output::json(&output::versioned(&report)?)?;
    } else {
        let verb = if args.dry_run { "would remove" } else { "removed" };
        for a in &report.actions {
            match &a.error {
                None => output::outln(&format!("{} {verb} {}", a.run, a.what))?,
                Some(e) => output::outln(&format!("{} failed to remove {}: {e}", a.run, a.what))?,
            }
        }
        output::outln(&format!("{} live run(s) left alone", report.live.len()))?;
    }
    Ok(if report.actions.iter().any(|a| a.error.is_some()) { Exit::NO } else { Exit::SUCCESS })
}
