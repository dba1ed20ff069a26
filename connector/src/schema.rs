//! JSON Schemas (draft 2020-12) of the configurations, generated from the
//! types of [`crate::config`].
//!
//! The output has a `title`, descriptions from the doc comments, defaults,
//! and no `$id`, so it is the same on every run and machine: the host writes
//! it to `schemas/*.schema.json` and tests that it stays equal. The same
//! schemas drive the structural checks of [`crate::validate`].

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::Value;

use crate::config::{ConnectionConfig, ListenConfig, SendConfig};

fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    // An `$id` would tie the schema to a location; keep the output stable.
    if let Some(object) = schema.as_object_mut() {
        object.remove("$id");
    }
    unwrap_descriptions(&mut schema);
    schema
}

/// Doc comments are wrapped at 80 columns; a form shows a description as
/// flowing text, so single line breaks become spaces (blank lines, which
/// separate paragraphs, stay).
fn unwrap_descriptions(value: &mut Value) {
    match value {
        Value::Object(object) => {
            for (key, child) in object.iter_mut() {
                match child {
                    Value::String(text) if key == "description" => {
                        let paragraphs: Vec<String> = text
                            .split("\n\n")
                            .map(|p| p.split('\n').map(str::trim).collect::<Vec<_>>().join(" "))
                            .collect();
                        *text = paragraphs.join("\n\n");
                    }
                    _ => unwrap_descriptions(child),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// The JSON Schema of the connection configuration.
pub fn connection_schema() -> Value {
    schema_of::<ConnectionConfig>()
}

/// The JSON Schema of the Send operation's configuration.
pub fn send_schema() -> Value {
    schema_of::<SendConfig>()
}

/// The JSON Schema of the Listen operation's configuration.
pub fn listen_schema() -> Value {
    schema_of::<ListenConfig>()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every object property of every schema has a description, so forms
    /// can show help for each field.
    fn assert_described(schema: &Value, path: &str) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, prop) in props {
                assert!(
                    prop.get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|d| !d.is_empty()),
                    "{path}/{name} has no description"
                );
            }
        }
        if let Some(defs) = schema.get("$defs").and_then(Value::as_object) {
            for (name, def) in defs {
                assert_described(def, &format!("{path}/$defs/{name}"));
            }
        }
    }

    #[test]
    fn schemas_are_deterministic_titled_and_described() {
        for (make, title) in [
            (connection_schema as fn() -> Value, "MQTT connection"),
            (send_schema, "MQTT Send operation"),
            (listen_schema, "MQTT Listen operation"),
        ] {
            let a = serde_json::to_string_pretty(&make()).unwrap();
            let b = serde_json::to_string_pretty(&make()).unwrap();
            assert_eq!(a, b);
            let schema = make();
            assert_eq!(schema["title"], title);
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema"
            );
            assert!(schema.get("$id").is_none());
            assert!(schema["description"].is_string());
            assert_eq!(schema["additionalProperties"], false);
            assert_described(&schema, title);
            assert!(!a.contains("\\n"), "descriptions are unwrapped");
        }
    }

    #[test]
    fn schemas_state_defaults_and_required_fields() {
        let c = connection_schema();
        assert_eq!(c["required"], serde_json::json!(["url"]));
        assert_eq!(c["properties"]["mqtt_version"]["default"], "5");
        assert_eq!(c["properties"]["keep_alive_secs"]["default"], 60);
        assert_eq!(c["properties"]["inflight_window"]["default"], 20);
        assert_eq!(c["properties"]["inflight_window"]["minimum"], 1);
        let s = send_schema();
        assert_eq!(s["required"], serde_json::json!(["topic"]));
        assert_eq!(s["properties"]["qos"]["default"], 1);
        assert_eq!(s["properties"]["qos"]["enum"], serde_json::json!([0, 1, 2]));
        assert_eq!(s["properties"]["action"]["default"], "publish");
        let l = listen_schema();
        assert_eq!(l["properties"]["subscriptions"]["minItems"], 1);
        assert_eq!(l["properties"]["quiet_ms"]["default"], 1000);
    }
}
