//! Invalid configurations: opening an operation fails with `invalid-config`
//! and a message naming every JSON pointer, and `validate` lists every
//! problem with its pointer.

use crate::common::*;
use host_shim::host::{ErrorCode, OperationError, OperationKind, Problem};
use serde_json::json;

/// The error of an open that must fail for its configuration.
fn config_error<T>(opened: Result<T, OperationError>) -> host_shim::host::Error {
    match opened {
        Ok(_) => panic!("an invalid configuration must not open"),
        Err(OperationError::Connector(e)) => {
            assert_eq!(e.code, ErrorCode::InvalidConfig, "{e:?}");
            assert_eq!(e.document_index, None);
            e
        }
        Err(OperationError::Trap(t)) => panic!("a configuration error is not a trap: {t}"),
    }
}

fn assert_names(message: &str, pointers: &[&str]) {
    for pointer in pointers {
        assert!(
            message.contains(&format!("{pointer}:")),
            "the message should name {pointer}: {message}"
        );
    }
}

/// `open_sender` and `open_listener` refuse bad Send, Listen and connection
/// configurations with one `invalid-config` error naming each problem's
/// JSON pointer, before anything is published or subscribed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_reports_invalid_config_with_pointers() -> anyhow::Result<()> {
    let target = Target::start(BrokerKind::Builtin, Version::V5).await?;
    let rt = runtime();
    let connection = target.connection();

    // Send: a wildcard topic and a QoS that does not exist.
    let e = config_error(
        within(
            "open_sender",
            rt.open_sender(&connection, r#"{"topic": "a/#/b", "qos": 3}"#),
        )
        .await?,
    );
    assert_names(&e.message, &["/topic", "/qos"]);

    // Listen: a bad filter in the first subscription, a bad QoS in the
    // second, an unknown policy.
    let e = config_error(
        within(
            "open_listener",
            rt.open_listener(
                &connection,
                r#"{"subscriptions": [{"filter": "a/#/b"}, {"filter": "ok", "qos": 5}], "retained": "sometimes"}"#,
            ),
        )
        .await?,
    );
    assert_names(
        &e.message,
        &[
            "/subscriptions/0/filter",
            "/subscriptions/1/qos",
            "/retained",
        ],
    );

    // Listen: no subscription at all.
    let e = config_error(
        within(
            "open_listener",
            rt.open_listener(&connection, r#"{"subscriptions": []}"#),
        )
        .await?,
    );
    assert_names(&e.message, &["/subscriptions"]);

    // Connection: a URL that is not MQTT, and an unknown field.
    let e = config_error(
        within(
            "open_sender",
            rt.open_sender(
                r#"{"url": "http://127.0.0.1:1", "keep_alive": 5}"#,
                r#"{"topic": "a"}"#,
            ),
        )
        .await?,
    );
    assert_names(&e.message, &["/url", "/keep_alive"]);

    // Not JSON at all: the whole document is the problem.
    let e = config_error(within("open_sender", rt.open_sender(&connection, "{topic: a}")).await?);
    assert!(e.message.contains("JSON"), "{}", e.message);
    Ok(())
}

fn pointers(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.pointer.as_str()).collect()
}

/// `Runtime::validate` returns every problem at once, each with its JSON
/// pointer and a message, for each configuration kind; a valid one has
/// none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_lists_every_problem_with_its_pointer() -> anyhow::Result<()> {
    let rt = runtime();
    let validate = |kind, config: serde_json::Value| {
        let rt = rt.clone();
        async move {
            let problems = within("validate", rt.validate(kind, &config.to_string()))
                .await?
                .map_err(|e| anyhow::anyhow!("validate trapped: {e}"))?;
            // Each problem explains itself, not just where it is.
            for problem in &problems {
                anyhow::ensure!(problem.message.len() > 10, "{problem:?}");
            }
            anyhow::Ok(problems)
        }
    };

    let problems = validate(
        Some(OperationKind::Send),
        json!({"topic": "a/+", "qos": 7, "retained": "yes", "action": "erase"}),
    )
    .await?;
    assert_eq!(
        pointers(&problems),
        ["/action", "/qos", "/retained", "/topic"],
        "{problems:?}"
    );

    let problems = validate(
        Some(OperationKind::Listen),
        json!({
            "subscriptions": [
                {"filter": "ok/#"},
                {"filter": "bad#"},
                {"filter": "x", "qos": -1, "retain_handling": 3},
            ],
            "max_batch": 0,
        }),
    )
    .await?;
    assert_eq!(
        pointers(&problems),
        [
            "/max_batch",
            "/subscriptions/1/filter",
            "/subscriptions/2/qos",
            "/subscriptions/2/retain_handling"
        ],
        "{problems:?}"
    );

    let problems = validate(
        None,
        json!({"url": "mqtt://", "mqtt_version": "4", "clientid": "x"}),
    )
    .await?;
    assert_eq!(
        pointers(&problems),
        ["/clientid", "/mqtt_version", "/url"],
        "{problems:?}"
    );

    // A missing required field is reported where it belongs.
    let problems = validate(Some(OperationKind::Send), json!({"qos": 1})).await?;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("topic"), "{problems:?}");

    // Valid configurations have no problems.
    assert_eq!(
        validate(Some(OperationKind::Send), json!({"topic": "a/b"})).await?,
        []
    );
    assert_eq!(
        validate(
            Some(OperationKind::Listen),
            json!({"subscriptions": [{"filter": "a/+/c"}]})
        )
        .await?,
        []
    );
    assert_eq!(
        validate(None, json!({"url": "mqtt://127.0.0.1:1883"})).await?,
        []
    );
    Ok(())
}
