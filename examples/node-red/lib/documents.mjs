// Node-RED messages and the connector's documents (bytes plus named
// properties, the WIT `document`). The connector decides what a property
// means and whether it is valid; this only carries values across.
//
// msg -> document (Send):
//   msg.payload   Buffer as is, string as UTF-8, anything else as JSON
//   msg.topic     mqtt.topic
//   msg.qos       mqtt.qos
//   msg.retain    mqtt.retained
//   msg.properties.payloadFormatIndicator  mqtt.payload-format
//                 .messageExpiryInterval   mqtt.message-expiry
//                 .contentType             mqtt.content-type
//                 .responseTopic           mqtt.response-topic
//                 .correlationData         mqtt.correlation-data
//                 .userProperties          mqtt.user-properties
// document -> msg (Listen): the same fields, plus msg.duplicate and
// msg.properties.subscriptionIdentifier.

/** Document property names the nodes map. */
export const NAMES = {
  topic: 'mqtt.topic',
  qos: 'mqtt.qos',
  retained: 'mqtt.retained',
  duplicate: 'mqtt.duplicate',
  messageExpiry: 'mqtt.message-expiry',
  contentType: 'mqtt.content-type',
  payloadFormat: 'mqtt.payload-format',
  responseTopic: 'mqtt.response-topic',
  correlationData: 'mqtt.correlation-data',
  userProperties: 'mqtt.user-properties',
  subscriptionIds: 'mqtt.subscription-ids',
};

const encoder = new TextEncoder();
const strictDecoder = new TextDecoder('utf-8', { fatal: true });

function bytes(value) {
  if (value instanceof Uint8Array) {
    return value;
  }
  if (value === undefined || value === null) {
    return new Uint8Array(0);
  }
  if (typeof value === 'string') {
    return encoder.encode(value);
  }
  return encoder.encode(JSON.stringify(value));
}

/**
 * A JavaScript value as a WIT `value`: the connector says whether it is
 * the right kind for the property.
 */
function toValue(v) {
  if (typeof v === 'boolean') return { tag: 'boolean', val: v };
  if (typeof v === 'bigint') return { tag: 'integer', val: v };
  if (typeof v === 'number' && Number.isSafeInteger(v)) return { tag: 'integer', val: BigInt(v) };
  if (typeof v === 'string' && /^-?\d{1,15}$/.test(v)) return { tag: 'integer', val: BigInt(v) };
  if (v instanceof Uint8Array) return { tag: 'binary', val: v };
  return { tag: 'text', val: String(v) };
}

function flag(v) {
  if (v === 'true') return { tag: 'boolean', val: true };
  if (v === 'false') return { tag: 'boolean', val: false };
  return toValue(v);
}

function userPairs(v) {
  const pairs = [];
  if (Array.isArray(v)) {
    for (const pair of v) {
      if (Array.isArray(pair) && pair.length === 2) pairs.push([String(pair[0]), String(pair[1])]);
    }
  } else if (v && typeof v === 'object') {
    for (const [name, value] of Object.entries(v)) {
      for (const one of [].concat(value)) pairs.push([name, String(one)]);
    }
  }
  return pairs;
}

/**
 * The document for a message. `overrides` is the Send configuration's
 * `overrides` object: a message field whose override is off is left out
 * (Node-RED messages carry msg.topic and friends from upstream nodes), so
 * the configuration's value applies instead of failing the document.
 */
export function messageToDocument(msg, id, overrides = {}) {
  const properties = [];
  const add = (name, value) => properties.push({ name, value });
  const allowed = (key) => overrides[key] !== false;
  if (allowed('topic') && typeof msg.topic === 'string' && msg.topic !== '') {
    add(NAMES.topic, { tag: 'text', val: msg.topic });
  }
  if (allowed('qos') && msg.qos !== undefined && msg.qos !== null && msg.qos !== '') {
    add(NAMES.qos, toValue(msg.qos));
  }
  if (allowed('retained') && msg.retain !== undefined && msg.retain !== null && msg.retain !== '') {
    add(NAMES.retained, flag(msg.retain));
  }
  const p = msg.properties;
  if (allowed('properties') && p && typeof p === 'object') {
    if (p.payloadFormatIndicator !== undefined) {
      const v = p.payloadFormatIndicator;
      add(NAMES.payloadFormat, typeof v === 'boolean' ? toValue(v ? 1 : 0) : toValue(v));
    }
    if (p.messageExpiryInterval !== undefined) add(NAMES.messageExpiry, toValue(p.messageExpiryInterval));
    if (p.contentType !== undefined) add(NAMES.contentType, { tag: 'text', val: String(p.contentType) });
    if (p.responseTopic !== undefined) add(NAMES.responseTopic, { tag: 'text', val: String(p.responseTopic) });
    if (p.correlationData !== undefined) {
      const c = p.correlationData;
      add(NAMES.correlationData, c instanceof Uint8Array ? { tag: 'binary', val: c } : { tag: 'text', val: String(c) });
    }
    if (p.userProperties !== undefined) add(NAMES.userProperties, { tag: 'pairs', val: userPairs(p.userProperties) });
  }
  return { id: BigInt(id), payload: bytes(msg.payload), properties };
}

/** How a received payload becomes msg.payload. */
export const PAYLOAD_FORMS = ['auto', 'string', 'buffer', 'json'];

function payloadOf(data, form) {
  const buffer = Buffer.from(data.buffer, data.byteOffset, data.length);
  switch (form) {
    case 'buffer':
      return buffer;
    case 'string':
      return buffer.toString('utf8');
    case 'json':
      return JSON.parse(buffer.toString('utf8'));
    default:
      try {
        return strictDecoder.decode(data);
      } catch {
        return buffer;
      }
  }
}

/**
 * The message for a received document, `{ payload, topic, qos, retain,
 * duplicate, properties }`. Throws when `form` is 'json' and the payload is
 * not JSON.
 */
export function documentToMessage(doc, form = 'auto') {
  const msg = { payload: payloadOf(doc.payload, form), properties: {} };
  const props = msg.properties;
  for (const { name, value } of doc.properties) {
    const v = typeof value.val === 'bigint' ? Number(value.val) : value.val;
    switch (name) {
      case NAMES.topic: msg.topic = v; break;
      case NAMES.qos: msg.qos = v; break;
      case NAMES.retained: msg.retain = v; break;
      case NAMES.duplicate: msg.duplicate = v; break;
      case NAMES.payloadFormat: props.payloadFormatIndicator = v === 1; break;
      case NAMES.messageExpiry: props.messageExpiryInterval = v; break;
      case NAMES.contentType: props.contentType = v; break;
      case NAMES.responseTopic: props.responseTopic = v; break;
      case NAMES.correlationData: props.correlationData = Buffer.from(v); break;
      case NAMES.userProperties: {
        const user = {};
        for (const [k, one] of v) user[k] = k in user ? [].concat(user[k], one) : one;
        props.userProperties = user;
        break;
      }
      case NAMES.subscriptionIds: {
        const ids = String(v).split(',').filter(Boolean).map(Number);
        props.subscriptionIdentifier = ids.length === 1 ? ids[0] : ids;
        break;
      }
      default:
        break;
    }
  }
  return msg;
}
