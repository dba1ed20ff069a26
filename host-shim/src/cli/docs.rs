//! `host-shim completions SHELL` and `host-shim man`: generated from the
//! same clap definitions that parse the command line, so they cannot
//! disagree with it.

use anyhow::Context as _;
use clap::Args;
use clap_complete::Shell;
use std::io::Write as _;
use std::process::ExitCode;

/// `host-shim completions`.
#[derive(Debug, Args)]
#[command(after_long_help = "\
Examples:
  host-shim completions bash > ~/.local/share/bash-completion/completions/host-shim
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

/// Prints the man page of `command`, with a section per subcommand.
pub fn man(mut command: clap::Command) -> anyhow::Result<ExitCode> {
    // Built, so that each subcommand carries what its parent gives it
    // (`-h` as the host, the global `--help` and `-d`).
    command.build();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .context("cannot render the man page")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("host-shim {}", sub.get_name());
        let sub = sub.clone().display_name(name.clone()).bin_name(name);
        let man = clap_mangen::Man::new(sub);
        man.render_name_section(&mut page)?;
        man.render_synopsis_section(&mut page)?;
        man.render_description_section(&mut page)?;
        man.render_options_section(&mut page)?;
        man.render_extra_section(&mut page)?;
    }
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&page).context("cannot write to stdout")?;
    stdout.flush().context("cannot write to stdout")?;
    Ok(ExitCode::SUCCESS)
}
