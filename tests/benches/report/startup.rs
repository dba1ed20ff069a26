//! The component's start-up costs in the host: compiling it to machine
//! code, loading that code from the cache instead, and instantiating it
//! for a first call.
//!
//! ```text
//! cargo bench -p e2e --bench report -- startup --rounds 5
//! ```
//!
//! Each round writes the embedded component to a file and loads it with
//! `Runtime::from_file_cached` into an empty cache (it compiles), again
//! (it reads the cache), then times the first `describe` call, which
//! instantiates the component.

use crate::figures::{median, Figure, Measure};
use anyhow::{bail, Result};
use host_shim::host::{CodeCache, CodeOrigin, Limits, Runtime, EMBEDDED_COMPONENT};
use std::time::Instant;

/// Component compile, load and instantiate times.
#[derive(clap::Args, Clone)]
pub struct Options {
    /// Rounds; the median is shown
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
}

/// Runs the rounds; prints the times and returns the figures.
pub async fn run(options: &Options) -> Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("bench-startup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let wasm = dir.join("connector.wasm");
    std::fs::write(&wasm, EMBEDDED_COMPONENT)?;
    let (mut compile, mut load, mut instantiate) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..options.rounds {
        let cache = CodeCache::new(dir.join(format!("cache-{round}")));
        let started = Instant::now();
        let compiled = Runtime::from_file_cached(&wasm, Limits::default(), Some(&cache))?;
        compile.push(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let loaded = Runtime::from_file_cached(&wasm, Limits::default(), Some(&cache))?;
        load.push(started.elapsed().as_secs_f64() * 1e3);
        if compiled.code_origin() != CodeOrigin::Compiled
            || loaded.code_origin() != CodeOrigin::Cache
        {
            bail!(
                "the code cache in {} did not behave as expected",
                cache.dir().display()
            );
        }
        let started = Instant::now();
        loaded.describe().await?;
        instantiate.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (compile, load, instantiate) = (median(&compile), median(&load), median(&instantiate));
    println!(
        "component start-up, median of {}: compile {compile:.0} ms, load from cache {load:.1} ms, instantiate + first call {instantiate:.1} ms ({} KiB of WebAssembly)",
        options.rounds,
        EMBEDDED_COMPONENT.len() / 1024
    );
    Ok(vec![
        Figure::alone(
            "start-up",
            "compile the component",
            Measure::Millis(compile),
        ),
        Figure::alone(
            "start-up",
            "load its compiled code from the cache",
            Measure::Millis(load),
        ),
        Figure::alone(
            "start-up",
            "instantiate it and make a first call",
            Measure::Millis(instantiate),
        ),
    ])
}
