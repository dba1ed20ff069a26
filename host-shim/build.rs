//! Builds the connector component for `wasm32-wasip2` so `cargo build`,
//! `cargo test` and `cargo run` always embed a component made from the
//! sources next to them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let workspace = manifest_dir
        .parent()
        .expect("host-shim sits in the workspace");
    let connector = workspace.join("connector");
    // The component is the connector crate plus the topic rules it embeds.
    for path in ["src", "wit", "Cargo.toml", "topic/src", "topic/Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", connector.join(path).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    ensure_target_installed();

    // Its own target dir: sharing the outer one deadlocks on the artifact
    // lock when the outer build is `--release`.
    let target_root = env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let target_dir = target_root.join("connector-wasm");

    let mut build = Command::new(&cargo);
    build
        .current_dir(workspace)
        .args([
            "build",
            "-p",
            "connector",
            "--lib",
            "--release",
            "--target",
            TARGET,
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        // Flags meant for the host (coverage, clippy's wrapper) must not
        // reach the guest build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env("CARGO_BUILD_BUILD_DIR", target_dir.join("build"));
    let status = build
        .status()
        .expect("cannot run cargo to build the connector component");
    if !status.success() {
        panic!("building the connector component for {TARGET} failed (see the errors above)");
    }

    let wasm = target_dir
        .join(TARGET)
        .join("release")
        .join("connector.wasm");
    if !wasm.exists() {
        panic!("the connector build did not produce {}", wasm.display());
    }
    println!("cargo:rustc-env=CONNECTOR_WASM={}", wasm.display());
}

/// Installs the WebAssembly target with rustup when it is missing, as
/// cargo-component does, so the README's first command works on a fresh
/// machine; fails with the command to run only where rustup is absent or the
/// install fails, rather than with a page of "can't find crate for `core`".
fn ensure_target_installed() {
    if target_installed() {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with `rustup target add {TARGET}` (once)"
    );
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|status| status.success());
    if !added || !target_installed() {
        panic!(
            "the {TARGET} target is not installed and rustup could not add it: \
             run `rustup target add {TARGET}` (or install the target with your toolchain's tools)"
        );
    }
}

fn target_installed() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let output = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output();
    output
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| has_core_rlib(&dir))
}

/// `--print target-libdir` names the directory even when the target is not
/// installed, so look for the core library in it.
fn has_core_rlib(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with("libcore-"))
    })
}
