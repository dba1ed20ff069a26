//! `host-shim completions SHELL` and `host-shim man [SUBCOMMAND]`: generated from the
//! same clap definitions that parse the command line, so they cannot
//! disagree with it.

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `host-shim completions`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  host-shim completions bash > /etc/bash_completion.d/host-shim
  host-shim completions zsh > ~/.zfunc/_host-shim
  host-shim completions fish > ~/.config/fish/completions/host-shim.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_name = "SHELL")]
    pub shell: Shell,
}

/// Prints the completion script of `args.shell` for `command`.
pub fn completions(args: &CompletionsArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    let mut stdout = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "host-shim", &mut stdout);
    stdout.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `host-shim man`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  host-shim man | man -l -
  host-shim man send | man -l -
  host-shim man --out-dir /usr/local/share/man/man1")]
pub struct ManArgs {
    /// The page of this subcommand (host-shim-SUBCOMMAND(1))
    #[arg(value_name = "SUBCOMMAND")]
    pub subcommand: Option<String>,
    /// Write every page, host-shim.1 and host-shim-*.1, into DIR
    #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
    pub out_dir: Option<PathBuf>,
}

/// Prints the man page of `command` or of one of its subcommands, or
/// writes them all into a directory.
pub fn man(args: &ManArgs, mut command: clap::Command) -> anyhow::Result<ExitCode> {
    // Built, so that each subcommand carries what its parent gives it
    // (`-h` as the host, the global `--help` and `-d`).
    command.build();
    if let Some(dir) = &args.out_dir {
        write_pages(&command, None, dir)
            .with_context(|| format!("cannot write the man pages into {}", dir.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    let page = match &args.subcommand {
        None => command,
        Some(name) => {
            let sub = command.find_subcommand(name).ok_or_else(|| {
                let names: Vec<&str> = pages(&command).map(|s| s.get_name()).collect();
                anyhow::anyhow!("no subcommand {name:?}; one of: {}", names.join(", "))
            })?;
            page_of(&command, sub)
        }
    };
    let mut stdout = std::io::stdout().lock();
    clap_mangen::Man::new(page)
        .render(&mut stdout)
        .context("cannot write the man page to stdout")?;
    stdout.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// The subcommands that get a page: all but `help`, which `--help` covers.
fn pages(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command.get_subcommands().filter(|s| s.get_name() != "help")
}

/// `sub` of `parent` as a page of its own: named `host-shim-send(1)` as
/// man pages of subcommands are, with the program's version.
fn page_of(parent: &clap::Command, sub: &clap::Command) -> clap::Command {
    let parent_bin = parent
        .get_bin_name()
        .unwrap_or(parent.get_name())
        .to_owned();
    let parent_page = parent
        .get_display_name()
        .unwrap_or(parent.get_name())
        .to_owned();
    sub.clone()
        .display_name(format!("{parent_page}-{}", sub.get_name()))
        .bin_name(format!("{parent_bin} {}", sub.get_name()))
        // Not propagated by clap: that would give every subcommand a
        // `-V` for the version, which is `-V` for the protocol on `send`.
        .version(env!("CARGO_PKG_VERSION"))
}

/// Writes `command`'s page and those of its subcommands into `dir`.
fn write_pages(
    command: &clap::Command,
    page: Option<clap::Command>,
    dir: &Path,
) -> anyhow::Result<()> {
    let page = page.unwrap_or_else(|| command.clone());
    let name = page
        .get_display_name()
        .unwrap_or(page.get_name())
        .to_owned();
    let mut bytes = Vec::new();
    clap_mangen::Man::new(page.clone()).render(&mut bytes)?;
    std::fs::write(dir.join(format!("{name}.1")), bytes)?;
    for sub in pages(command) {
        write_pages(sub, Some(page_of(&page, sub)), dir)?;
    }
    Ok(())
}
