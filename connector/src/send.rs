//! The Send operation's logic, without I/O: from documents to the messages
//! to publish, and from the host's publish outcomes to one result per
//! document.
//!
//! 1. [`plan`] checks every document first and resolves its topic, QoS,
//!    retain flag and MQTT 5.0 properties: from the configuration, or from
//!    the document's properties ([`crate::document::names`]) where
//!    `overrides` allows. A bad document gets its error here and is not
//!    published; the others go on.
//! 2. The caller publishes [`SendPlan::batch`] in one host call.
//! 3. [`merge`] puts the pre-filled errors and the publish outcomes back in
//!    document order, each error carrying its document index.
//!
//! Document properties outside the override set (such as `mqtt.duplicate`
//! and `mqtt.subscription-ids`, which Listen sets) are ignored, so a
//! Listen's documents can be sent on as they are.

use crate::config::{RetainUnsupported, SendAction, SendConfig};
use crate::document::{names, Document, Value};
use crate::model::{
    publish_packet_size, Capabilities, Error, ErrorCode, MessageProperties, MqttVersion, Outgoing,
    QoS, TopicName,
};
use mqtt_topic as topic;

/// Longest MQTT string or binary field, in bytes (16-bit length prefix).
const MAX_FIELD_LEN: usize = 65_535;

/// The outcome of planning a batch: what to publish, and what already
/// failed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SendPlan {
    /// The messages to publish, in document order; hand them to the host's
    /// `publish` in one call (take them with `std::mem::take` to avoid a
    /// copy).
    pub batch: Vec<Outgoing>,
    /// For each message of `batch`, the index of its document.
    pub indexes: Vec<usize>,
    /// One entry per document: the error that failed it before publishing,
    /// or `None` when it is in `batch`.
    pub results: Vec<Option<Error>>,
    /// Warnings to log, each starting with "document N: ".
    pub warnings: Vec<String>,
}

/// Plans the publication of `docs` with `config` on a broker with `caps`.
///
/// `caps` should come from
/// [`ConnectionConfig::effective_capabilities`](crate::config::ConnectionConfig::effective_capabilities),
/// so that a connection declaring `retain_supported: false` is honoured.
/// Payloads are copied; [`plan_owned`] moves them instead.
pub fn plan(config: &SendConfig, caps: &Capabilities, docs: &[Document]) -> SendPlan {
    let mut plan = SendPlan::default();
    for (index, doc) in docs.iter().enumerate() {
        let resolved = resolve(config, caps, doc, index, &mut plan.warnings);
        push(&mut plan, index, resolved, || doc.payload.clone());
    }
    plan
}

/// [`plan`] for documents the caller owns: payloads move into the batch.
pub fn plan_owned(config: &SendConfig, caps: &Capabilities, docs: Vec<Document>) -> SendPlan {
    let mut plan = SendPlan::default();
    for (index, doc) in docs.into_iter().enumerate() {
        let resolved = resolve(config, caps, &doc, index, &mut plan.warnings);
        push(&mut plan, index, resolved, || doc.payload);
    }
    plan
}

fn push(
    plan: &mut SendPlan,
    index: usize,
    resolved: Result<Resolved, Error>,
    payload: impl FnOnce() -> Vec<u8>,
) {
    match resolved {
        Ok(r) => {
            plan.batch.push(Outgoing {
                topic: r.topic,
                payload: if r.clear { Vec::new() } else { payload() },
                qos: r.qos,
                retain: r.retain,
                properties: r.properties,
            });
            plan.indexes.push(index);
            plan.results.push(None);
        }
        Err(e) => plan.results.push(Some(e.for_document(index))),
    }
}

/// One result per document, in input order: the planning error, or the
/// outcome of its publication. `outcomes` are the host's, one per message
/// of the plan's batch, in order; a missing outcome is an internal error.
/// Every error carries its document index.
pub fn merge(plan: SendPlan, outcomes: Vec<Result<(), Error>>) -> Vec<Result<(), Error>> {
    let SendPlan {
        indexes, results, ..
    } = plan;
    let mut published: Vec<Option<Result<(), Error>>> = vec![None; results.len()];
    let mut outcomes = outcomes.into_iter();
    for index in indexes {
        let outcome = outcomes.next().unwrap_or_else(|| {
            Err(Error::new(
                ErrorCode::Internal,
                "the host returned no publish outcome for this document",
            ))
        });
        if let Some(slot) = published.get_mut(index) {
            *slot = Some(outcome);
        }
    }
    results
        .into_iter()
        .zip(published)
        .enumerate()
        .map(|(index, (planned, outcome))| {
            let result = match planned {
                Some(error) => Err(error),
                None => outcome.unwrap_or_else(|| {
                    Err(Error::new(
                        ErrorCode::Internal,
                        "this document was neither published nor failed",
                    ))
                }),
            };
            result.map_err(|e| e.for_document(index))
        })
        .collect()
}

/// What one valid document becomes (its payload is attached by the caller).
struct Resolved {
    topic: TopicName,
    qos: QoS,
    retain: bool,
    clear: bool,
    properties: MessageProperties,
}

/// Collects the problems of one document; the first decides the code.
#[derive(Default)]
struct Problems(Vec<(ErrorCode, String)>);

impl Problems {
    fn invalid(&mut self, message: impl Into<String>) {
        self.0.push((ErrorCode::InvalidDocument, message.into()));
    }

    fn unsupported(&mut self, message: impl Into<String>) {
        self.0.push((ErrorCode::Unsupported, message.into()));
    }

    fn wrong_type(&mut self, name: &str, expected: &str, found: &Value) {
        self.invalid(format!(
            "property \"{name}\" must be {expected}, found {}",
            found.kind()
        ));
    }

    fn into_error(self) -> Option<Error> {
        let code = self.0.first()?.0;
        let messages: Vec<String> = self.0.into_iter().map(|(_, m)| m).collect();
        Some(Error::new(code, messages.join("; ")))
    }
}

/// A document property to use as an override: `None` when absent or when
/// the configuration does not let documents override it. Ignoring rather
/// than failing keeps a Listen -> Send bridge working: received documents
/// always carry `mqtt.topic`, `mqtt.qos` and `mqtt.retained`.
fn allowed<'d>(doc: &'d Document, name: &str, allowed: bool) -> Option<&'d Value> {
    if allowed {
        doc.property(name)
    } else {
        None
    }
}

fn resolve(
    config: &SendConfig,
    caps: &Capabilities,
    doc: &Document,
    index: usize,
    warnings: &mut Vec<String>,
) -> Result<Resolved, Error> {
    let mut problems = Problems::default();
    let o = &config.overrides;
    let clear = config.action == SendAction::Clear;

    // The configuration's topic was parsed with the configuration; a
    // document's is parsed here, once.
    let topic = match allowed(doc, names::TOPIC, o.topic) {
        Some(Value::Text(t)) => match t.parse::<TopicName>() {
            Ok(topic) => Some(topic),
            Err(e) => {
                problems.invalid(format!("property \"{}\": {e}", names::TOPIC));
                None
            }
        },
        Some(other) => {
            problems.wrong_type(names::TOPIC, "text", other);
            None
        }
        None => Some(config.topic.clone()),
    };
    if let Some(topic) = topic.as_ref().filter(|t| t.is_system()) {
        warnings.push(format!(
            "document {index}: the topic \"{topic}\" starts with '$', which brokers reserve for their own topics; most brokers ignore or refuse such messages"
        ));
    }

    let mut qos = config.qos;
    match allowed(doc, names::QOS, o.qos) {
        Some(Value::Integer(n)) => match u8::try_from(*n).ok().and_then(QoS::from_level) {
            Some(q) => qos = q,
            None => problems.invalid(format!(
                "property \"{}\" must be 0, 1 or 2, found {n}",
                names::QOS
            )),
        },
        Some(other) => problems.wrong_type(names::QOS, "an integer (0, 1 or 2)", other),
        None => {}
    }
    if qos > caps.maximum_qos {
        problems.unsupported(format!(
            "QoS {} is above the broker's maximum QoS {}",
            qos.level(),
            caps.maximum_qos.level()
        ));
    }

    let mut retain = config.retained;
    match allowed(doc, names::RETAINED, o.retained) {
        // Clearing is always retained: the property cannot undo it.
        Some(Value::Boolean(b)) if !clear => retain = *b,
        Some(Value::Boolean(_)) => {}
        Some(other) => problems.wrong_type(names::RETAINED, "a boolean", other),
        None => {}
    }
    if clear {
        retain = true;
    }

    let mut properties = config.properties.to_message_properties();
    read_properties(doc, o.properties, &mut properties, &mut problems);

    let payload: &[u8] = if clear { &[] } else { &doc.payload };
    if caps.protocol == MqttVersion::V5 && properties.payload_format == Some(1) {
        if let Err(e) = std::str::from_utf8(payload) {
            problems.invalid(format!(
                "the payload format is UTF-8 text, but the payload is not valid UTF-8 (invalid byte at {})",
                e.valid_up_to()
            ));
        }
    }

    if retain && !caps.retain_available {
        const WHY: &str = "the broker does not support retained messages (Retain Available = 0, or retain_supported is false in the connection)";
        if clear {
            problems.unsupported(format!("cannot clear the retained message: {WHY}"));
        } else if config.retain_unsupported == RetainUnsupported::Strip {
            retain = false;
            warnings.push(format!(
                "document {index}: {WHY}; sent without the retain flag as retain_unsupported is \"strip\""
            ));
        } else {
            problems.unsupported(format!(
                "{WHY}; send it without retained, or set retain_unsupported to \"strip\" to drop the flag with a warning"
            ));
        }
    }

    if let (Some(max), Some(topic)) = (caps.maximum_packet_size, &topic) {
        let size = publish_packet_size(
            caps.protocol,
            topic.as_str(),
            qos,
            &properties,
            payload.len(),
        );
        if size > u64::from(max) {
            problems.invalid(format!(
                "the message is {size} bytes, more than the broker's maximum packet size of {max} bytes"
            ));
        }
    }

    match (problems.into_error(), topic) {
        (Some(e), _) => Err(e),
        // A topic that did not parse left a problem, so this is not reached.
        (None, None) => Err(Error::new(ErrorCode::Internal, "the document has no topic")),
        (None, Some(topic)) => Ok(Resolved {
            topic,
            qos,
            retain,
            clear,
            properties,
        }),
    }
}

/// Applies the document's MQTT 5.0 property overrides to `properties`.
fn read_properties(
    doc: &Document,
    allow: bool,
    properties: &mut MessageProperties,
    problems: &mut Problems,
) {
    let get = |name| allowed(doc, name, allow);
    let expiry = get(names::MESSAGE_EXPIRY);
    let content_type = get(names::CONTENT_TYPE);
    let format = get(names::PAYLOAD_FORMAT);
    let response = get(names::RESPONSE_TOPIC);
    let correlation = get(names::CORRELATION_DATA);
    let user = get(names::USER_PROPERTIES);

    match expiry {
        Some(Value::Integer(n)) => match u32::try_from(*n) {
            Ok(secs) => properties.message_expiry = Some(secs),
            Err(_) => problems.invalid(format!(
                "property \"{}\" must be from 0 to {} seconds, found {n}",
                names::MESSAGE_EXPIRY,
                u32::MAX
            )),
        },
        Some(other) => problems.wrong_type(names::MESSAGE_EXPIRY, "an integer", other),
        None => {}
    }
    match content_type {
        Some(Value::Text(t)) => properties.content_type = Some(t.clone()),
        Some(other) => problems.wrong_type(names::CONTENT_TYPE, "text", other),
        None => {}
    }
    match format {
        Some(Value::Integer(n @ (0 | 1))) => properties.payload_format = u8::try_from(*n).ok(),
        Some(Value::Integer(n)) => problems.invalid(format!(
            "property \"{}\" must be 0 (bytes) or 1 (UTF-8), found {n}",
            names::PAYLOAD_FORMAT
        )),
        Some(other) => problems.wrong_type(names::PAYLOAD_FORMAT, "an integer", other),
        None => {}
    }
    match response {
        Some(Value::Text(t)) => match topic::validate_name(t) {
            Ok(()) => properties.response_topic = Some(t.clone()),
            Err(e) => problems.invalid(format!("property \"{}\": {e}", names::RESPONSE_TOPIC)),
        },
        Some(other) => problems.wrong_type(names::RESPONSE_TOPIC, "text", other),
        None => {}
    }
    match correlation {
        Some(Value::Binary(b)) => properties.correlation_data = Some(b.clone()),
        Some(Value::Text(t)) => properties.correlation_data = Some(t.as_bytes().to_vec()),
        Some(other) => problems.wrong_type(names::CORRELATION_DATA, "binary or text", other),
        None => {}
    }
    match user {
        // Added after the configured ones: those are headers every message
        // carries, these are the document's own.
        Some(Value::Pairs(pairs)) => properties.user_properties.extend(pairs.iter().cloned()),
        Some(other) => problems.wrong_type(names::USER_PROPERTIES, "pairs", other),
        None => {}
    }

    // MQTT strings and binary data have a 16-bit length prefix.
    let too_long = |len: usize| len > MAX_FIELD_LEN;
    if properties
        .content_type
        .as_ref()
        .is_some_and(|t| too_long(t.len()))
    {
        problems.invalid(format!(
            "the content type is longer than {MAX_FIELD_LEN} bytes"
        ));
    }
    if properties
        .correlation_data
        .as_ref()
        .is_some_and(|d| too_long(d.len()))
    {
        problems.invalid(format!(
            "the correlation data is longer than {MAX_FIELD_LEN} bytes"
        ));
    }
    if properties
        .user_properties
        .iter()
        .any(|(n, v)| too_long(n.len()) || too_long(v.len()))
    {
        problems.invalid(format!(
            "a user property name or value is longer than {MAX_FIELD_LEN} bytes"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PayloadFormat, UserProperty};

    fn send_config(topic: &str) -> SendConfig {
        SendConfig::new(topic.parse().unwrap())
    }

    fn caps() -> Capabilities {
        Capabilities::defaults(MqttVersion::V5)
    }

    fn error(plan: &SendPlan, index: usize) -> &Error {
        plan.results[index].as_ref().expect("an error")
    }

    #[test]
    fn config_values_apply_without_overrides() {
        let mut config = send_config("a/b");
        config.qos = QoS::ExactlyOnce;
        config.retained = true;
        config.properties.content_type = Some("text/plain".into());
        config.properties.user_properties = vec![UserProperty {
            name: "k".into(),
            value: "v".into(),
        }];
        let plan = plan(&config, &caps(), &[Document::new("x")]);
        assert_eq!(plan.results, vec![None]);
        assert_eq!(plan.indexes, vec![0]);
        let out = &plan.batch[0];
        assert_eq!(out.topic, "a/b");
        assert_eq!(out.payload, b"x");
        assert_eq!(out.qos, QoS::ExactlyOnce);
        assert!(out.retain);
        assert_eq!(out.properties.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            out.properties.user_properties,
            vec![("k".into(), "v".into())]
        );
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn document_properties_override() {
        let mut config = send_config("a/b");
        config.properties.user_properties = vec![UserProperty {
            name: "from".into(),
            value: "config".into(),
        }];
        let doc = Document::new("{}")
            .with(names::TOPIC, Value::Text("c/d".into()))
            .with(names::QOS, Value::Integer(0))
            .with(names::RETAINED, Value::Boolean(true))
            .with(names::DUPLICATE, Value::Boolean(true))
            .with(names::MESSAGE_EXPIRY, Value::Integer(30))
            .with(names::CONTENT_TYPE, Value::Text("application/json".into()))
            .with(names::PAYLOAD_FORMAT, Value::Integer(1))
            .with(names::RESPONSE_TOPIC, Value::Text("replies".into()))
            .with(names::CORRELATION_DATA, Value::Binary(vec![1, 2]))
            .with(
                names::USER_PROPERTIES,
                Value::Pairs(vec![("from".into(), "doc".into())]),
            )
            .with(names::SUBSCRIPTION_IDS, Value::Text("1".into()));
        let plan = plan(&config, &caps(), &[doc]);
        assert_eq!(plan.results, vec![None]);
        let out = &plan.batch[0];
        assert_eq!(
            (out.topic.as_str(), out.qos, out.retain),
            ("c/d", QoS::AtMostOnce, true)
        );
        assert_eq!(
            out.properties,
            MessageProperties {
                payload_format: Some(1),
                message_expiry: Some(30),
                content_type: Some("application/json".into()),
                response_topic: Some("replies".into()),
                correlation_data: Some(vec![1, 2]),
                user_properties: vec![
                    ("from".into(), "config".into()),
                    ("from".into(), "doc".into())
                ],
            }
        );
    }

    #[test]
    fn bad_documents_fail_alone_with_their_index() {
        let config = send_config("a/b");
        let docs = [
            Document::new("ok"),
            Document::new("x").with(names::QOS, Value::Text("1".into())),
            Document::new("x").with(names::QOS, Value::Integer(3)),
            Document::new("x").with(names::TOPIC, Value::Text("a/#".into())),
            Document::new("x").with(names::RETAINED, Value::Integer(1)),
            Document::new("x").with(names::TOPIC, Value::Integer(1)),
            Document::new("x").with(names::MESSAGE_EXPIRY, Value::Integer(-1)),
            Document::new("x").with(names::PAYLOAD_FORMAT, Value::Integer(2)),
            Document::new("x").with(names::RESPONSE_TOPIC, Value::Text("r/+".into())),
            Document::new(vec![0xff]).with(names::PAYLOAD_FORMAT, Value::Integer(1)),
        ];
        let plan = plan(&config, &caps(), &docs);
        assert_eq!(plan.indexes, vec![0]);
        let messages: Vec<String> = (1..docs.len())
            .map(|i| error(&plan, i).to_string())
            .collect();
        assert_eq!(
            messages,
            [
                "document 1: property \"mqtt.qos\" must be an integer (0, 1 or 2), found text",
                "document 2: property \"mqtt.qos\" must be 0, 1 or 2, found 3",
                "document 3: property \"mqtt.topic\": topic names cannot contain wildcards: '#' found in level 2 of \"a/#\"",
                "document 4: property \"mqtt.retained\" must be a boolean, found an integer",
                "document 5: property \"mqtt.topic\" must be text, found an integer",
                "document 6: property \"mqtt.message-expiry\" must be from 0 to 4294967295 seconds, found -1",
                "document 7: property \"mqtt.payload-format\" must be 0 (bytes) or 1 (UTF-8), found 2",
                "document 8: property \"mqtt.response-topic\": topic names cannot contain wildcards: '+' found in level 2 of \"r/+\"",
                "document 9: the payload format is UTF-8 text, but the payload is not valid UTF-8 (invalid byte at 0)",
            ]
        );
        assert!(plan.results[1..]
            .iter()
            .all(|r| r.as_ref().unwrap().code == ErrorCode::InvalidDocument));
    }

    #[test]
    fn disallowed_overrides_are_ignored_and_the_config_wins() {
        let mut config = send_config("a/b");
        config.overrides.topic = false;
        config.overrides.properties = false;
        let docs = [
            Document::new("x").with(names::TOPIC, Value::Text("c".into())),
            Document::new("x").with(names::CONTENT_TYPE, Value::Text("t".into())),
        ];
        let plan = plan(&config, &caps(), &docs);
        assert_eq!(plan.results, vec![None, None]);
        assert!(plan.batch.iter().all(|o| o.topic == "a/b"));
        assert_eq!(plan.batch[1].properties.content_type, None);
    }

    #[test]
    fn several_problems_of_one_document_are_joined() {
        let mut caps = caps();
        caps.maximum_qos = QoS::AtLeastOnce;
        let doc = Document::new("x")
            .with(names::TOPIC, Value::Text("".into()))
            .with(names::QOS, Value::Integer(2));
        let plan = plan(&send_config("a"), &caps, &[doc]);
        let e = error(&plan, 0);
        assert_eq!(e.code, ErrorCode::InvalidDocument);
        assert_eq!(
            e.message,
            "property \"mqtt.topic\": a topic must be at least one character long; QoS 2 is above the broker's maximum QoS 1"
        );
    }

    #[test]
    fn qos_above_broker_maximum_fails() {
        let mut caps = caps();
        caps.maximum_qos = QoS::AtMostOnce;
        let plan = plan(&send_config("a"), &caps, &[Document::new("x")]);
        let e = error(&plan, 0);
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert_eq!(e.message, "QoS 1 is above the broker's maximum QoS 0");
        assert_eq!(e.document_index, Some(0));
    }

    #[test]
    fn retain_without_broker_support_fails_by_default() {
        let mut caps = caps();
        caps.retain_available = false;
        let mut config = send_config("a");
        config.retained = true;
        let docs = [
            Document::new("x"),
            Document::new("y").with(names::RETAINED, Value::Boolean(false)),
        ];
        let plan = plan(&config, &caps, &docs);
        let e = error(&plan, 0);
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert!(
            e.message
                .starts_with("the broker does not support retained messages (Retain Available = 0"),
            "{}",
            e.message
        );
        assert!(e
            .message
            .ends_with("set retain_unsupported to \"strip\" to drop the flag with a warning"));
        assert_eq!(plan.results[1], None);
        assert!(!plan.batch[0].retain);
    }

    #[test]
    fn retain_without_broker_support_is_stripped_with_a_warning() {
        let mut caps = caps();
        caps.retain_available = false;
        let mut config = send_config("a");
        config.retained = true;
        config.retain_unsupported = RetainUnsupported::Strip;
        let plan = plan(&config, &caps, &[Document::new("x")]);
        assert_eq!(plan.results, vec![None]);
        assert!(!plan.batch[0].retain);
        assert_eq!(plan.warnings.len(), 1);
        assert!(plan.warnings[0]
            .starts_with("document 0: the broker does not support retained messages"));
        assert!(plan.warnings[0]
            .ends_with("sent without the retain flag as retain_unsupported is \"strip\""));
    }

    #[test]
    fn clear_publishes_an_empty_retained_payload() {
        let mut config = send_config("a");
        config.action = SendAction::Clear;
        let docs = [
            Document::new("ignored"),
            Document::new("x").with(names::RETAINED, Value::Boolean(false)),
        ];
        let plan = plan_owned(&config, &caps(), docs.to_vec());
        assert_eq!(plan.results, vec![None, None]);
        for out in &plan.batch {
            assert!(out.payload.is_empty());
            assert!(out.retain);
        }
        // Without retain support, clearing cannot be stripped: it fails.
        let mut no_retain = caps();
        no_retain.retain_available = false;
        config.retain_unsupported = RetainUnsupported::Strip;
        let plan = super::plan(&config, &no_retain, &docs[..1]);
        assert!(error(&plan, 0)
            .message
            .starts_with("cannot clear the retained message: the broker does not support"));
    }

    #[test]
    fn dollar_topics_warn_but_send() {
        let plan = plan(&send_config("$SYS/x"), &caps(), &[Document::new("x")]);
        assert_eq!(plan.results, vec![None]);
        assert_eq!(
            plan.warnings,
            ["document 0: the topic \"$SYS/x\" starts with '$', which brokers reserve for their own topics; most brokers ignore or refuse such messages"]
        );
    }

    #[test]
    fn oversized_messages_fail_against_maximum_packet_size() {
        let mut caps = caps();
        // QoS 1, topic "a": 2 fixed header + (3 topic + 2 packet id + 1
        // empty properties + 10 payload) = 18 bytes.
        caps.maximum_packet_size = Some(18);
        let docs = [Document::new(vec![0; 10]), Document::new(vec![0; 11])];
        let plan = plan(&send_config("a"), &caps, &docs);
        assert_eq!(plan.results[0], None);
        assert_eq!(
            error(&plan, 1).message,
            "the message is 19 bytes, more than the broker's maximum packet size of 18 bytes"
        );
    }

    #[test]
    fn merge_restores_document_order_and_indexes() {
        let config = send_config("a");
        let docs = [
            Document::new("0"),
            Document::new("1").with(names::QOS, Value::Integer(9)),
            Document::new("2"),
        ];
        let mut plan = plan(&config, &caps(), &docs);
        let batch = std::mem::take(&mut plan.batch);
        assert_eq!(batch.len(), 2);
        let refused =
            Error::new(ErrorCode::BrokerRejected, "publish refused").with_reason_code(0x87);
        let results = merge(plan, vec![Ok(()), Err(refused)]);
        assert_eq!(results.len(), 3);
        assert_eq!(results[0], Ok(()));
        assert_eq!(results[1].as_ref().unwrap_err().document_index, Some(1));
        let e = results[2].as_ref().unwrap_err();
        assert_eq!(e.document_index, Some(2));
        assert_eq!(e.reason_code, Some(0x87));
    }

    #[test]
    fn merge_reports_missing_outcomes_as_internal() {
        let plan = plan(&send_config("a"), &caps(), &[Document::new("0")]);
        let results = merge(plan, Vec::new());
        let e = results[0].as_ref().unwrap_err();
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.document_index, Some(0));
    }

    #[test]
    fn payload_format_from_config_is_checked_on_v5_only() {
        let mut config = send_config("a");
        config.properties.payload_format = Some(PayloadFormat::Utf8);
        let docs = [Document::new(vec![0xc3])];
        assert!(plan(&config, &caps(), &docs).results[0].is_some());
        let mut v311 = caps();
        v311.protocol = MqttVersion::V311;
        assert_eq!(plan(&config, &v311, &docs).results[0], None);
    }
}
