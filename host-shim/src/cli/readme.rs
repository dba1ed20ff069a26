//! Keeps the README's shell examples true: every `host-shim` command line
//! of its `sh` blocks must parse with the command line's own definitions,
//! and each `mosquitto_pub` / `mosquitto_sub` line followed by a
//! `host-shim pub` / `sub` line must have the same arguments. (Its flow
//! snippets are run by `tests/readme.rs`.)

use crate::Cli;
use clap::CommandFactory as _;

/// The README, as the binary was built with it.
const README: &str = include_str!("../../../README.md");

/// The contents of each fenced block of `lang`.
fn blocks<'a>(markdown: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("```").unwrap_or(body.len());
        found.push(&body[..end]);
        rest = &body[end..];
    }
    found
}

/// The simple commands of a shell line (split at `|`, `;`, `&`), each as
/// its words: quotes and backslashes resolved, comments and redirections
/// left out.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut redirect = false;
    let mut chars = line.chars().peekable();
    let end_word =
        |word: &mut Option<String>, commands: &mut Vec<Vec<String>>, redirect: &mut bool| {
            if let Some(w) = word.take() {
                if std::mem::take(redirect) {
                    return;
                }
                if let Some(last) = commands.last_mut() {
                    last.push(w);
                }
            }
        };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => word.get_or_insert_with(String::new).extend(chars.next()),
            '#' if word.is_none() => break,
            '>' | '<' => {
                // `2>`: the digits were the redirection's, not a word.
                if word
                    .as_deref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_digit()))
                {
                    word = None;
                }
                end_word(&mut word, &mut commands, &mut redirect);
                redirect = true;
            }
            '|' | ';' | '&' => {
                end_word(&mut word, &mut commands, &mut redirect);
                if commands.last().is_some_and(|c| !c.is_empty()) {
                    commands.push(Vec::new());
                }
            }
            c if c.is_whitespace() => end_word(&mut word, &mut commands, &mut redirect),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut word, &mut commands, &mut redirect);
    commands.retain(|c| !c.is_empty());
    commands
}

/// The lines of a shell block, with `\`-continued lines joined.
fn shell_lines(block: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        match line.strip_suffix('\\') {
            Some(start) => pending.push_str(start),
            None => {
                pending.push_str(line);
                lines.push(std::mem::take(&mut pending));
            }
        }
    }
    lines
}

/// `host-shim`'s arguments in a command: `host-shim ARGS`, or
/// `cargo run ... -p host-shim -- ARGS`.
fn host_shim_args(command: &[String]) -> Option<Vec<String>> {
    match command.first().map(String::as_str) {
        Some("host-shim") => Some(command.to_vec()),
        Some("cargo") if command.iter().any(|w| w == "host-shim") => {
            let dashes = command.iter().position(|w| w == "--")?;
            let mut args = vec!["host-shim".to_owned()];
            args.extend_from_slice(&command[dashes + 1..]);
            Some(args)
        }
        _ => None,
    }
}

#[test]
fn the_shell_splitter_reads_quotes_pipes_comments_and_redirections() {
    assert_eq!(
        commands(r#"tail -f a.log | host-shim pub -t 'a b' -m "x \"y\"" > out 2>&1 # note"#),
        [
            vec!["tail", "-f", "a.log"],
            vec!["host-shim", "pub", "-t", "a b", "-m", "x \"y\""],
        ]
    );
    assert_eq!(commands("a && b; c &"), [vec!["a"], vec!["b"], vec!["c"]]);
    assert_eq!(shell_lines("a \\\n  b\nc"), ["a   b", "c"]);
}

/// Whether `ours` is the `host-shim` twin of Mosquitto's `theirs`:
/// `host-shim pub` for `mosquitto_pub` (`sub` for `mosquitto_sub`) with
/// the same arguments.
fn twins(theirs: &[String], ours: &[String]) -> bool {
    let alias = match theirs.first().map(String::as_str) {
        Some("mosquitto_pub") => "pub",
        Some("mosquitto_sub") => "sub",
        _ => return false,
    };
    ours.len() > 1 && ours[0] == "host-shim" && ours[1] == alias && ours[2..] == theirs[1..]
}

#[test]
fn every_host_shim_line_of_the_readme_parses() {
    let mut checked = 0;
    let mut side_by_side = 0;
    for block in blocks(README, "sh") {
        let lines: Vec<Vec<Vec<String>>> = shell_lines(block).iter().map(|l| commands(l)).collect();
        for (i, line) in lines.iter().enumerate() {
            for command in line {
                if let Some(args) = host_shim_args(command) {
                    if let Err(e) = Cli::command().try_get_matches_from(&args) {
                        panic!("README: {args:?} does not parse:\n{e}");
                    }
                    checked += 1;
                }
            }
            // A Mosquitto line followed by a host-shim line says they do
            // the same: the same pipeline, pub for mosquitto_pub, sub for
            // mosquitto_sub, the same arguments.
            let Some(next) = lines.get(i + 1) else {
                continue;
            };
            let mosquitto = line.iter().any(|c| c[0].starts_with("mosquitto_"));
            let ours = next.iter().any(|c| c[0] == "host-shim");
            if mosquitto && ours {
                assert_eq!(line.len(), next.len(), "README: {next:?} after {line:?}");
                for (theirs, ours) in line.iter().zip(next) {
                    assert!(
                        theirs == ours || twins(theirs, ours),
                        "README: {ours:?} is not the twin of {theirs:?}"
                    );
                }
                side_by_side += 1;
            }
        }
    }
    assert!(
        checked >= 20,
        "only {checked} host-shim lines in the README"
    );
    assert!(side_by_side >= 4, "only {side_by_side} side-by-side pairs");
}
