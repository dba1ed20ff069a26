//! Every problem of a flow file at once, each with the JSON pointer to where
//! it is: the structure, names used before they are opened, payloads, and
//! each embedded configuration as the connector checks it.

use super::{FlowDocument, Step};
use crate::broker_settings::{self, broker_problems, BrokerSettingsError};
use connector::validate::{validate_value, Problem};
use mqtt_broker::BrokerConfig;
use serde_json::{Map, Value as Json};
use std::collections::HashMap;

/// The configuration kinds the connector checks: the connector's own
/// [`Kind`](connector::validate::Kind).
pub use connector::validate::Kind as ConfigKind;

/// The connector's own check of a configuration, run natively: the same
/// code the component runs, without instantiating it.
pub fn config_problems(kind: ConfigKind, config: &Json) -> Vec<Problem> {
    validate_value(kind, config)
}

/// A URL that stands in for the built-in broker's while a flow's connection
/// is checked before the broker runs.
pub(crate) const PLACEHOLDER_URL: &str = "mqtt://127.0.0.1:1883";

/// Every problem of a flow file; none when it can run.
pub fn check(flow: &Json) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(root) = flow.as_object() else {
        return vec![Problem::new("", "a flow is a JSON object with `steps`")];
    };
    for key in root.keys() {
        if !["description", "broker", "connection", "steps"].contains(&key.as_str()) {
            problems.push(Problem::new(
                pointer(&[key]),
                "unknown key; expected description, broker, connection or steps",
            ));
        }
    }
    if let Some(description) = root.get("description") {
        if !description.is_string() {
            problems.push(Problem::new("/description", "must be text"));
        }
    }
    if let Some(broker) = root.get("broker") {
        for problem in broker_problems(broker) {
            problems.push(Problem::new(
                format!("/broker{}", problem.pointer),
                problem.message,
            ));
        }
    }
    let connection = match root.get("connection") {
        None => Map::new(),
        Some(Json::Object(connection)) => {
            let mut filled = connection.clone();
            filled
                .entry("url")
                .or_insert_with(|| Json::from(PLACEHOLDER_URL));
            prefixed(
                &mut problems,
                "/connection",
                config_problems(ConfigKind::Connection, &Json::Object(filled)),
            );
            connection.clone()
        }
        Some(_) => {
            problems.push(Problem::new("/connection", "must be an object"));
            Map::new()
        }
    };
    match root.get("steps") {
        None => problems.push(Problem::new(
            "",
            "missing `steps`, the list of steps to run",
        )),
        Some(Json::Array(steps)) => {
            let mut names = Names::default();
            for (i, step) in steps.iter().enumerate() {
                check_step(&mut problems, &mut names, &connection, i, step);
            }
            if root.get("broker").is_none() && connection.contains_key("url") {
                external_broker_steps(&mut problems, steps);
            }
        }
        Some(_) => problems.push(Problem::new("/steps", "must be a list of steps")),
    }
    problems
}

/// The built-in broker's configuration: the flow's keys (a `profile`
/// first, the others over it), on a free port unless they name one.
pub(crate) fn broker_config(broker: &Json) -> Result<BrokerConfig, BrokerSettingsError> {
    let mut config = broker_settings::broker_config(broker)?;
    if broker.get("port").is_none() {
        config.port = 0;
    }
    Ok(config)
}

/// What each name stands for at a point of the flow.
#[derive(Default)]
struct Names(HashMap<String, &'static str>);

const STEP_KINDS: &str = "send, subscribe, receive, listen, close, drop, sleep_ms or broker";

fn check_step(
    problems: &mut Vec<Problem>,
    names: &mut Names,
    connection: &Map<String, Json>,
    i: usize,
    json: &Json,
) {
    let at = format!("/steps/{i}");
    let kind = match json.as_object() {
        Some(object) if object.len() == 1 => object.keys().next().cloned().unwrap_or_default(),
        _ => {
            problems.push(Problem::new(
                at,
                format!("a step is an object with one key: {STEP_KINDS}"),
            ));
            return;
        }
    };
    let step: Step = match serde_json::from_value(json.clone()) {
        Ok(step) => step,
        Err(e) => {
            let message = e.to_string();
            let message = if message.starts_with(&format!("unknown variant `{kind}`")) {
                format!("unknown step `{kind}`; expected {STEP_KINDS}")
            } else {
                message
            };
            problems.push(Problem::new(format!("{at}/{}", escape(&kind)), message));
            return;
        }
    };
    let at = format!("{at}/{}", escape(&kind));
    match &step {
        Step::Send(send) => {
            let open = send
                .name
                .as_ref()
                .is_some_and(|name| names.0.get(name) == Some(&"sender"));
            if let Some(name) = send
                .name
                .as_ref()
                .filter(|n| names.0.get(*n) == Some(&"listener"))
            {
                problems.push(Problem::new(
                    format!("{at}/name"),
                    format!("`{name}` is a listener"),
                ));
            }
            match &send.config {
                Some(_) if open => problems.push(Problem::new(
                    format!("{at}/config"),
                    "the sender is already open with its configuration; leave this out",
                )),
                Some(config) => {
                    prefixed(
                        problems,
                        &format!("{at}/config"),
                        config_problems(ConfigKind::Send, config),
                    );
                }
                None if !open => problems.push(Problem::new(
                    at.clone(),
                    "missing `config`, the Send configuration",
                )),
                None => {}
            }
            if open && send.connection.is_some() {
                problems.push(Problem::new(
                    format!("{at}/connection"),
                    "the sender is already connected; leave this out",
                ));
            }
            check_connection(problems, &at, connection, send.connection.as_ref());
            for (j, document) in send.documents.iter().enumerate() {
                check_document(problems, &format!("{at}/documents/{j}"), document);
            }
            if let Some(name) = &send.name {
                names.0.insert(name.clone(), "sender");
            }
        }
        Step::Subscribe(subscribe) => {
            if names.0.contains_key(&subscribe.name) {
                problems.push(Problem::new(
                    format!("{at}/name"),
                    format!("`{}` is already open; close it first", subscribe.name),
                ));
            }
            check_connection(problems, &at, connection, subscribe.connection.as_ref());
            prefixed(
                problems,
                &format!("{at}/config"),
                config_problems(ConfigKind::Listen, &subscribe.config),
            );
            if subscribe.expect_error.is_none() {
                names.0.insert(subscribe.name.clone(), "listener");
            }
        }
        Step::Receive(receive) => {
            if names.0.get(&receive.name) != Some(&"listener") {
                problems.push(Problem::new(
                    format!("{at}/name"),
                    format!(
                        "no listener `{}` is open here; open it with a subscribe step",
                        receive.name
                    ),
                ));
            }
        }
        Step::Listen(listen) => {
            check_connection(problems, &at, connection, listen.connection.as_ref());
            prefixed(
                problems,
                &format!("{at}/config"),
                config_problems(ConfigKind::Listen, &listen.config),
            );
        }
        Step::Close(name) | Step::Drop(name) => {
            if names.0.remove(name).is_none() {
                problems.push(Problem::new(
                    at,
                    format!("no sender or listener `{name}` is open here"),
                ));
            }
        }
        Step::SleepMs(_) | Step::Broker(_) => {}
    }
}

/// `broker` steps in a flow whose connection names another broker.
fn external_broker_steps(problems: &mut Vec<Problem>, steps: &[Json]) {
    for (i, step) in steps.iter().enumerate() {
        if step.get("broker").is_some() {
            problems.push(Problem::new(
                format!("/steps/{i}/broker"),
                "`broker` steps act on the built-in broker, and the connection's `url` names \
                 another; leave out `url` to run on the built-in broker",
            ));
        }
    }
}

/// Checks a step's connection settings merged over the flow's; only the
/// problems in the step's own keys are its to report.
fn check_connection(
    problems: &mut Vec<Problem>,
    at: &str,
    flow: &Map<String, Json>,
    step: Option<&Map<String, Json>>,
) {
    let Some(step) = step else { return };
    let merged = merge_connection(flow, Some(step), PLACEHOLDER_URL);
    let own = config_problems(ConfigKind::Connection, &Json::Object(merged))
        .into_iter()
        .filter(|p| {
            let first = p.pointer.split('/').nth(1).unwrap_or("");
            p.pointer.is_empty() || step.contains_key(&unescape(first))
        });
    prefixed(problems, &format!("{at}/connection"), own.collect());
}

/// A step's connection: the flow's settings, the step's over them, and
/// `url` when neither names one.
pub(crate) fn merge_connection(
    flow: &Map<String, Json>,
    step: Option<&Map<String, Json>>,
    url: &str,
) -> Map<String, Json> {
    let mut merged = flow.clone();
    if let Some(step) = step {
        merged.extend(step.clone());
    }
    merged.entry("url").or_insert_with(|| Json::from(url));
    merged
}

fn check_document(problems: &mut Vec<Problem>, at: &str, document: &FlowDocument) {
    if let Err(e) = document.payload_bytes() {
        let key = match e {
            super::PayloadError::Both => "",
            super::PayloadError::Base64(_) => "/payload_base64",
        };
        problems.push(Problem::new(format!("{at}{key}"), e.to_string()));
    }
    for (name, value) in &document.properties {
        if let Err(e) = super::run::property_value(value) {
            problems.push(Problem::new(
                format!("{at}/properties/{}", escape(name)),
                e.to_string(),
            ));
        }
    }
}

fn prefixed(problems: &mut Vec<Problem>, prefix: &str, found: Vec<Problem>) {
    problems.extend(
        found
            .into_iter()
            .map(|p| Problem::new(format!("{prefix}{}", p.pointer), p.message)),
    );
}

fn pointer(tokens: &[&str]) -> String {
    tokens.iter().map(|t| format!("/{}", escape(t))).collect()
}

/// A JSON pointer token: `~` and `/` escaped (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}
