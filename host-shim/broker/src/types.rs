//! Small types shared by the broker's modules.

use rumqttc::v5::mqttbytes::QoS;

/// The broker's handle on a session: a number, so routing never hashes
/// client identifier strings on the publish path.
pub type SessionId = u64;

/// The protocol a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// MQTT 5.0 Retain Handling subscription option (3.8.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendOnSubscribe,
    /// 1: send retained messages only if the subscription did not exist.
    SendIfNew,
    /// 2: never send retained messages for this subscription.
    DoNotSend,
}

/// A subscription as granted: what the router needs to deliver a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOptions {
    /// Granted maximum QoS.
    pub qos: QoS,
    /// 5.0 No Local: never deliver the subscriber's own publications.
    pub no_local: bool,
    /// 5.0 Retain As Published: keep the RETAIN flag on live deliveries.
    pub retain_as_published: bool,
    /// 5.0 Retain Handling.
    pub retain_handling: RetainHandling,
    /// 5.0 Subscription Identifier, if the SUBSCRIBE carried one.
    pub subscription_id: Option<usize>,
}
