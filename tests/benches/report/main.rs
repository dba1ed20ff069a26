//! The benchmark report: this project next to Mosquitto and native rumqttc
//! clients, side by side in one run, as a table on standard output, a
//! Markdown file and an SVG chart.
//!
//! ```text
//! cargo bench -p e2e --bench report                   # the whole report
//! cargo bench -p e2e --bench report -- --quick        # smaller sizes, a quick look
//! cargo bench -p e2e --bench report -- --update-docs  # also BENCHMARKS.md and its chart
//! cargo bench -p e2e --bench report -- live --help    # one section, all its options
//! ```
//!
//! Sections, each also a subcommand with options of its own:
//!
//! - `live` ([`live`]): live throughput, built-in broker vs Mosquitto at
//!   its defaults: QoS 0/1/2 one to one, fan-out 1 -> 100, fan-in 100 -> 1.
//! - `ordering` ([`live::ordering`]): "B subscribes, A publishes at once"
//!   rounds on both brokers, idle and under load.
//! - `retained` ([`retained`]): 10k, 100k and 1M retained messages to a new
//!   `a/#` subscriber with a 3.1.1 and a 5.0 client, time and broker
//!   memory, vs Mosquitto holding them all.
//! - `throughput` ([`throughput`]): `send` (`host-shim send --file` vs a
//!   pipelined native publisher) and `listen` (the component vs a native
//!   consumer), QoS 0/1/2, on Mosquitto's defaults and on the built-in
//!   broker.
//! - `oneshot` ([`oneshot`]): one `host-shim send` vs one `mosquitto_pub`.
//! - `startup` ([`startup`]): compile, load and instantiate the component.
//!
//! Apart from the report, `faults` ([`faults`]) runs the fault matrix at
//! 100,000 documents a stream and prints what was lost and duplicated
//! (`--update-docs` writes its table into BENCHMARKS.md too).
//!
//! The report needs Mosquitto and its clients (`apt-get install -y
//! mosquitto mosquitto-clients`) and builds the release `host-shim`
//! binary itself for the sections that run it.

mod chart;
mod faults;
mod figures;
mod live;
mod machine;
mod oneshot;
mod retained;
mod startup;
mod throughput;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use figures::Figure;
use std::path::{Path, PathBuf};

/// This project next to Mosquitto and native clients, in one run.
#[derive(Parser)]
#[command(bin_name = "cargo bench -p e2e --bench report --")]
struct Cli {
    #[command(subcommand)]
    section: Option<Section>,
    #[command(flatten)]
    report: ReportOptions,
    /// Passed by `cargo bench` to every bench target
    #[arg(long, hide = true, global = true)]
    bench: bool,
}

/// One section alone, with all its options.
#[derive(Subcommand)]
enum Section {
    /// Live throughput: built-in broker vs Mosquitto (defaults)
    Live(live::Options),
    /// Cross-connection ordering rounds on both brokers
    Ordering(live::OrderingOptions),
    /// Retained fan-out: built-in broker vs Mosquitto
    Retained(retained::Options),
    /// Send and Listen: the component vs native rumqttc on one broker
    Throughput(throughput::Options),
    /// One-shot `host-shim send` vs `mosquitto_pub`
    Oneshot(oneshot::Options),
    /// Component compile, load and instantiate times
    Startup(startup::Options),
    /// The fault matrix: lost and duplicated documents under each fault
    Faults(faults::Options),
}

#[derive(Args)]
struct ReportOptions {
    /// Smaller sizes and fewer rounds: a quick look, not figures to publish
    #[arg(long)]
    quick: bool,
    /// Directory for report.md and report.svg (relative to the workspace)
    #[arg(long, default_value = "target/bench-report")]
    out: PathBuf,
    /// Also write the table into BENCHMARKS.md and the chart to
    /// docs/benchmarks.svg
    #[arg(long)]
    update_docs: bool,
}

/// The workspace's root directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release `host-shim` binary: `$HOST_SHIM_BIN`, else the release
/// build in Cargo's target directory, brought up to date once per run.
pub fn host_shim_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HOST_SHIM_BIN") {
        return path.into();
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = std::process::Command::new(cargo);
        // Cargo sets these for the running bench; a build script that
        // watches one (ring's watches CARGO_MANIFEST_DIR) would otherwise
        // rebuild its crate and all that depends on it, on every run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("CARGO_MANIFEST_")
                || name.starts_with("CARGO_PKG_")
                || name == "CARGO_CRATE_NAME"
                || name == "CARGO_PRIMARY_PACKAGE"
            {
                command.env_remove(name.as_ref());
            }
        }
        let built = command
            .args([
                "build",
                "--release",
                "-p",
                "host-shim",
                "--bin",
                "host-shim",
            ])
            .current_dir(workspace())
            .status();
        if !matches!(built, Ok(status) if status.success()) {
            eprintln!("warning: `cargo build --release -p host-shim` failed; using what is there");
        }
    });
    target_dir().join("release/host-shim")
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, else the workspace's.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Parses a section's options from `args`, its defaults filling the rest.
fn options<T: Args>(args: &[&str]) -> Result<T> {
    #[derive(Parser)]
    struct Wrapper<T: Args> {
        #[command(flatten)]
        inner: T,
    }
    let parsed =
        Wrapper::<T>::try_parse_from(std::iter::once("report").chain(args.iter().copied()))
            .with_context(|| format!("the report's own options {args:?}"))?;
    Ok(parsed.inner)
}

/// Every section at the report's sizes.
async fn whole_report(quick: bool) -> Result<Vec<Figure>> {
    let pick = |full: &'static [&'static str], small: &'static [&'static str]| {
        if quick {
            small
        } else {
            full
        }
    };
    let mut figures = Vec::new();
    eprintln!("== live throughput");
    let live: live::Options = options(pick(&[], &["--count", "20000", "--rounds", "1"]))?;
    figures.extend(live::run(&live).await?);
    eprintln!("== ordering");
    let ordering: live::OrderingOptions = options(pick(&[], &["--rounds", "100"]))?;
    figures.extend(live::ordering(&ordering).await?);
    eprintln!("== retained fan-out");
    let retained: retained::Options = options(pick(
        &[],
        &["--counts", "10000,100000", "--rounds", "1", "--qos0", "0"],
    ))?;
    figures.extend(retained::run(&retained).await?);
    for broker in ["mosquitto", "builtin"] {
        for (ops, paths) in [("send", "cli,pipelined"), ("listen", "component,native")] {
            eprintln!("== {ops} on {broker}");
            let count = if quick { "20000" } else { "200000" };
            let rounds = if quick { "1" } else { "3" };
            let args = [
                "--broker",
                broker,
                "--ops",
                ops,
                "--paths",
                paths,
                "--count",
                count,
                "--rounds",
                rounds,
                "--payload",
                "64",
            ];
            let throughput: throughput::Options = options(&args)?;
            figures.extend(throughput::run(&throughput).await?);
        }
    }
    eprintln!("== one-shot send");
    let oneshot: oneshot::Options = options(pick(&[], &["--runs", "5"]))?;
    figures.extend(oneshot::run(&oneshot).await?);
    eprintln!("== component start-up");
    let startup: startup::Options = options(pick(&[], &["--rounds", "1"]))?;
    figures.extend(startup::run(&startup).await?);
    Ok(figures)
}

/// Markers around the generated part of BENCHMARKS.md.
const BEGIN: &str = "<!-- report:begin -->";
const END: &str = "<!-- report:end -->";
/// Markers around the fault matrix's table in BENCHMARKS.md.
const FAULTS_BEGIN: &str = "<!-- faults:begin -->";
const FAULTS_END: &str = "<!-- faults:end -->";

/// Replaces what BENCHMARKS.md has between `begin` and `end` with `body`.
fn update_benchmarks(begin: &str, end: &str, body: &str) -> Result<()> {
    let docs = workspace().join("BENCHMARKS.md");
    let text =
        std::fs::read_to_string(&docs).with_context(|| format!("reading {}", docs.display()))?;
    let (Some(from), Some(to)) = (text.find(begin), text.find(end)) else {
        bail!("{} has no {begin} ... {end} markers", docs.display());
    };
    let updated = format!("{}{begin}\n{body}{}", &text[..from], &text[to..]);
    std::fs::write(&docs, updated)?;
    println!("updated: {}", docs.display());
    Ok(())
}

/// Writes report.md and report.svg to `options.out`, and into the docs
/// when asked.
fn write_report(
    options: &ReportOptions,
    command: &str,
    machine: &str,
    figures: &[Figure],
) -> Result<()> {
    let out = workspace().join(&options.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let body = |chart: &str| {
        format!(
            "Measured with `{command}` on:\n\n{machine}\n{}\n![The figures relative to their references]({chart})\n",
            figures::markdown(figures)
        )
    };
    std::fs::write(out.join("report.md"), body("report.svg"))?;
    chart::write_svg(figures, &out.join("report.svg"))?;
    println!(
        "\nwritten: {} and report.svg",
        out.join("report.md").display()
    );
    if options.update_docs {
        update_benchmarks(BEGIN, END, &body("docs/benchmarks.svg"))?;
        std::fs::create_dir_all(workspace().join("docs"))?;
        std::fs::copy(
            out.join("report.svg"),
            workspace().join("docs/benchmarks.svg"),
        )?;
        println!("updated: BENCHMARKS.md and docs/benchmarks.svg");
    }
    Ok(())
}

fn main() -> Result<()> {
    e2e::serve_builtin_if_asked();
    let cli = Cli::parse();
    if !e2e::BrokerProcess::mosquitto_installed() {
        bail!(
            "{} is not installed (apt-get install -y mosquitto mosquitto-clients)",
            e2e::MOSQUITTO
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let machine = machine::describe();
    if let Some(Section::Faults(o)) = &cli.section {
        let table = runtime.block_on(faults::run(o))?;
        println!("\n{table}");
        if cli.report.update_docs {
            let args: Vec<String> = std::env::args()
                .skip(1)
                .filter(|a| a != "--bench" && a != "--update-docs")
                .collect();
            let command = format!("cargo bench -p e2e --bench report -- {}", args.join(" "));
            update_benchmarks(
                FAULTS_BEGIN,
                FAULTS_END,
                &format!("Measured with `{command}` on:\n\n{machine}\n{table}"),
            )?;
        }
        return Ok(());
    }
    let figures = runtime.block_on(async {
        match &cli.section {
            None => whole_report(cli.report.quick).await,
            Some(Section::Live(o)) => live::run(o).await,
            Some(Section::Ordering(o)) => live::ordering(o).await,
            Some(Section::Retained(o)) => {
                o.check()?;
                retained::run(o).await
            }
            Some(Section::Throughput(o)) => throughput::run(o).await,
            Some(Section::Oneshot(o)) => oneshot::run(o).await,
            Some(Section::Startup(o)) => startup::run(o).await,
            // Handled above: its table is not a figure.
            Some(Section::Faults(_)) => Ok(Vec::new()),
        }
    })?;
    println!("\n{}", figures::markdown(&figures));
    let mut command = String::from("cargo bench -p e2e --bench report");
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if !args.is_empty() {
        command = format!("{command} -- {}", args.join(" "));
    }
    write_report(&cli.report, &command, &machine, &figures)
}
