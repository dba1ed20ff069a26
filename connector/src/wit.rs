//! The conversions between the connector's model and the Rust types
//! generated from the WIT world (`connector/wit`), written once for both
//! sides of the boundary.
//!
//! The component (wit-bindgen) and the host (wasmtime's `bindgen!`) each
//! generate their own types from the same WIT, with the same type, field
//! and variant names. [`wit_conversions!`](crate::wit_conversions) expands,
//! on either side, to the `From` and `TryFrom` impls between those types
//! and [`crate::model`], [`crate::document`] and [`crate::validate`], so the
//! two sides cannot convert differently. A field or case added to the WIT
//! or the model without its counterpart fails to compile on both sides.
//!
//! Conversions are `From` both ways, except into the model types that hold
//! a parsed topic ([`Outgoing`](crate::model::Outgoing),
//! [`Subscription`](crate::model::Subscription),
//! [`Will`](crate::model::Will) and the
//! [`ConnectOptions`](crate::model::ConnectOptions) that carry one): those
//! are `TryFrom`, failing with the [`model::Error`](crate::model::Error)
//! of [`parse_topic_name`](crate::model::parse_topic_name) and friends, so
//! the host parses what a guest hands it exactly once.

use std::time::Duration;

/// A duration in whole milliseconds for a WIT `u32`, saturating.
pub fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// A duration in whole seconds for a WIT `u16`, saturating.
pub fn secs_u16(duration: Duration) -> u16 {
    u16::try_from(duration.as_secs()).unwrap_or(u16::MAX)
}

/// Generates the conversions between the model and the WIT types.
///
/// Invoke it once, at module level, in the crate that generated the WIT
/// bindings, with the modules generated for the WIT interfaces `types` and
/// `mqtt` in scope under those names:
///
/// ```text
/// use bindings::mqtt_connector::connector::{mqtt, types};
/// connector::wit_conversions!(types = types, mqtt = mqtt);
/// ```
///
/// (`host-shim/src/host/capability.rs` and `connector/src/component.rs` do
/// exactly this; their tests and the end-to-end suite exercise the
/// result.)
///
/// It implements, in both directions unless noted:
///
/// | model | WIT |
/// | --- | --- |
/// | `model::QoS` | `types::Qos` |
/// | `model::MqttVersion` | `mqtt::Protocol` |
/// | `model::ErrorCode`, `model::Error` | `types::ErrorCode`, `types::Error` |
/// | `validate::Problem` | `types::Problem` |
/// | `document::{Value, Property, Document}` | `types::{Value, Property, Document}` |
/// | `model::{MessageProperties, TlsOptions, Capabilities, Granted, Incoming}` | `mqtt::` the same names |
/// | `model::{Will, ConnectOptions, Outgoing, Subscription}` | `mqtt::` the same names (`TryFrom` into the model) |
#[macro_export]
macro_rules! wit_conversions {
    (types = $types:ident, mqtt = $mqtt:ident $(,)?) => {
        // A block keeps the aliases below out of the caller's namespace;
        // impls inside it apply everywhere.
        const _: () = {
            use $crate::document::{
                Document as ModelDocument, Property as ModelProperty, Value as ModelValue,
            };
            use $crate::model::{
                Capabilities as ModelCapabilities, ConnectOptions as ModelConnectOptions,
                Error as ModelError, ErrorCode as ModelErrorCode, Granted as ModelGranted,
                Incoming as ModelIncoming, MessageProperties as ModelMessageProperties,
                MqttVersion as ModelMqttVersion, Outgoing as ModelOutgoing, QoS as ModelQoS,
                Subscription as ModelSubscription, TlsOptions as ModelTlsOptions,
                Will as ModelWill,
            };
            use $crate::validate::Problem as ModelProblem;
            use $mqtt::{
                Capabilities as WitCapabilities, ConnectOptions as WitConnectOptions,
                Granted as WitGranted, Incoming as WitIncoming,
                MessageProperties as WitMessageProperties, Outgoing as WitOutgoing,
                Protocol as WitProtocol, Subscription as WitSubscription,
                TlsOptions as WitTlsOptions, Will as WitWill,
            };
            use $types::{
                Document as WitDocument, Error as WitError, ErrorCode as WitErrorCode,
                Problem as WitProblem, Property as WitProperty, Qos as WitQos, Value as WitValue,
            };

            $crate::__wit_enum!(
                ModelQoS,
                WitQos {
                    AtMostOnce,
                    AtLeastOnce,
                    ExactlyOnce
                }
            );
            $crate::__wit_enum!(ModelMqttVersion, WitProtocol { V311, V5 });
            $crate::__wit_enum!(
                ModelErrorCode,
                WitErrorCode {
                    InvalidConfig,
                    InvalidDocument,
                    ConnectionFailed,
                    NotAuthorized,
                    Timeout,
                    BrokerRejected,
                    Unsupported,
                    Closed,
                    Internal,
                }
            );
            $crate::__wit_variant!(
                ModelValue,
                WitValue {
                    Text,
                    Integer,
                    Boolean,
                    Binary,
                    Pairs
                }
            );

            $crate::__wit_record!(
                ModelError,
                WitError {
                    code: into,
                    message,
                    reason_code,
                    document_index,
                }
            );
            $crate::__wit_record!(ModelProblem, WitProblem { pointer, message });
            $crate::__wit_record!(ModelProperty, WitProperty { name, value: into });
            $crate::__wit_record!(
                ModelDocument,
                WitDocument {
                    id,
                    payload,
                    properties: vec
                }
            );
            $crate::__wit_record!(
                ModelMessageProperties,
                WitMessageProperties {
                    payload_format,
                    message_expiry,
                    content_type,
                    response_topic,
                    correlation_data,
                    user_properties,
                }
            );
            $crate::__wit_record!(
                ModelTlsOptions,
                WitTlsOptions {
                    ca_file,
                    client_cert_file,
                    client_key_file,
                    alpn,
                }
            );
            $crate::__wit_record!(
                ModelCapabilities,
                WitCapabilities {
                    protocol: into,
                    session_present,
                    retain_available,
                    maximum_qos: into,
                    wildcard_subscription_available,
                    shared_subscription_available,
                    subscription_identifiers_available,
                    maximum_packet_size,
                    topic_alias_maximum,
                    receive_maximum,
                }
            );
            $crate::__wit_record!(
                ModelGranted,
                WitGranted {
                    filter,
                    qos: option,
                    reason_code
                }
            );
            $crate::__wit_record!(
                ModelIncoming,
                WitIncoming {
                    id,
                    topic,
                    payload,
                    qos: into,
                    retain,
                    duplicate,
                    properties: into,
                    subscription_ids,
                }
            );

            impl From<ModelWill> for WitWill {
                fn from(w: ModelWill) -> Self {
                    WitWill {
                        topic: w.topic.into_string(),
                        payload: w.payload,
                        qos: w.qos.into(),
                        retain: w.retain,
                        delay_interval: w.delay_interval,
                        properties: w.properties.into(),
                    }
                }
            }

            impl TryFrom<WitWill> for ModelWill {
                type Error = ModelError;

                fn try_from(w: WitWill) -> Result<Self, ModelError> {
                    Ok(ModelWill {
                        topic: $crate::model::parse_will_topic(&w.topic)?,
                        payload: w.payload,
                        qos: w.qos.into(),
                        retain: w.retain,
                        delay_interval: w.delay_interval,
                        properties: w.properties.into(),
                    })
                }
            }

            impl From<ModelConnectOptions> for WitConnectOptions {
                fn from(o: ModelConnectOptions) -> Self {
                    WitConnectOptions {
                        url: o.url,
                        protocol: o.protocol.into(),
                        client_id: o.client_id,
                        username: o.username,
                        password: o.password,
                        keep_alive_secs: $crate::wit::secs_u16(o.keep_alive),
                        clean_start: o.clean_start,
                        session_expiry_secs: o.session_expiry,
                        connect_timeout_ms: $crate::wit::millis(o.connect_timeout),
                        tls: o.tls.map(Into::into),
                        reconnect_min_ms: $crate::wit::millis(o.reconnect_min),
                        reconnect_max_ms: $crate::wit::millis(o.reconnect_max),
                        send_timeout_ms: $crate::wit::millis(o.send_timeout),
                        will: o.will.map(Into::into),
                        inflight_window: o.inflight_window,
                        receive_maximum: o.receive_maximum,
                    }
                }
            }

            impl TryFrom<WitConnectOptions> for ModelConnectOptions {
                type Error = ModelError;

                fn try_from(o: WitConnectOptions) -> Result<Self, ModelError> {
                    use ::std::time::Duration;
                    Ok(ModelConnectOptions {
                        url: o.url,
                        protocol: o.protocol.into(),
                        client_id: o.client_id,
                        username: o.username,
                        password: o.password,
                        keep_alive: Duration::from_secs(u64::from(o.keep_alive_secs)),
                        clean_start: o.clean_start,
                        session_expiry: o.session_expiry_secs,
                        connect_timeout: Duration::from_millis(u64::from(o.connect_timeout_ms)),
                        tls: o.tls.map(Into::into),
                        reconnect_min: Duration::from_millis(u64::from(o.reconnect_min_ms)),
                        reconnect_max: Duration::from_millis(u64::from(o.reconnect_max_ms)),
                        send_timeout: Duration::from_millis(u64::from(o.send_timeout_ms)),
                        will: o.will.map(ModelWill::try_from).transpose()?,
                        inflight_window: o.inflight_window,
                        receive_maximum: o.receive_maximum,
                    })
                }
            }

            impl From<ModelOutgoing> for WitOutgoing {
                fn from(o: ModelOutgoing) -> Self {
                    WitOutgoing {
                        topic: o.topic.into_string(),
                        payload: o.payload,
                        qos: o.qos.into(),
                        retain: o.retain,
                        properties: o.properties.into(),
                    }
                }
            }

            impl TryFrom<WitOutgoing> for ModelOutgoing {
                type Error = ModelError;

                fn try_from(o: WitOutgoing) -> Result<Self, ModelError> {
                    Ok(ModelOutgoing {
                        topic: $crate::model::parse_topic_name(&o.topic)?,
                        payload: o.payload,
                        qos: o.qos.into(),
                        retain: o.retain,
                        properties: o.properties.into(),
                    })
                }
            }

            impl From<ModelSubscription> for WitSubscription {
                fn from(s: ModelSubscription) -> Self {
                    WitSubscription {
                        filter: s.filter.into_string(),
                        qos: s.qos.into(),
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: s.retain_handling,
                    }
                }
            }

            impl TryFrom<WitSubscription> for ModelSubscription {
                type Error = ModelError;

                fn try_from(s: WitSubscription) -> Result<Self, ModelError> {
                    Ok(ModelSubscription {
                        filter: $crate::model::parse_topic_filter(&s.filter)?,
                        qos: s.qos.into(),
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: s.retain_handling,
                    })
                }
            }
        };
    };
}

/// Both directions between two fieldless enums with the same variants.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_enum {
    ($model:ident, $wit:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$model> for $wit {
            fn from(value: $model) -> Self {
                match value {
                    $($model::$variant => $wit::$variant,)+
                }
            }
        }

        impl From<$wit> for $model {
            fn from(value: $wit) -> Self {
                match value {
                    $($wit::$variant => $model::$variant,)+
                }
            }
        }
    };
}

/// Both directions between two enums whose variants each hold one value of
/// the same type.
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_variant {
    ($model:ident, $wit:ident { $($variant:ident),+ $(,)? }) => {
        impl From<$model> for $wit {
            fn from(value: $model) -> Self {
                match value {
                    $($model::$variant(v) => $wit::$variant(v),)+
                }
            }
        }

        impl From<$wit> for $model {
            fn from(value: $wit) -> Self {
                match value {
                    $($wit::$variant(v) => $model::$variant(v),)+
                }
            }
        }
    };
}

/// Both directions between two structs with the same fields. A field is
/// moved as it is, or converted: `into` (a converted type), `option` (an
/// `Option` of one), `vec` (a `Vec` of one).
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_record {
    ($model:ident, $wit:ident { $($field:ident $(: $how:ident)?),+ $(,)? }) => {
        impl From<$model> for $wit {
            fn from(value: $model) -> Self {
                $wit {
                    $($field: $crate::__wit_field!($($how)? value.$field),)+
                }
            }
        }

        impl From<$wit> for $model {
            fn from(value: $wit) -> Self {
                $model {
                    $($field: $crate::__wit_field!($($how)? value.$field),)+
                }
            }
        }
    };
}

/// One field of [`__wit_record!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __wit_field {
    // The keyword arms come first: an `expr` fragment, once tried, must match.
    (into $value:expr) => {
        ::core::convert::Into::into($value)
    };
    (option $value:expr) => {
        ::core::option::Option::map($value, ::core::convert::Into::into)
    };
    (vec $value:expr) => {
        ::core::iter::Iterator::collect(
            ::core::iter::IntoIterator::into_iter($value).map(::core::convert::Into::into),
        )
    };
    ($value:expr) => {
        $value
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_saturate() {
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        assert_eq!(millis(Duration::from_secs(u64::MAX)), u32::MAX);
        assert_eq!(secs_u16(Duration::from_millis(61_999)), 61);
        assert_eq!(secs_u16(Duration::from_secs(70_000)), u16::MAX);
    }
}
