//! Everything the CLI prints goes through here, so no subcommand panics on a
//! closed pipe (`pelagos-net doctor --json | head -c1`): `println!` panics
//! when stdout's reader is gone, these functions stop writing instead.
//!
//! stdout carries the answer (tables, JSON); stderr carries `pelagos-net:`
//! lines: notes, warnings and the one error line.

use super::error::CliError;
use std::io::{ErrorKind, Write};

/// Write `text` to stdout. A reader that went away (EPIPE) is not an
/// error: nobody is left to read the rest. Any other failure is.
pub fn out(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::new(1, format!("writing to stdout: {e}"))),
    }
}

/// Write `line` and a newline to stdout (see [`out`]).
pub fn outln(line: &str) -> Result<(), CliError> {
    out(&format!("{line}\n"))
}

/// Write `value` as pretty JSON and a newline to stdout (see [`out`]).
pub fn json(value: &impl serde::Serialize) -> Result<(), CliError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| CliError::new(1, format!("encoding the JSON output: {e}")))?;
    outln(&text)
}

/// The version every JSON document carries (`schema_version`); the
/// schemas are published under `docs/schemas/`. Bumped when a field
/// changes meaning or goes away; new fields do not bump it.
pub const SCHEMA_VERSION: u32 = 1;

/// `value` as a JSON object with `schema_version` added.
pub fn versioned(value: &impl serde::Serialize) -> Result<serde_json::Value, CliError> {
    let mut value =
        serde_json::to_value(value).map_err(|e| CliError::new(1, format!("encoding the JSON output: {e}")))?;
    if let Some(map) = value.as_object_mut() {
        map.insert("schema_version".into(), SCHEMA_VERSION.into());
    }
    Ok(value)
}

/// Write `text` to stderr without a newline (a question).
pub fn prompt(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}

/// Write `pelagos-net: TEXT` to stderr. Failures are ignored: stderr is
/// where they would have been reported.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "pelagos-net: {text}");
}

/// Write `pelagos-net: warning: TEXT` to stderr.
pub fn warn(text: &str) {
    note(&format!("warning: {text}"));
}

/// Write `pelagos-net: error: TEXT` to stderr: the one error style, for
/// usage errors and runtime errors alike.
pub fn error(text: &str) {
    note(&format!("error: {text}"));
}

/// Route `log` records to stderr as `pelagos-net: LEVEL: message`
/// (`-v`: info, `-vv`: debug).
pub fn init_logger(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .format(|buf, record| {
            let level = match record.level() {
                log::Level::Warn => "warning".to_owned(),
                l => l.as_str().to_lowercase(),
            };
            writeln!(buf, "pelagos-net: {level}: {}", record.args())
        })
        .init();
}
