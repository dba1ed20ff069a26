//! The subcommands: `run`, `send`, `listen`, `schema`, `validate` and
//! `retained`, one file each, `completions` and `man` (`docs`), and what
//! they share: the connection flags (`connection`), exit codes and hints
//! (`exit`), `listen`'s output formats (`format`), the log filter
//! (`logging`), the progress line (`progress`), loading JSON files and
//! stdout handling (here). `readme` tests the README's command lines.
//!
//! Each command takes its low-level arguments (what clap parsed), settles
//! them into the configuration JSON the connector takes, checks it with the
//! connector's own validation, and only then connects.

/// The exit codes as the help of `send` and `listen` lists them (a macro,
/// for `concat!` in their `after_long_help`); the values are `exit`'s.
macro_rules! exit_status_help {
    () => {
        "Exit status: 0 all sent / done, 1 some documents failed, 2 usage or
configuration error, 3 connection failed, 27 listen timed out (-W) before
its count (-C)."
    };
}

pub mod connection;
pub mod docs;
pub mod exit;
pub mod format;
pub mod listen;
pub mod logging;
pub mod progress;
#[cfg(test)]
mod readme;
pub mod retained;
pub mod run;
pub mod schema;
pub mod send;
pub mod validate;

pub use connection::ConnectionArgs;

use anyhow::Context as _;
use host_shim::flow::{config_problems, ConfigKind, Problem};
use host_shim::host::{CodeCache, Limits, Runtime};
use serde_json::{Map, Value as Json};
use std::io::{IsTerminal as _, Read as _};
use std::path::Path;

/// The connector: the component built into the shim, or one from a file,
/// compiled once and then read from the user's code cache.
pub fn runtime(component: Option<&Path>) -> anyhow::Result<Runtime> {
    let cache = CodeCache::user_default();
    match component {
        Some(path) => Ok(Runtime::from_file_cached(
            path,
            Limits::default(),
            cache.as_ref(),
        )?),
        None => Runtime::embedded_cached(Limits::default(), cache.as_ref())
            .context("cannot load the built-in connector"),
    }
}

/// Fails with every problem, one per line, when the connector finds the
/// configuration invalid.
pub fn ensure_valid(kind: ConfigKind, what: &str, config: &Json) -> anyhow::Result<()> {
    ensure_valid_with_hint(kind, what, config, |_| None)
}

/// [`ensure_valid`], with a hint after the problems `hint` has one for.
pub fn ensure_valid_with_hint(
    kind: ConfigKind,
    what: &str,
    config: &Json,
    hint: impl Fn(&Problem) -> Option<&'static str>,
) -> anyhow::Result<()> {
    let problems = config_problems(kind, config);
    if problems.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = problems
        .iter()
        .map(|p| match hint(p) {
            Some(hint) => format!("\n  {} ({hint})", p.line()),
            None => format!("\n  {}", p.line()),
        })
        .collect();
    anyhow::bail!("invalid {what} configuration:{}", lines.concat())
}

/// Reads a file, or standard input for `-`.
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Reads a JSON file; errors name the file, the line and the column.
pub fn read_json(path: &Path) -> anyhow::Result<Json> {
    let text = read_text(path)?;
    serde_json::from_str(&text).with_context(|| format!("invalid JSON in {}", path.display()))
}

/// Reads a JSON file that must hold an object.
pub fn read_object(path: &Path) -> anyhow::Result<Map<String, Json>> {
    match read_json(path)? {
        Json::Object(object) => Ok(object),
        _ => anyhow::bail!("{} must hold a JSON object", path.display()),
    }
}

/// A tokio runtime for one command.
pub fn tokio() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")
}

/// Whether to draw progress: only for a person watching stderr, and only
/// when stdout is not the same screen the results scroll on.
pub fn show_progress() -> bool {
    std::io::stderr().is_terminal() && !std::io::stdout().is_terminal()
}

/// Whether an error is a closed stdout (`host-shim listen | head -1`), which
/// ends the command quietly and successfully.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
