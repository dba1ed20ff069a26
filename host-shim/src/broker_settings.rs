//! The built-in broker's configuration as users write it, in a `--config`
//! file or a flow's `broker` key: every problem at once, each with its JSON
//! pointer, checked against the broker's own schema by the connector's
//! schema walker, so broker settings are reported as the connector's
//! configurations are (unknown keys suggest the closest known one, enums
//! list their values), then against the ranges the broker checks at start.

use connector::validate::{parse_json, schema_problems, Problem};
use mqtt_broker::{broker_schema, BrokerConfig, ConfigError};
use serde_json::Value as Json;
use std::fmt;
use std::sync::OnceLock;

/// Broker settings that are not the built-in broker's configuration: every
/// problem, in pointer order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettingsError {
    /// What is wrong and where, never empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for BrokerSettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}", problem.line())?;
        }
        Ok(())
    }
}

impl std::error::Error for BrokerSettingsError {}

fn schema() -> &'static Json {
    static SCHEMA: OnceLock<Json> = OnceLock::new();
    SCHEMA.get_or_init(broker_schema)
}

/// Every problem of `settings` as a broker configuration; empty when the
/// broker reads it.
pub fn broker_problems(settings: &Json) -> Vec<Problem> {
    match broker_config(settings) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems,
    }
}

/// The broker configuration `settings` describe (a `profile` first, the
/// other keys over it).
///
/// # Errors
///
/// Every problem the schema finds; failing that, what the broker's own
/// reading refuses (a rule the schema cannot say), for the whole document;
/// failing that, the first value out of the range the broker accepts, at
/// its key.
pub fn broker_config(settings: &Json) -> Result<BrokerConfig, BrokerSettingsError> {
    let problems = schema_problems(schema(), settings);
    if !problems.is_empty() {
        return Err(BrokerSettingsError { problems });
    }
    let config: BrokerConfig =
        serde_json::from_value(settings.clone()).map_err(|e| BrokerSettingsError {
            problems: vec![Problem::new("", e.to_string())],
        })?;
    config.check().map_err(|e| BrokerSettingsError {
        problems: vec![range_problem(e)],
    })?;
    Ok(config)
}

/// A value the broker refuses, at the pointer of its key (`tls.port` is
/// `/tls/port`).
fn range_problem(error: ConfigError) -> Problem {
    match error {
        ConfigError::OutOfRange { key, expected } => Problem::new(
            format!("/{}", key.replace('.', "/")),
            format!("must be {expected}"),
        ),
        other => Problem::new("", other.to_string()),
    }
}

/// [`broker_config`] of a JSON text; a text that is not JSON is one problem
/// with its line and column.
///
/// # Errors
///
/// As [`broker_config`].
pub fn broker_config_from_text(text: &str) -> Result<BrokerConfig, BrokerSettingsError> {
    let settings = parse_json(text).map_err(|problem| BrokerSettingsError {
        problems: vec![problem],
    })?;
    broker_config(&settings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(settings: Json) -> Vec<String> {
        broker_problems(&settings)
            .iter()
            .map(|p| p.line().to_string())
            .collect()
    }

    #[test]
    fn every_problem_comes_with_its_pointer_and_a_suggestion() {
        let lines = lines(json!({
            "max_mesages": 5,
            "port": "x",
            "retain": { "storage": "disk" },
        }));
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert!(
            lines[0].starts_with("/max_mesages: ") && lines[0].contains("max_queued_messages"),
            "{lines:?}"
        );
        assert!(lines[1].starts_with("/port: "), "{lines:?}");
        assert_eq!(
            lines[2],
            "/retain/storage: expected \"memory\" or {\"disk\": ...}, found text \"disk\""
        );
    }

    #[test]
    fn a_valid_configuration_has_no_problem_and_reads_as_the_broker_reads_it() {
        let text =
            r#"{"profile": "tagoio", "port": 1999, "retain": {"storage": {"disk": "r.db"}}}"#;
        assert_eq!(
            broker_config_from_text(text).unwrap(),
            BrokerConfig::from_json(text).unwrap()
        );
        assert!(lines(json!({})).is_empty());
    }

    #[test]
    fn values_out_of_range_are_reported_at_their_key() {
        assert_eq!(
            lines(json!({ "faults": { "drop_acks": 1.5 } })),
            ["/faults/drop_acks: must be between 0 and 1, not 1.5"]
        );
        assert_eq!(
            lines(json!({ "faults": { "restart_every_ms": 0 } })),
            ["/faults/restart_every_ms: must be at least 1, got 0"]
        );
        assert_eq!(
            lines(json!({ "maximum_qos": 3 })),
            ["/maximum_qos: must be 0, 1 or 2, not 3"]
        );
        assert!(lines(json!({ "faults": { "seed": 7, "drop_acks": 0.25 } })).is_empty());
    }

    #[test]
    fn text_that_is_not_json_says_where() {
        let err = broker_config_from_text("{\"port\": }").unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
