//! The checked-in schemas (`schemas/*.schema.json`) are exactly what the
//! Rust types generate, and every example flow validates against them with
//! an independent JSON Schema validator (`jsonschema`), so a form a UI
//! renders from the files accepts what the shim runs.
//!
//! After changing a configuration type, regenerate the files with
//! `UPDATE_SCHEMAS=1 cargo test -p host-shim --test schemas`.

use serde_json::Value as Json;
use std::path::{Path, PathBuf};

/// Every schema file and the function that generates it, the same ones
/// `host-shim schema KIND` prints.
fn generated() -> [(&'static str, Json); 5] {
    [
        ("connection", connector::schema::connection_schema()),
        ("send", connector::schema::send_schema()),
        ("listen", connector::schema::listen_schema()),
        ("flow", host_shim::flow::schema()),
        ("broker", mqtt_broker::broker_schema()),
    ]
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host-shim is inside the workspace")
        .to_path_buf()
}

fn schema_path(kind: &str) -> PathBuf {
    workspace()
        .join("schemas")
        .join(format!("{kind}.schema.json"))
}

/// What `host-shim schema KIND` prints: pretty JSON and a newline.
fn render(schema: &Json) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[test]
fn checked_in_schemas_match_the_rust_types() {
    let update = std::env::var_os("UPDATE_SCHEMAS").is_some_and(|v| !v.is_empty());
    let mut stale = Vec::new();
    for (kind, schema) in generated() {
        let path = schema_path(kind);
        let expected = render(&schema);
        if update {
            std::fs::write(&path, &expected)
                .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            continue;
        }
        let found = std::fs::read_to_string(&path).unwrap_or_default();
        if found != expected {
            stale.push(format!(
                "  schemas/{kind}.schema.json: cargo run -p host-shim -- schema {kind} \
                 > schemas/{kind}.schema.json"
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "schemas out of date with the Rust types; regenerate them all with \
         `UPDATE_SCHEMAS=1 cargo test -p host-shim --test schemas`, or one by one:\n{}",
        stale.join("\n")
    );
}

/// A validator for the checked-in file of `kind`.
fn validator(kind: &str) -> jsonschema::Validator {
    let path = schema_path(kind);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let schema: Json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{} is not a valid JSON Schema: {e}", path.display()))
}

/// Every problem the validator finds in `instance`, one line each, with
/// the JSON pointer of where it is.
fn errors(validator: &jsonschema::Validator, instance: &Json) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("  {}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn every_example_flow_validates_against_the_flow_schema() {
    let flow = validator("flow");
    let broker = validator("broker");
    let dir = workspace().join("examples");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples in {}", dir.display());

    let mut failures = Vec::new();
    for path in &paths {
        let name = path.strip_prefix(workspace()).unwrap_or(path).display();
        let text = std::fs::read_to_string(path).expect("an example reads");
        let instance: Json = match serde_json::from_str(&text) {
            Ok(json) => json,
            Err(e) => {
                failures.push(format!("{name}: not JSON: {e}"));
                continue;
            }
        };
        let mut found = errors(&flow, &instance);
        // The flow schema embeds the broker's; checking the section against
        // the broker file too keeps the two files in step.
        if let Some(section) = instance.get("broker") {
            found.extend(
                errors(&broker, section)
                    .into_iter()
                    .map(|e| format!("  /broker{}", e.trim_start())),
            );
        }
        if !found.is_empty() {
            failures.push(format!("{name}:\n{}", found.join("\n")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_validator_catches_a_bad_flow() {
    // Guards the test above against a schema (or a validator) that accepts
    // anything.
    let flow = validator("flow");
    let bad: Json = serde_json::json!({
        "steps": [{ "send": { "config": { "topic": 7 }, "documents": "x" } }],
        "colour": "blue"
    });
    assert!(!errors(&flow, &bad).is_empty());
    let broker = validator("broker");
    assert!(!errors(&broker, &serde_json::json!({ "port": "high" })).is_empty());
    assert!(errors(&broker, &serde_json::json!({ "port": 1883 })).is_empty());
}
