//! `pelagos-net man`: manual pages generated from the clap definitions
//! (the same text as `--help`, so they never drift from the parser).
//!
//! `pelagos-net man | man -l -` reads the main page; `pelagos-net man --dir
//! DIR` writes `pelagos-net.1` and one `pelagos-net-SUBCOMMAND.1` per
//! subcommand into DIR (e.g. `/usr/local/share/man/man1`).

use super::error::{CliError, Exit};
use super::{Context, output};
use std::path::PathBuf;

/// Options of `man`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write every page into this directory instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// Print or write the pages.
pub fn run_cmd(args: Args, _ctx: &Context) -> Result<Exit, CliError> {
    let cmd = super::command();
    match args.dir {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(CliError::usage(format!(
                    "invalid value '{}' for '--dir <DIR>': not a directory",
                    dir.display()
                )));
            }
            clap_mangen::generate_to(cmd, &dir)
                .map_err(|e| CliError::new(1, format!("write manual pages into {}: {e}", dir.display())))?;
        }
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .map_err(|e| CliError::new(1, format!("render the manual page: {e}")))?;
            output::out(&String::from_utf8_lossy(&page))?;
        }
    }
    Ok(Exit::SUCCESS)
}
