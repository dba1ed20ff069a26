// The host's MQTT client: one `MqttClient` per `client` resource of the
// guest, over MQTT.js. It gives the semantics the WIT `mqtt` interface
// promises (the same as the Rust host's client):
//
// - `connect` waits for the CONNACK and fails without retrying; after it,
//   the client reconnects by itself with a doubling delay and subscribes
//   again when the broker lost the session.
// - `publish` pipelines a batch within the in-flight window (lowered by a
//   5.0 broker's Receive Maximum) and resolves each message at its PUBACK
//   (QoS 1), PUBCOMP (QoS 2) or write (QoS 0). Through an outage, messages
//   not yet written wait for the next connection, up to `send-timeout-ms`
//   from the loss, then fail with `timeout`. Messages in flight when the
//   connection is lost fail with `connection-failed`: MQTT.js ends their
//   callbacks with the connection (the Rust host keeps them for the
//   session's resend instead).
// - Received messages wait in a queue for `receive`; QoS 1 and 2 messages
//   are acknowledged (PUBACK / PUBREC) only when `ack` names them, and then
//   in the order they arrived (MQTT-4.6.0-2). `ack` resolves once the
//   broker has released the PUBRECs handed to MQTT.js with its PUBREL.
//
// Acknowledging later: MQTT.js acknowledges a QoS 1 or 2 PUBLISH as soon as
// it has handled it, and its `customHandleAcks` hook (5.0 only) delays
// every packet behind the one waiting, PINGRESP included. So the client
// takes each PUBLISH from the `packetreceive` event and holds the PUBACK or
// PUBREC MQTT.js writes for it, letting MQTT.js go on with the next packet,
// until `ack` releases it. MQTT.js is pinned to an exact version for this.

import { readFileSync } from 'node:fs';
import mqtt from 'mqtt';
import { err, ok, qosLevel, qosName, reasonCodeName, witError } from './wit.mjs';

/** QoS 0 messages kept for a slow pipeline before new ones are dropped. */
export const QOS0_QUEUE_LIMIT = 10_000;

/** The shortest reconnect delay, whatever the options say. */
const MIN_RECONNECT_MS = 10;

/** Delivery ids of lost connections remembered (see `ack`). */
const VOIDED_LIMIT = 65_536;

/** The largest packet MQTT can encode. */
const MQTT_MAX_PACKET = 1 + 4 + 268_435_455;

const invalid = (message) => witError('invalid-config', message);
const closed = () => witError('closed', 'the client is disconnected');
const notConnected = () => witError('connection-failed', 'not connected to the broker (reconnecting)');
const sendTimedOut = (ms) =>
  witError(
    'timeout',
    `not sent: the connection to the broker was lost and did not come back within send_timeout_ms (${ms} ms)`,
  );
const connectionLost = () =>
  witError('connection-failed', 'the connection to the broker was lost before the broker acknowledged it');
const acksUnconfirmed = (ms) =>
  witError(
    ms === 0 ? 'connection-failed' : 'timeout',
    `committed, but the connection to the broker was lost before it had the acknowledgements (PUBREC) and did not come back within send_timeout_ms (${ms} ms): they are sent on the next connection; if this process stops first, the broker delivers those messages again`,
  );

/** A 3.1.1 CONNACK return code as its 5.0 equivalent. */
function v5ReturnCode(code) {
  return { 1: 0x84, 2: 0x85, 3: 0x88, 4: 0x86, 5: 0x87 }[code] ?? 0x80;
}

function checkOptions(o) {
  if (o.inflightWindow === 0) {
    return invalid('inflight_window must be at least 1');
  }
  if (o.protocol === 'v5' && o.receiveMaximum === 0) {
    return invalid('receive_maximum must be at least 1');
  }
  if (o.connectTimeoutMs === 0) {
    return invalid('connect_timeout must be more than zero');
  }
  if (o.password !== undefined && o.username === undefined) {
    return invalid('a password needs a username');
  }
  if (o.will) {
    const why = topicNameProblem(o.will.topic);
    if (why) {
      return invalid(`invalid will topic '${o.will.topic}': ${why}`);
    }
  }
  return null;
}

/**
 * What keeps `topic` from being a topic name MQTT.js may send, if anything.
 * The connector checks every rule before it publishes; this guard only
 * keeps a bad name from costing the connection.
 */
function topicNameProblem(topic) {
  if (topic.length === 0) {
    return 'a topic name cannot be empty';
  }
  if (/[+#\u0000]/.test(topic)) {
    return 'a topic name cannot contain +, # or U+0000';
  }
  if (Buffer.byteLength(topic) > 65535) {
    return 'a topic name is at most 65535 bytes';
  }
  return null;
}

function readPem(what, file) {
  try {
    return readFileSync(file);
  } catch (e) {
    throw invalid(`cannot read ${what} ${file}: ${e.message}`);
  }
}

/** MQTT.js message properties from WIT `message-properties`. */
function toMqttProperties(p) {
  const out = {};
  if (p.payloadFormat !== undefined) out.payloadFormatIndicator = p.payloadFormat === 1;
  if (p.messageExpiry !== undefined) out.messageExpiryInterval = p.messageExpiry;
  if (p.contentType !== undefined) out.contentType = p.contentType;
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic;
  if (p.correlationData !== undefined) out.correlationData = Buffer.from(p.correlationData);
  if (p.userProperties.length > 0) {
    // MQTT.js keeps user properties in an object: a repeated name becomes
    // a list of values, in order.
    const user = {};
    for (const [name, value] of p.userProperties) {
      if (name in user) {
        user[name] = [].concat(user[name], value);
      } else {
        user[name] = value;
      }
    }
    out.userProperties = user;
  }
  return out;
}

/** WIT `message-properties` from a received packet's properties. */
function fromMqttProperties(p = {}) {
  const userProperties = [];
  for (const [name, value] of Object.entries(p.userProperties ?? {})) {
    for (const v of [].concat(value)) {
      userProperties.push([name, String(v)]);
    }
  }
  return {
    payloadFormat: p.payloadFormatIndicator === undefined ? undefined : p.payloadFormatIndicator ? 1 : 0,
    messageExpiry: p.messageExpiryInterval,
    contentType: p.contentType,
    responseTopic: p.responseTopic,
    correlationData: p.correlationData === undefined ? undefined : new Uint8Array(p.correlationData),
    userProperties,
  };
}

function defaultCapabilities(protocol) {
  return {
    protocol,
    sessionPresent: false,
    retainAvailable: true,
    maximumQos: 'exactly-once',
    wildcardSubscriptionAvailable: true,
    sharedSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: true,
    maximumPacketSize: undefined,
    topicAliasMaximum: 0,
    receiveMaximum: 65535,
  };
}

function capabilitiesFrom(protocol, connack) {
  const caps = defaultCapabilities(protocol);
  caps.sessionPresent = Boolean(connack.sessionPresent);
  const p = connack.properties;
  if (protocol === 'v5' && p) {
    if (p.retainAvailable !== undefined) caps.retainAvailable = Boolean(p.retainAvailable);
    if (p.maximumQoS !== undefined) caps.maximumQos = qosName(p.maximumQoS);
    if (p.wildcardSubscriptionAvailable !== undefined) {
      caps.wildcardSubscriptionAvailable = Boolean(p.wildcardSubscriptionAvailable);
    }
    if (p.sharedSubscriptionAvailable !== undefined) {
      caps.sharedSubscriptionAvailable = Boolean(p.sharedSubscriptionAvailable);
    }
    if (p.subscriptionIdentifiersAvailable !== undefined) {
      caps.subscriptionIdentifiersAvailable = Boolean(p.subscriptionIdentifiersAvailable);
    }
    caps.maximumPacketSize = p.maximumPacketSize;
    caps.topicAliasMaximum = p.topicAliasMaximum ?? 0;
    caps.receiveMaximum = p.receiveMaximum ?? 65535;
  }
  return caps;
}

function varintLength(n) {
  return n < 128 ? 1 : n < 16_384 ? 2 : n < 2_097_152 ? 3 : 4;
}

/** The size of the PUBLISH packet for `m`, as a broker counts it. */
function publishPacketSize(m, protocol) {
  let remaining = 2 + Buffer.byteLength(m.topic) + m.payload.length;
  if (m.qos !== 'at-most-once') remaining += 2;
  if (protocol === 'v5') {
    const p = m.properties;
    let props = 0;
    if (p.payloadFormat !== undefined) props += 2;
    if (p.messageExpiry !== undefined) props += 5;
    if (p.contentType !== undefined) props += 3 + Buffer.byteLength(p.contentType);
    if (p.responseTopic !== undefined) props += 3 + Buffer.byteLength(p.responseTopic);
    if (p.correlationData !== undefined) props += 3 + p.correlationData.length;
    for (const [name, value] of p.userProperties) {
      props += 5 + Buffer.byteLength(name) + Buffer.byteLength(value);
    }
    remaining += varintLength(props) + props;
  }
  return 1 + varintLength(remaining) + remaining;
}

/** Turns an MQTT.js failure of a CONNECT into a WIT error. */
function connectError(url, protocol, e) {
  if (e && typeof e.code === 'number') {
    const code = protocol === 'v5' ? e.code : v5ReturnCode(e.code);
    const kind = code === 0x86 || code === 0x87 ? 'not-authorized' : 'connection-failed';
    return witError(kind, `${url} refused the connection: ${reasonCodeName(code)}`, code);
  }
  return witError('connection-failed', `cannot connect to ${url}: ${e?.message ?? e}`);
}

/** A connection to one MQTT broker. */
export class MqttClient {
  #client;
  #url;
  #protocol;
  #phase = 'connecting'; // connecting | up | down | closed
  #caps;
  #window;
  #connectTimeoutMs;
  #reconnectMinMs;
  #reconnectMaxMs;
  #reconnectDelay;
  #reconnectTimer = null;
  #sendTimeoutMs;
  // Set while an outage runs; fires when it outlasts the send timeout.
  #outageTimer = null;
  // The outage outlasted the send timeout: publishes fail at once.
  #expired = false;
  #log;
  #yieldRequested;

  // Outgoing: messages waiting for the window, and QoS 1/2 ones in flight.
  #outbox = [];
  #pumpScheduled = false;
  #inflight = 0;
  #pending = new Set();

  // Incoming: deliveries ready for `receive`, and QoS 1/2 ones not acked,
  // in arrival order (a Map keeps insertion order).
  #ready = [];
  #qos0Ready = 0;
  #droppedQos0 = 0;
  #nextId = 1n;
  #unacked = new Map();
  #unackedByPkid = new Map();
  // QoS 2 deliveries acknowledged with PUBREC and not yet released: the
  // broker sends one again (DUP) when our PUBREC was lost, and it must not
  // reach the pipeline twice (MQTT-4.3.3-10).
  #awaitingRelease = new Set();
  // PUBRECs handed to MQTT.js that the broker has not released with its
  // PUBREL yet: written is not enough, a connection reset can discard them
  // unread. Not `#awaitingRelease`: a send timeout forgets these (their
  // waiters were answered) but keeps that for recognising resends.
  #unreleasedPubrecs = new Set();
  // Calls of `ack` waiting for PUBRELs: `{ pkids, resolve, reject }`, each
  // with the identifiers it still waits for.
  #ackWaiters = [];
  // QoS 1 and 2 delivery ids of lost connections, oldest first.
  #voided = new Set();
  #receiveWaiter = null;
  #connectedWaiters = new Set();

  // Subscriptions granted, to restore when a new session starts.
  #subscriptions = new Map();

  /**
   * Connects and waits for the CONNACK, at most the connect timeout.
   *
   * @param options WIT `connect-options`
   * @param host `{ log(level, message), shouldYield() }`: where log lines
   *   go, and whether a waiting `receive` should return at once
   * @returns the client, or throws a WIT `error`
   */
  static async connect(options, host) {
    const problem = checkOptions(options);
    if (problem) {
      throw problem;
    }
    const client = new MqttClient(options, host);
    await client.#start(options);
    return client;
  }

  constructor(options, host) {
    this.#url = options.url;
    this.#protocol = options.protocol;
    this.#caps = defaultCapabilities(options.protocol);
    this.#window = Math.max(1, options.inflightWindow);
    this.#connectTimeoutMs = options.connectTimeoutMs;
    this.#reconnectMinMs = Math.max(MIN_RECONNECT_MS, options.reconnectMinMs);
    this.#reconnectMaxMs = Math.max(this.#reconnectMinMs, options.reconnectMaxMs);
    this.#reconnectDelay = this.#reconnectMinMs;
    this.#sendTimeoutMs = options.sendTimeoutMs ?? 30_000;
    this.#log = host.log;
    this.#yieldRequested = host.shouldYield ?? (() => false);
  }

  #mqttOptions(o) {
    const v5 = o.protocol === 'v5';
    const opts = {
      protocolVersion: v5 ? 5 : 4,
      clientId: o.clientId,
      username: o.username,
      password: o.password,
      keepalive: o.keepAliveSecs,
      clean: o.cleanStart,
      connectTimeout: o.connectTimeoutMs,
      // Reconnects are the client's own (doubling delay, resubscribe).
      reconnectPeriod: 0,
      resubscribe: false,
      queueQoSZero: false,
      messageIdProvider: new mqtt.UniqueMessageIdProvider(),
    };
    if (v5) {
      opts.properties = {
        sessionExpiryInterval: o.sessionExpirySecs,
        receiveMaximum: o.receiveMaximum,
      };
    }
    if (o.will) {
      const w = o.will;
      opts.will = {
        topic: w.topic,
        payload: Buffer.from(w.payload),
        qos: qosLevel(w.qos),
        retain: w.retain,
      };
      if (v5) {
        opts.will.properties = toMqttProperties(w.properties);
        if (w.delayInterval !== undefined) {
          opts.will.properties.willDelayInterval = w.delayInterval;
        }
      }
    }
    if (/^mqtts:/i.test(o.url)) {
      const tls = o.tls ?? { alpn: [] };
      if (tls.caFile !== undefined) opts.ca = readPem('ca_file', tls.caFile);
      if (tls.clientCertFile !== undefined) opts.cert = readPem('client_cert_file', tls.clientCertFile);
      if (tls.clientKeyFile !== undefined) opts.key = readPem('client_key_file', tls.clientKeyFile);
      if (tls.alpn.length > 0) opts.ALPNProtocols = tls.alpn;
      opts.rejectUnauthorized = true;
    } else if (o.tls) {
      this.#log('warn', `tls options ignored for a plain mqtt:// url ${o.url}`);
    }
    return opts;
  }

  async #start(options) {
    let opts;
    try {
      opts = this.#mqttOptions(options);
    } catch (e) {
      throw e.code ? e : invalid(String(e.message ?? e));
    }
    // MQTT.js speaks mqtt: and mqtts:; the connector checked the URL.
    const url = options.url.replace(/^(mqtts?):\/\//i, (_, s) => `${s.toLowerCase()}://`);
    let client;
    try {
      client = mqtt.connect(url, opts);
    } catch (e) {
      throw witError('invalid-config', `invalid broker url '${options.url}': ${e.message}`);
    }
    this.#client = client;
    this.#intercept(client);
    // MQTT.js writes a packet in several pieces; without this, Nagle's
    // algorithm holds each piece until the last one is acknowledged.
    client.stream.setNoDelay?.(true);
    client.on('connect', () => client.stream.setNoDelay?.(true));
    // Attached before the first packet can arrive: a resumed session may
    // deliver right after the CONNACK.
    client.on('packetreceive', (packet) => {
      if (packet.cmd === 'publish') {
        this.#onPublish(packet);
      } else if (packet.cmd === 'pubrel') {
        this.#awaitingRelease.delete(packet.messageId);
        this.#settleRelease(packet.messageId);
      }
    });
    client.on('error', (e) => this.#log('debug', `mqtt client ${this.#url}: ${e.message}`));
    await new Promise((resolve, reject) => {
      let settled = false;
      const finish = (error) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        client.removeListener('connect', onConnect);
        client.removeListener('error', onError);
        client.removeListener('close', onClose);
        if (error) {
          this.#phase = 'closed';
          client.end(true);
          reject(error);
        } else {
          resolve();
        }
      };
      const onConnect = () => finish(null);
      const onError = (e) => finish(connectError(this.#url, this.#protocol, e));
      const onClose = () => finish(witError('connection-failed', `cannot connect to ${this.#url}: connection closed`));
      const timer = setTimeout(
        () => finish(witError('timeout', `no answer from ${this.#url} within the connect timeout`)),
        this.#connectTimeoutMs,
      );
      client.on('connect', onConnect);
      client.on('error', onError);
      client.on('close', onClose);
    });
    this.#onConnect(client.connackPacket ?? {});
    client.on('connect', (connack) => this.#onConnect(connack));
    client.on('close', () => this.#onClose());
  }

  /** Holds each success PUBACK / PUBREC MQTT.js writes until `ack`. */
  #intercept(client) {
    const send = client._sendPacket.bind(client);
    client._sendPacket = (packet, cb, cbStorePut, noStore) => {
      if ((packet.cmd === 'puback' || packet.cmd === 'pubrec') && !packet.reasonCode) {
        const id = this.#unackedByPkid.get(packet.messageId);
        const delivery = id === undefined ? undefined : this.#unacked.get(id);
        if (delivery) {
          // A retransmission's ack is the same packet: held once.
          delivery.sendAck ??= () => send(packet, undefined, cbStorePut, noStore);
          // MQTT.js goes on with the next packet now.
          if (cb) cb();
          this.#flushAcks();
          return;
        }
      }
      send(packet, cb, cbStorePut, noStore);
    };
  }

  #onConnect(connack) {
    if (this.#phase === 'closed') return;
    this.#caps = capabilitiesFrom(this.#protocol, connack);
    this.#phase = 'up';
    this.#reconnectDelay = this.#reconnectMinMs;
    clearTimeout(this.#outageTimer);
    this.#outageTimer = null;
    this.#expired = false;
    for (const wake of this.#connectedWaiters) wake();
    this.#connectedWaiters.clear();
    // A new session forgets what waited for release: the broker sends
    // none of those messages again.
    if (!this.#caps.sessionPresent) {
      this.#awaitingRelease.clear();
      this.#endAckWaiters(null);
    }
    if (!this.#caps.sessionPresent && this.#subscriptions.size > 0) {
      this.#log('info', `new session: restoring ${this.#subscriptions.size} subscription(s)`);
      const subs = [...this.#subscriptions.values()];
      this.#sendSubscribe(subs).then(
        (granted) => {
          for (const g of granted) {
            if (g.qos === undefined) {
              this.#subscriptions.delete(g.filter);
              this.#log('warn', `the broker refused to restore the subscription to ${g.filter}: ${reasonCodeName(g.reasonCode)}`);
            }
          }
        },
        (e) => this.#log('warn', `restoring subscriptions failed: ${e.message}`),
      );
    }
    this.#pump();
  }

  #onClose() {
    if (this.#phase === 'closed') return;
    const wasUp = this.#phase === 'up';
    this.#phase = 'down';
    if (wasUp) {
      this.#log('warn', `connection to ${this.#url} lost; reconnecting`);
    }
    // Messages in flight fail; MQTT.js may still resend them when the
    // session resumes, so a retry may duplicate.
    for (const resolve of this.#pending) resolve(err(connectionLost()));
    this.#pending.clear();
    this.#inflight = 0;
    // Messages not yet written wait for the next connection.
    // So do PUBRECs the broker has not released: its PUBREL comes then.
    if (this.#sendTimeoutMs === 0) {
      for (const { resolve } of this.#outbox.splice(0)) resolve(err(connectionLost()));
      this.#endAckWaiters(acksUnconfirmed(0));
    } else if (wasUp) {
      this.#outageTimer = setTimeout(() => {
        this.#outageTimer = null;
        this.#expired = true;
        for (const { resolve } of this.#outbox.splice(0)) resolve(err(sendTimedOut(this.#sendTimeoutMs)));
        this.#endAckWaiters(acksUnconfirmed(this.#sendTimeoutMs));
      }, this.#sendTimeoutMs);
    }
    // Deliveries of the lost connection are void: the broker redelivers.
    this.#ready = this.#ready.filter((m) => m.qos === 'at-most-once');
    for (const id of this.#unacked.keys()) this.#voided.add(id);
    for (const id of this.#voided) {
      if (this.#voided.size <= VOIDED_LIMIT) break;
      this.#voided.delete(id);
    }
    this.#unacked.clear();
    this.#unackedByPkid.clear();
    this.#scheduleReconnect();
  }

  #scheduleReconnect() {
    if (this.#reconnectTimer || this.#phase === 'closed') return;
    const delay = this.#reconnectDelay;
    this.#reconnectDelay = Math.min(this.#reconnectMaxMs, delay * 2);
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (this.#phase !== 'down') return;
      const c = this.#client;
      // The stores carry a resumed session's QoS 1 and 2 state.
      c.reconnect({ incomingStore: c.incomingStore, outgoingStore: c.outgoingStore });
    }, delay);
  }

  /** Waits, at most the connect timeout, while the client reconnects. */
  async #waitConnected() {
    if (this.#phase !== 'connecting' && this.#phase !== 'down') return;
    await new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#connectedWaiters.delete(wake);
        resolve();
      };
      const timer = setTimeout(wake, this.#connectTimeoutMs);
      this.#connectedWaiters.add(wake);
    });
  }

  #refusal() {
    switch (this.#phase) {
      case 'up':
        return null;
      case 'closed':
        return closed();
      default:
        return notConnected();
    }
  }

  /** The broker's capabilities from its last CONNACK. */
  capabilities() {
    return this.#caps;
  }

  /** QoS 0 messages dropped so far because `receive` did not keep up. */
  droppedMessages() {
    return this.#droppedQos0;
  }

  #checkMessage(m) {
    const why = topicNameProblem(m.topic);
    if (why) {
      return witError('invalid-document', `invalid topic name '${m.topic}': ${why}`);
    }
    if (this.#protocol === 'v5') {
      if (qosLevel(m.qos) > qosLevel(this.#caps.maximumQos)) {
        return witError(
          'unsupported',
          `QoS ${qosLevel(m.qos)} is above the broker's maximum QoS ${qosLevel(this.#caps.maximumQos)}`,
          0x9b,
        );
      }
      if (m.retain && !this.#caps.retainAvailable) {
        return witError('unsupported', 'the broker does not support retained messages', 0x9a);
      }
    }
    const size = publishPacketSize(m, this.#protocol);
    const max = this.#protocol === 'v5' && this.#caps.maximumPacketSize !== undefined
      ? Math.min(this.#caps.maximumPacketSize, MQTT_MAX_PACKET)
      : MQTT_MAX_PACKET;
    if (size > max) {
      return witError('invalid-document', `the message is ${size} bytes, more than the maximum packet size ${max}`, 0x95);
    }
    return null;
  }

  /**
   * Publishes a batch and returns one WIT result per message, in order,
   * each after its acknowledgement.
   */
  async publish(batch) {
    if (this.#phase === 'connecting') await this.#waitConnected();
    const outcomes = batch.map((m) => {
      let refused;
      if (this.#phase === 'down') {
        refused = this.#expired ? sendTimedOut(this.#sendTimeoutMs) : null;
      } else {
        refused = this.#refusal();
      }
      refused ??= this.#checkMessage(m);
      if (refused) {
        return Promise.resolve(err(refused));
      }
      return new Promise((resolve) => this.#outbox.push({ message: m, resolve }));
    });
    this.#pump();
    return Promise.all(outcomes);
  }

  /** Writes queued messages in order while the window allows. */
  #pump() {
    const window = Math.min(this.#window, this.#caps.receiveMaximum);
    while (this.#phase === 'up' && this.#outbox.length > 0) {
      const { message: m } = this.#outbox[0];
      const level = qosLevel(m.qos);
      if (level > 0 && this.#inflight >= window) break;
      const { resolve } = this.#outbox.shift();
      const opts = { qos: level, retain: m.retain };
      if (this.#protocol === 'v5') opts.properties = toMqttProperties(m.properties);
      if (level > 0) {
        this.#inflight += 1;
        this.#pending.add(resolve);
      }
      this.#client.publish(m.topic, Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.length), opts, (e) => {
        if (level > 0) {
          // Settled already when the connection dropped.
          if (!this.#pending.delete(resolve)) return;
          this.#inflight -= 1;
        }
        if (!e) {
          resolve(ok(undefined));
        } else if (typeof e.code === 'number') {
          resolve(err(witError('broker-rejected', `the broker rejected the message: ${reasonCodeName(e.code)}`, e.code)));
        } else if (this.#phase === 'closed') {
          resolve(err(closed()));
        } else {
          resolve(err(connectionLost()));
        }
        this.#pumpSoon();
      });
    }
  }

  /**
   * Pumps once the acknowledgements read so far are all handled (MQTT.js
   * handles one packet per tick), so that the messages they make room for
   * go out in one write.
   */
  #pumpSoon() {
    if (this.#pumpScheduled) return;
    this.#pumpScheduled = true;
    setImmediate(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /**
   * Subscribes; the broker's answer per filter, in order. A refused filter
   * comes back without a QoS, with its reason code. Throws a WIT `error`.
   */
  async subscribe(subs) {
    for (const s of subs) {
      if (s.filter.length === 0 || /\u0000/.test(s.filter)) {
        throw invalid(`invalid topic filter '${s.filter}': a topic filter cannot be empty or contain U+0000`);
      }
      if (s.retainHandling > 2) {
        throw invalid(`retain_handling of '${s.filter}' must be 0, 1 or 2`);
      }
      if (this.#protocol === 'v5' && s.noLocal && s.filter.startsWith('$share/')) {
        throw invalid(`no_local cannot be set on the shared subscription '${s.filter}'`);
      }
    }
    if (subs.length === 0) {
      if (this.#phase === 'closed') throw closed();
      return [];
    }
    // Subscribing again is harmless, so a connection lost before the SUBACK
    // is retried on the next connection.
    for (let attempt = 1; ; attempt += 1) {
      await this.#waitConnected();
      const refused = this.#refusal();
      if (refused) throw refused;
      try {
        const granted = await this.#sendSubscribe(subs);
        for (const [i, g] of granted.entries()) {
          if (g.qos !== undefined) this.#subscriptions.set(g.filter, subs[i]);
        }
        return granted;
      } catch (e) {
        if (e.code === 'connection-failed' && attempt < 3) continue;
        throw e;
      }
    }
  }

  #sendSubscribe(subs) {
    const request = {};
    for (const s of subs) {
      request[s.filter] = {
        qos: qosLevel(s.qos),
        nl: s.noLocal,
        rap: s.retainAsPublished,
        rh: s.retainHandling,
      };
    }
    return new Promise((resolve, reject) => {
      this.#client.subscribe(request, (e, _granted, packet) => {
        const codes = packet?.granted;
        if (!Array.isArray(codes)) {
          reject(e && this.#phase !== 'closed' ? connectionLost() : closed());
          return;
        }
        const byFilter = new Map(Object.keys(request).map((filter, i) => [filter, codes[i] ?? 0x80]));
        resolve(subs.map((s) => {
          const code = byFilter.get(s.filter);
          return { filter: s.filter, qos: code < 0x80 ? qosName(code) : undefined, reasonCode: code };
        }));
      });
    });
  }

  /** Unsubscribes from each filter; throws the first failure. */
  async unsubscribe(filters) {
    const refused = this.#refusal();
    if (refused) throw refused;
    for (const f of filters) this.#subscriptions.delete(f);
    await Promise.all(filters.map((f) => new Promise((resolve, reject) => {
      this.#client.unsubscribe(f, (e, packet) => {
        const code = packet?.reasonCode;
        if (typeof code === 'number' && code >= 0x80) {
          reject(witError('broker-rejected', `the broker rejected the unsubscribe: ${reasonCodeName(code)}`, code));
        } else if (e) {
          reject(this.#phase === 'closed' ? closed() : connectionLost());
        } else {
          resolve();
        }
      });
    })));
  }

  #onPublish(packet) {
    if (this.#phase === 'closed') return;
    const qos = qosName(packet.qos);
    if (packet.qos === 0) {
      if (this.#qos0Ready >= QOS0_QUEUE_LIMIT) {
        this.#droppedQos0 += 1;
        if (this.#droppedQos0 === 1 || this.#droppedQos0 % 1000 === 0) {
          this.#log('warn', `incoming queue full: ${this.#droppedQos0} QoS 0 message(s) dropped`);
        }
        return;
      }
      this.#qos0Ready += 1;
    } else if (this.#unackedByPkid.has(packet.messageId)) {
      // The broker cannot reuse an identifier not yet acknowledged: this
      // is a retransmission of a delivery the pipeline has.
      return;
    } else if (packet.qos === 2 && this.#awaitingRelease.has(packet.messageId)) {
      // Taken already; MQTT.js sends the PUBREC again.
      return;
    }
    const id = this.#nextId;
    this.#nextId += 1n;
    if (packet.qos > 0) {
      this.#unacked.set(id, { pkid: packet.messageId, qos: packet.qos, acked: false, sendAck: null });
      this.#unackedByPkid.set(packet.messageId, id);
    }
    const p = packet.properties ?? {};
    const subscriptionIds = p.subscriptionIdentifier === undefined ? [] : [].concat(p.subscriptionIdentifier);
    this.#ready.push({
      id,
      topic: packet.topic,
      payload: new Uint8Array(packet.payload),
      qos,
      retain: Boolean(packet.retain),
      duplicate: Boolean(packet.dup),
      properties: fromMqttProperties(p),
      subscriptionIds: Uint32Array.from(subscriptionIds),
    });
    this.#wakeReceiver();
  }

  #wakeReceiver() {
    if (this.#receiveWaiter) this.#receiveWaiter();
  }

  /** Ends a waiting `receive` now, with whatever is ready. */
  interrupt() {
    this.#wakeReceiver();
  }

  #take(max) {
    const batch = this.#ready.splice(0, max);
    this.#qos0Ready -= batch.filter((m) => m.qos === 'at-most-once').length;
    return batch;
  }

  /**
   * Waits up to `timeoutMs` for the first delivery and returns at most
   * `max`, oldest first. Throws a WIT `error` once closed.
   */
  async receive(max, timeoutMs) {
    if (this.#phase === 'closed') throw closed();
    if (max === 0) return [];
    if (this.#ready.length > 0 || timeoutMs === 0 || this.#yieldRequested()) {
      return this.#take(max);
    }
    await new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#receiveWaiter = null;
        resolve();
      };
      const timer = setTimeout(wake, timeoutMs);
      this.#receiveWaiter = wake;
    });
    if (this.#phase === 'closed') throw closed();
    return this.#take(max);
  }

  /**
   * Acknowledges deliveries: each PUBACK / PUBREC goes out once every
   * earlier QoS 1 or 2 delivery is acknowledged too. Unknown ids and QoS 0
   * ids are ignored. Resolves once the broker has answered every PUBREC
   * handed to MQTT.js so far with its PUBREL, so a crash after it cannot
   * make the broker send those QoS 2 messages again (a PUBACK is not
   * waited for: QoS 1 allows the message again). A PUBREC the connection
   * lost waits for the next connection up to the send timeout, then
   * throws `timeout`. Throws `connection-failed` for ids of a connection
   * since lost: the broker delivers those again (the others are
   * acknowledged).
   */
  async ack(ids) {
    if (this.#phase === 'closed') throw closed();
    let voided = 0;
    for (const id of ids) {
      const delivery = this.#unacked.get(BigInt(id));
      if (delivery) {
        delivery.acked = true;
      } else if (this.#voided.delete(BigInt(id))) {
        voided += 1;
      }
    }
    this.#flushAcks();
    await this.#acksReleased();
    if (voided > 0) {
      throw witError(
        'connection-failed',
        `${voided} of the ${ids.length} deliveries acknowledged came on a connection since lost: they are not acknowledged, and the broker delivers them again`,
      );
    }
  }

  #flushAcks() {
    for (const [id, delivery] of this.#unacked) {
      // The front waits for its ack, or for MQTT.js to have written it.
      if (!delivery.acked || !delivery.sendAck) break;
      this.#unacked.delete(id);
      this.#unackedByPkid.delete(delivery.pkid);
      if (delivery.qos === 2) {
        this.#awaitingRelease.add(delivery.pkid);
        this.#unreleasedPubrecs.add(delivery.pkid);
      }
      delivery.sendAck();
    }
  }

  /** Resolves once the PUBRECs unreleased now are released. */
  #acksReleased() {
    if (this.#unreleasedPubrecs.size === 0) return Promise.resolve();
    const pkids = new Set(this.#unreleasedPubrecs);
    return new Promise((resolve, reject) => this.#ackWaiters.push({ pkids, resolve, reject }));
  }

  #settleRelease(pkid) {
    if (!this.#unreleasedPubrecs.delete(pkid)) return;
    // Called for every PUBREL: waiters change in place, no array per call.
    // An identifier released here and reused by a later delivery is not
    // waited for again.
    for (let i = this.#ackWaiters.length - 1; i >= 0; i -= 1) {
      const waiter = this.#ackWaiters[i];
      waiter.pkids.delete(pkid);
      if (waiter.pkids.size === 0) {
        this.#ackWaiters.splice(i, 1);
        waiter.resolve();
      }
    }
  }

  /** Forgets every unreleased PUBREC; its waiters resolve, or get `error`. */
  #endAckWaiters(error) {
    this.#unreleasedPubrecs.clear();
    for (const waiter of this.#ackWaiters.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve();
    }
  }

  #shutdown(error) {
    this.#phase = 'closed';
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    clearTimeout(this.#outageTimer);
    this.#outageTimer = null;
    for (const resolve of this.#pending) resolve(err(error));
    this.#pending.clear();
    for (const { resolve } of this.#outbox.splice(0)) resolve(err(error));
    this.#ready = [];
    this.#qos0Ready = 0;
    this.#unacked.clear();
    this.#unackedByPkid.clear();
    this.#endAckWaiters(error);
    for (const wake of this.#connectedWaiters) wake();
    this.#wakeReceiver();
  }

  /**
   * Disconnects with a normal DISCONNECT, so the broker discards the will.
   * Every later call fails with `closed`.
   */
  async disconnect() {
    if (this.#phase === 'closed') return;
    const wasUp = this.#phase === 'up';
    this.#shutdown(closed());
    const client = this.#client;
    await new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#log('warn', 'the DISCONNECT was not written in time; dropping the connection');
        client.end(true, resolve);
      }, this.#connectTimeoutMs + 1000);
      client.end(!wasUp, () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /**
   * Drops the connection without a DISCONNECT, as a crash would: the broker
   * keeps the session and publishes the will.
   */
  drop() {
    if (this.#phase === 'closed') return;
    this.#shutdown(closed());
    this.#client.end(true);
  }
}
