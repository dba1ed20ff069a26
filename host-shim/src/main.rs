//! The `host-shim` command line.
fn main() {}
