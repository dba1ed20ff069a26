//! The log filter: `RUST_LOG` as written, or `-d` for debug, with the
//! WebAssembly engine's crates kept at `warn` unless `RUST_LOG` names them:
//! at debug they print tens of thousands of lines about compiling the
//! connector and hide what the connector, the host and the broker do.

use tracing_subscriber::EnvFilter;

/// The engine's crates, by target prefix; quiet unless named.
const ENGINE_TARGETS: &[&str] = &["wasmtime", "cranelift", "regalloc2", "wasmparser", "wit_"];

/// The level when neither `RUST_LOG` nor `-d` says otherwise.
const DEFAULT: &str = "warn";

/// The directives: `RUST_LOG` (after `debug` with `-d`), else `debug` with
/// `-d`, else `warn`; then `warn` for each engine crate `RUST_LOG` does not
/// name.
pub fn directives(rust_log: Option<&str>, debug: bool) -> String {
    let rust_log = rust_log.map(str::trim).filter(|s| !s.is_empty());
    let mut directives = match (rust_log, debug) {
        (Some(log), true) => format!("debug,{log}"),
        (Some(log), false) => log.to_owned(),
        (None, true) => "debug".to_owned(),
        (None, false) => DEFAULT.to_owned(),
    };
    for target in ENGINE_TARGETS {
        if !rust_log.is_some_and(|log| log.contains(target)) {
            directives.push_str(&format!(",{target}=warn"));
        }
    }
    directives
}

/// The filter for the log on stderr; a `RUST_LOG` that does not parse
/// counts as absent, as it always has.
pub fn filter(rust_log: Option<&str>, debug: bool) -> EnvFilter {
    EnvFilter::try_new(directives(rust_log, debug))
        .unwrap_or_else(|_| EnvFilter::new(directives(None, debug)))
}

#[cfg(test)]
mod tests {
    use super::directives;

    #[test]
    fn the_engine_stays_at_warn_unless_named() {
        assert_eq!(
            directives(None, false),
            "warn,wasmtime=warn,cranelift=warn,regalloc2=warn,wasmparser=warn,wit_=warn"
        );
        assert!(directives(None, true).starts_with("debug,wasmtime=warn,"));
        let named = directives(Some("debug,cranelift_codegen=trace"), false);
        assert!(named.starts_with("debug,cranelift_codegen=trace,wasmtime=warn"));
        assert!(!named.contains("cranelift=warn"), "{named}");
        assert!(directives(Some("info"), true).starts_with("debug,info,"));
    }
}
