//! Small types shared by the broker's modules.

use rumqttc::v5::mqttbytes::v5::RetainForwardRule;
use rumqttc::v5::mqttbytes::QoS;

/// The broker's handle on a session: a number, so routing never hashes
/// client identifier strings on the publish path.
pub type SessionId = u64;

/// A subscription as granted: what the router needs to deliver a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOptions {
    /// Granted maximum QoS.
    pub qos: QoS,
    /// 5.0 No Local: never deliver the subscriber's own publications.
    pub no_local: bool,
    /// 5.0 Retain As Published: keep the RETAIN flag on live deliveries.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling (3.8.3.1): send retained messages at every
    /// SUBSCRIBE, only when the subscription is new, or never.
    pub retain_handling: RetainForwardRule,
    /// 5.0 Subscription Identifier, if the SUBSCRIBE carried one.
    pub subscription_id: Option<usize>,
}
