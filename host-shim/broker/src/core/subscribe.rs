//! SUBSCRIBE and UNSUBSCRIBE: filters checked against the protocol and the
//! configuration, subscriptions added to or removed from the session and
//! the trie, and the SUBACK and UNSUBACK.

use super::publish::{min_qos, qos_from};
use super::{Broker, ConnId};
use crate::types::{SessionId, SubOptions};
use mqtt_topic::{self as topic, MqttVersion, TopicFilter};
use rumqttc::v5::mqttbytes::v5::{
    DisconnectReasonCode, Packet, RetainForwardRule, SubAck, Subscribe, SubscribeReasonCode,
    UnsubAck, UnsubAckReason, Unsubscribe,
};
use std::time::Instant;

impl Broker {
    pub(super) fn handle_subscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        session_id: SessionId,
        subscribe: Subscribe,
    ) {
        let v5 = self.session_mut(session_id).version == MqttVersion::V5;
        let subscription_id = subscribe.properties.as_ref().and_then(|p| p.id);
        if subscription_id == Some(0) {
            // MQTT-3.8.2-? : 0 is not a valid Subscription Identifier.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }
        if subscription_id.is_some() && !self.config.subscription_identifiers {
            self.disconnect(
                now,
                conn,
                DisconnectReasonCode::SubscriptionIdentifiersNotSupported,
            );
            return;
        }
        if subscribe
            .filters
            .iter()
            .any(|f| f.nolocal && topic::is_shared_filter(&f.path))
        {
            // MQTT-3.8.3-4 (5.0): No Local on a shared subscription.
            self.disconnect(now, conn, DisconnectReasonCode::ProtocolError);
            return;
        }

        let Subscribe { pkid, filters, .. } = subscribe;
        let grants = self.session_mut(session_id).grants.clone();
        let mut codes = Vec::with_capacity(filters.len());
        let mut retained_for = Vec::new();
        for filter in filters {
            let denied = self.config.deny_subscribe.iter().any(|d| d == &filter.path);
            let checked = if denied {
                Err(SubscribeReasonCode::Unspecified)
            } else {
                self.check_filter(filter.path)
                    .and_then(|path| match &grants {
                        Some(grants) if !grants.may_subscribe(path.match_filter()) => {
                            Err(SubscribeReasonCode::NotAuthorized)
                        }
                        _ => Ok(path),
                    })
                    .and_then(|path| self.check_subscription_quota(session_id, path))
            };
            let code = match checked {
                Err(code) => code,
                Ok(path) => {
                    let granted = min_qos(filter.qos, qos_from(self.config.maximum_qos));
                    let options = SubOptions {
                        qos: granted,
                        no_local: filter.nolocal,
                        retain_as_published: filter.preserve_retain,
                        retain_handling: filter.retain_forward_rule,
                        subscription_id,
                    };
                    let shared = path.shared().is_some();
                    let existed = self
                        .route_subscription(session_id, &path, options.clone())
                        .is_some();
                    // MQTT-3.3.1-9..11 (5.0) and MQTT-3.8.4-3 (3.1.1):
                    // retained messages for the new subscription, never
                    // for shared subscriptions (MQTT-4.8.2-? / 3.8.3.1).
                    let send_retained = !shared
                        && match options.retain_handling {
                            RetainForwardRule::OnEverySubscribe => true,
                            RetainForwardRule::OnNewSubscribe => !existed,
                            RetainForwardRule::Never => false,
                        };
                    self.session_mut(session_id)
                        .subscriptions
                        .insert(path.clone(), options.clone());
                    self.journal_subscription(session_id, &path);
                    if send_retained {
                        retained_for.push((path, options));
                    }
                    SubscribeReasonCode::Success(granted)
                }
            };
            codes.push(if v5 { code } else { v3_suback_code(code) });
        }
        self.send(
            conn,
            Packet::SubAck(SubAck {
                pkid,
                return_codes: codes,
                properties: None,
            }),
        );

        self.start_retained_delivery(now, session_id, retained_for);
    }

    /// A new subscription beyond `max_subscriptions` is refused with 0x97
    /// Quota exceeded; replacing an existing one is always allowed.
    fn check_subscription_quota(
        &self,
        session_id: SessionId,
        path: TopicFilter,
    ) -> Result<TopicFilter, SubscribeReasonCode> {
        let max = self.config.max_subscriptions;
        let Some(session) = self.sessions.get(&session_id) else {
            return Ok(path);
        };
        if max > 0
            && session.subscriptions.len() >= max
            && !session.subscriptions.contains_key(&path)
        {
            return Err(SubscribeReasonCode::QuotaExceeded);
        }
        Ok(path)
    }

    /// Parses a subscription's filter and checks it against the
    /// configuration.
    fn check_filter(&self, path: String) -> Result<TopicFilter, SubscribeReasonCode> {
        let filter =
            TopicFilter::try_from(path).map_err(|_| SubscribeReasonCode::TopicFilterInvalid)?;
        if self.too_many_levels(filter.match_filter()) {
            return Err(SubscribeReasonCode::TopicFilterInvalid);
        }
        if filter.shared().is_some() && !self.config.shared_subscriptions {
            return Err(SubscribeReasonCode::SharedSubscriptionsNotSupported);
        }
        if !self.config.wildcard_subscriptions && filter.has_wildcards() {
            return Err(SubscribeReasonCode::WildcardSubscriptionsNotSupported);
        }
        Ok(filter)
    }

    pub(super) fn handle_unsubscribe(
        &mut self,
        now: Instant,
        conn: ConnId,
        session_id: SessionId,
        unsubscribe: Unsubscribe,
    ) {
        let Unsubscribe { pkid, filters, .. } = unsubscribe;
        let mut reasons = Vec::with_capacity(filters.len());
        for path in filters {
            let reason = match TopicFilter::try_from(path) {
                Err(_) => UnsubAckReason::TopicFilterInvalid,
                Ok(filter) if self.remove_subscription(now, session_id, &filter) => {
                    UnsubAckReason::Success
                }
                Ok(_) => UnsubAckReason::NoSubscriptionExisted,
            };
            reasons.push(reason);
        }
        self.send(
            conn,
            Packet::UnsubAck(UnsubAck {
                pkid,
                reasons,
                properties: None,
            }),
        );
    }

    fn remove_subscription(
        &mut self,
        now: Instant,
        session_id: SessionId,
        filter: &TopicFilter,
    ) -> bool {
        if self
            .session_mut(session_id)
            .subscriptions
            .remove(filter)
            .is_none()
        {
            return false;
        }
        if let Some(cursors) = self.cursors.get_mut(&session_id) {
            // Its retained messages not sent yet are no longer wanted.
            cursors.retain(|c| &c.filter != filter);
            if cursors.is_empty() {
                self.cursors.remove(&session_id);
            }
        }
        self.unroute(session_id, filter);
        if filter.shared().is_some() {
            self.hand_over_queued(now, session_id, filter);
        }
        self.journal_subscription(session_id, filter);
        true
    }

    /// Puts `session_id`'s subscription to `filter` in the trie; returns the
    /// options it replaced.
    pub(super) fn route_subscription(
        &mut self,
        session_id: SessionId,
        filter: &TopicFilter,
        options: SubOptions,
    ) -> Option<SubOptions> {
        match filter.shared() {
            Some(shared) => {
                self.trie
                    .insert(shared.filter, Some(shared.group), session_id, options)
            }
            None => self.trie.insert(filter.as_str(), None, session_id, options),
        }
    }

    /// Takes `session_id`'s subscription to `filter` out of the trie.
    pub(super) fn unroute(&mut self, session_id: SessionId, filter: &TopicFilter) {
        match filter.shared() {
            Some(shared) => self
                .trie
                .remove(shared.filter, Some(shared.group), session_id),
            None => self.trie.remove(filter.as_str(), None, session_id),
        };
    }
}

/// 3.1.1 SUBACK has one failure code, 0x80 (MQTT-3.9.3-2).
impl Broker {
    /// Whether a topic name or filter has more levels than
    /// `max_topic_levels` allows.
    pub(super) fn too_many_levels(&self, topic: &str) -> bool {
        let max = self.config.max_topic_levels;
        max > 0 && topic.split('/').nth(max).is_some()
    }
}

fn v3_suback_code(code: SubscribeReasonCode) -> SubscribeReasonCode {
    match code {
        SubscribeReasonCode::Success(q) => SubscribeReasonCode::Success(q),
        _ => SubscribeReasonCode::Failure,
    }
}
