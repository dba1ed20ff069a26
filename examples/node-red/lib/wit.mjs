// The WIT world's types as jco represents them in JavaScript: records with
// camelCase fields, enums as their kebab-case names, `option` as a value or
// undefined, `u64` as BigInt, `result` as `{ tag: 'ok' | 'err', val }`.
// Helpers to build and read them, shared by the host (lib/mqtt-client.mjs)
// and the nodes (lib/documents.mjs).

/** QoS enum names, indexed by level. */
export const QOS_NAMES = ['at-most-once', 'at-least-once', 'exactly-once'];

/** The level 0, 1 or 2 of a WIT `qos`. */
export function qosLevel(name) {
  const level = QOS_NAMES.indexOf(name);
  if (level < 0) {
    throw new TypeError(`not a qos: ${name}`);
  }
  return level;
}

/** The WIT `qos` of a level 0, 1 or 2. */
export function qosName(level) {
  const name = QOS_NAMES[level];
  if (name === undefined) {
    throw new TypeError(`not a qos level: ${level}`);
  }
  return name;
}

/** A WIT `error` record. */
export function witError(code, message, reasonCode) {
  return { code, message, reasonCode, documentIndex: undefined };
}

/** An `ok` result. */
export const ok = (val) => ({ tag: 'ok', val });

/** An `err` result. */
export const err = (val) => ({ tag: 'err', val });

/** MQTT 5.0 reason code names, as the connector's model names them. */
const REASON_NAMES = {
  0x00: 'Success',
  0x01: 'Granted QoS 1',
  0x02: 'Granted QoS 2',
  0x04: 'Disconnect with Will Message',
  0x10: 'No matching subscribers',
  0x11: 'No subscription existed',
  0x80: 'Unspecified error',
  0x81: 'Malformed Packet',
  0x82: 'Protocol Error',
  0x83: 'Implementation specific error',
  0x84: 'Unsupported Protocol Version',
  0x85: 'Client Identifier not valid',
  0x86: 'Bad User Name or Password',
  0x87: 'Not authorized',
  0x88: 'Server unavailable',
  0x89: 'Server busy',
  0x8a: 'Banned',
  0x8b: 'Server shutting down',
  0x8c: 'Bad authentication method',
  0x8d: 'Keep Alive timeout',
  0x8e: 'Session taken over',
  0x8f: 'Topic Filter invalid',
  0x90: 'Topic Name invalid',
  0x91: 'Packet Identifier in use',
  0x92: 'Packet Identifier not found',
  0x93: 'Receive Maximum exceeded',
  0x94: 'Topic Alias invalid',
  0x95: 'Packet too large',
  0x96: 'Message rate too high',
  0x97: 'Quota exceeded',
  0x98: 'Administrative action',
  0x99: 'Payload format invalid',
  0x9a: 'Retain not supported',
  0x9b: 'QoS not supported',
  0x9c: 'Use another server',
  0x9d: 'Server moved',
  0x9e: 'Shared Subscriptions not supported',
  0x9f: 'Connection rate exceeded',
  0xa0: 'Maximum connect time',
  0xa1: 'Subscription Identifiers not supported',
  0xa2: 'Wildcard Subscriptions not supported',
};

/** The name of an MQTT 5.0 reason code. */
export function reasonCodeName(code) {
  return REASON_NAMES[code] ?? 'unknown reason code';
}
