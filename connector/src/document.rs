//! Documents, the unit a pipeline moves, and how MQTT messages map to them.
//!
//! [`Document`], [`Property`] and [`Value`] mirror the WIT `document`,
//! `property` and `value` types. Listen turns each received message into a
//! document with the properties named in [`names`]; Send reads the same
//! names as per-document overrides ([`crate::send`]).

use crate::model::Incoming;

/// Names of the document properties the connector sets and reads.
pub mod names {
    /// Topic name, [`Value::Text`](super::Value::Text).
    pub const TOPIC: &str = "mqtt.topic";
    /// QoS 0, 1 or 2, [`Value::Integer`](super::Value::Integer).
    pub const QOS: &str = "mqtt.qos";
    /// RETAIN flag, [`Value::Boolean`](super::Value::Boolean).
    pub const RETAINED: &str = "mqtt.retained";
    /// DUP flag (Listen only), [`Value::Boolean`](super::Value::Boolean).
    pub const DUPLICATE: &str = "mqtt.duplicate";
    /// 5.0 Message Expiry Interval in seconds,
    /// [`Value::Integer`](super::Value::Integer).
    pub const MESSAGE_EXPIRY: &str = "mqtt.message-expiry";
    /// 5.0 Content Type, [`Value::Text`](super::Value::Text).
    pub const CONTENT_TYPE: &str = "mqtt.content-type";
    /// 5.0 Payload Format Indicator, 0 bytes or 1 UTF-8,
    /// [`Value::Integer`](super::Value::Integer).
    pub const PAYLOAD_FORMAT: &str = "mqtt.payload-format";
    /// 5.0 Response Topic, [`Value::Text`](super::Value::Text).
    pub const RESPONSE_TOPIC: &str = "mqtt.response-topic";
    /// 5.0 Correlation Data, [`Value::Binary`](super::Value::Binary) (Send
    /// also accepts [`Value::Text`](super::Value::Text), as UTF-8 bytes).
    pub const CORRELATION_DATA: &str = "mqtt.correlation-data";
    /// 5.0 User Properties in order, [`Value::Pairs`](super::Value::Pairs).
    pub const USER_PROPERTIES: &str = "mqtt.user-properties";
    /// 5.0 Subscription Identifiers (Listen only), as
    /// [`Value::Text`](super::Value::Text): the decimal ids separated by
    /// commas, for example `"1,7"`. Text because the WIT `value` has no list
    /// of integers, and a comma list reads well in any pipeline tool.
    pub const SUBSCRIPTION_IDS: &str = "mqtt.subscription-ids";
}

/// The value of a document property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Text, such as `mqtt.topic`.
    Text(String),
    /// A whole number, such as `mqtt.qos`.
    Integer(i64),
    /// A flag, such as `mqtt.retained`.
    Boolean(bool),
    /// Bytes, such as `mqtt.correlation-data`.
    Binary(Vec<u8>),
    /// Name and value pairs in order, names may repeat, such as
    /// `mqtt.user-properties`.
    Pairs(Vec<(String, String)>),
}

impl Value {
    /// What kind of value this is, for messages: "text", "an integer", ...
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Text(_) => "text",
            Value::Integer(_) => "an integer",
            Value::Boolean(_) => "a boolean",
            Value::Binary(_) => "binary",
            Value::Pairs(_) => "pairs",
        }
    }
}

/// A named property of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Property {
    /// The property name, for example `mqtt.topic`.
    pub name: String,
    /// Its value.
    pub value: Value,
}

impl Property {
    /// A property `name` with `value`.
    pub fn new(name: impl Into<String>, value: Value) -> Self {
        Property {
            name: name.into(),
            value,
        }
    }
}

/// The unit a pipeline moves: bytes plus properties.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// Listen: the delivery id to commit. Send: ignored.
    pub id: u64,
    /// The payload.
    pub payload: Vec<u8>,
    /// The properties, in order.
    pub properties: Vec<Property>,
}

impl Document {
    /// A document with `payload`, id 0 and no properties.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Document {
            id: 0,
            payload: payload.into(),
            properties: Vec::new(),
        }
    }

    /// The same document with the property `name` added.
    pub fn with(mut self, name: impl Into<String>, value: Value) -> Self {
        self.properties.push(Property::new(name, value));
        self
    }

    /// The value of the first property called `name`, if any.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.properties
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.value)
    }
}

impl From<Incoming> for Document {
    /// Maps a received message to a document: the delivery id, the payload,
    /// `mqtt.topic`, `mqtt.qos`, `mqtt.retained` and `mqtt.duplicate`
    /// always, and each MQTT 5.0 property the message has.
    fn from(incoming: Incoming) -> Self {
        let Incoming {
            id,
            topic,
            payload,
            qos,
            retain,
            duplicate,
            properties: p,
            subscription_ids,
        } = incoming;
        let mut properties = vec![
            Property::new(names::TOPIC, Value::Text(topic)),
            Property::new(names::QOS, Value::Integer(i64::from(qos.level()))),
            Property::new(names::RETAINED, Value::Boolean(retain)),
            Property::new(names::DUPLICATE, Value::Boolean(duplicate)),
        ];
        if let Some(expiry) = p.message_expiry {
            properties.push(Property::new(
                names::MESSAGE_EXPIRY,
                Value::Integer(i64::from(expiry)),
            ));
        }
        if let Some(content_type) = p.content_type {
            properties.push(Property::new(
                names::CONTENT_TYPE,
                Value::Text(content_type),
            ));
        }
        if let Some(format) = p.payload_format {
            properties.push(Property::new(
                names::PAYLOAD_FORMAT,
                Value::Integer(i64::from(format)),
            ));
        }
        if let Some(topic) = p.response_topic {
            properties.push(Property::new(names::RESPONSE_TOPIC, Value::Text(topic)));
        }
        if let Some(data) = p.correlation_data {
            properties.push(Property::new(names::CORRELATION_DATA, Value::Binary(data)));
        }
        if !p.user_properties.is_empty() {
            properties.push(Property::new(
                names::USER_PROPERTIES,
                Value::Pairs(p.user_properties),
            ));
        }
        if !subscription_ids.is_empty() {
            let ids: Vec<String> = subscription_ids.iter().map(u32::to_string).collect();
            properties.push(Property::new(
                names::SUBSCRIPTION_IDS,
                Value::Text(ids.join(",")),
            ));
        }
        Document {
            id,
            payload,
            properties,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MessageProperties, QoS};

    fn incoming() -> Incoming {
        Incoming {
            id: 42,
            topic: "a/b".into(),
            payload: b"hi".to_vec(),
            qos: QoS::ExactlyOnce,
            retain: true,
            duplicate: false,
            properties: MessageProperties::default(),
            subscription_ids: Vec::new(),
        }
    }

    #[test]
    fn plain_message_maps_to_the_four_basic_properties() {
        let doc = Document::from(incoming());
        assert_eq!(doc.id, 42);
        assert_eq!(doc.payload, b"hi");
        assert_eq!(
            doc.properties,
            vec![
                Property::new(names::TOPIC, Value::Text("a/b".into())),
                Property::new(names::QOS, Value::Integer(2)),
                Property::new(names::RETAINED, Value::Boolean(true)),
                Property::new(names::DUPLICATE, Value::Boolean(false)),
            ]
        );
    }

    #[test]
    fn every_v5_property_maps() {
        let mut msg = incoming();
        msg.duplicate = true;
        msg.properties = MessageProperties {
            payload_format: Some(1),
            message_expiry: Some(30),
            content_type: Some("application/json".into()),
            response_topic: Some("replies/1".into()),
            correlation_data: Some(vec![0, 1, 2]),
            user_properties: vec![("k".into(), "v1".into()), ("k".into(), "v2".into())],
        };
        msg.subscription_ids = vec![1, 7];
        let doc = Document::from(msg);
        let get = |name| doc.property(name).cloned();
        assert_eq!(get(names::DUPLICATE), Some(Value::Boolean(true)));
        assert_eq!(get(names::MESSAGE_EXPIRY), Some(Value::Integer(30)));
        assert_eq!(
            get(names::CONTENT_TYPE),
            Some(Value::Text("application/json".into()))
        );
        assert_eq!(get(names::PAYLOAD_FORMAT), Some(Value::Integer(1)));
        assert_eq!(
            get(names::RESPONSE_TOPIC),
            Some(Value::Text("replies/1".into()))
        );
        assert_eq!(
            get(names::CORRELATION_DATA),
            Some(Value::Binary(vec![0, 1, 2]))
        );
        assert_eq!(
            get(names::USER_PROPERTIES),
            Some(Value::Pairs(vec![
                ("k".into(), "v1".into()),
                ("k".into(), "v2".into())
            ]))
        );
        assert_eq!(
            get(names::SUBSCRIPTION_IDS),
            Some(Value::Text("1,7".into()))
        );
        assert_eq!(doc.properties.len(), 11);
    }

    #[test]
    fn first_property_wins_and_kinds_are_named() {
        let doc = Document::new("x")
            .with("p", Value::Integer(1))
            .with("p", Value::Integer(2));
        assert_eq!(doc.property("p"), Some(&Value::Integer(1)));
        assert_eq!(doc.property("q"), None);
        assert_eq!(Value::Binary(vec![]).kind(), "binary");
        assert_eq!(Value::Pairs(vec![]).kind(), "pairs");
    }
}
