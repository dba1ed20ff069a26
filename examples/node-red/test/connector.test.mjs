// The component in the JavaScript host, without Node-RED: its exports,
// the deny-by-default capability, and acknowledgements in arrival order,
// against the built-in broker.

import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ConnectorError, Listener, Sender, describe as describeConnector, validate } from '../lib/connector.mjs';
import { startBroker, startTrap } from './support/broker.mjs';
import { startScriptedBroker } from './support/scripted-broker.mjs';
import { sleep, within } from './support/wait.mjs';

let broker;
let trap;

before(async () => {
  broker = await startBroker();
  trap = await startTrap();
});

after(async () => {
  await trap?.stop();
  await broker?.stop();
});

const text = (s) => new TextEncoder().encode(s);
const decode = (d) => new TextDecoder().decode(d.payload);
const only = (url) => ({ allow: (u) => u === url });

async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('expected a rejection');
}

/** Documents until `count` came, or nothing more comes. */
async function take(listener, count) {
  const docs = [];
  while (docs.length < count) {
    const batch = await listener.next(count - docs.length, 5000);
    if (batch.length === 0) break;
    docs.push(...batch);
  }
  return docs;
}

describe('the connector component in the JavaScript host', () => {
  it('describes itself with the three schemas', async () => {
    const d = await describeConnector();
    assert.equal(d.name, 'mqtt');
    assert.deepEqual(d.operations.map((o) => o.kind), ['send', 'listen']);
    assert.deepEqual(d.schemas.connection.required, ['url']);
    assert.deepEqual(d.schemas.send.required, ['topic']);
    assert.deepEqual(d.schemas.listen.required, ['subscriptions']);
  });

  it('validates a configuration and names every problem by its JSON pointer', async () => {
    const problems = await validate('send', { topic: 'a/#/b', qos: 3 });
    assert.deepEqual(problems.map((p) => p.pointer).sort(), ['/qos', '/topic']);
    assert.deepEqual(await validate('send', { topic: 'a/b' }), []);
    const [url] = await validate('connection', '{"url": "http://x"}');
    assert.equal(url.pointer, '/url');
  });

  it('connects to no broker the host does not allow', async () => {
    const denied = await rejection(Sender.open({ url: trap.url }, { topic: 't' }, only(broker.url)));
    assert.ok(denied instanceof ConnectorError);
    assert.equal(denied.code, 'not-authorized');
    assert.match(denied.message, /does not allow connecting to/);
    // Deny by default: no policy allows nothing.
    const none = await rejection(Listener.open({ url: broker.url }, { subscriptions: [{ filter: '#' }] }, {}));
    assert.equal(none.code, 'not-authorized');
    assert.equal(trap.connections, 0);
  });

  for (const version of ['5', '3.1.1']) {
    it(`sends at every QoS and reports a refused subscription with its reason code (MQTT ${version})`, async () => {
      const connection = { url: broker.url, mqtt_version: version };
      const topic = `host/qos/${version}`;
      const listener = await Listener.open(connection,
        { subscriptions: [{ filter: `${topic}/#`, qos: 2 }] }, only(broker.url));
      const sender = await Sender.open(connection, { topic: `${topic}/t` }, only(broker.url));
      const qos = (n) => [{ name: 'mqtt.qos', value: { tag: 'integer', val: BigInt(n) } }];
      const results = await sender.send([0, 1, 2].map((n) => ({ id: BigInt(n), payload: text(`q${n}`), properties: qos(n) })));
      assert.deepEqual(results.map((r) => r.tag), ['ok', 'ok', 'ok']);
      const docs = await take(listener, 3);
      assert.deepEqual(docs.map(decode), ['q0', 'q1', 'q2']);
      await listener.commit(docs.map((d) => d.id));
      await sender.close();
      await listener.close();

      const refused = await rejection(Listener.open(connection,
        { subscriptions: [{ filter: 'test/nosubscribe' }] }, only(broker.url)));
      assert.equal(refused.code, 'broker-rejected');
      assert.ok(refused.reasonCode >= 0x80);
    });
  }

  for (const [version, qos] of [['5', 1], ['5', 2], ['3.1.1', 1], ['3.1.1', 2]]) {
    it(`acknowledges in arrival order, and only what was committed (MQTT ${version}, QoS ${qos})`, async () => {
      const connection = {
        url: broker.url, mqtt_version: version, client_id: `host-ack-order-${version}-${qos}`,
        clean_start: false, session_expiry_secs: 300,
      };
      const topic = `host/ack/${version}/${qos}`;
      const config = { subscriptions: [{ filter: `${topic}/#`, qos }] };
      let listener = await Listener.open(connection, config, only(broker.url));
      const sender = await Sender.open({ url: broker.url }, { topic: `${topic}/t`, qos }, only(broker.url));
      await sender.send(['a', 'b', 'c'].map((p, i) => ({ id: BigInt(i), payload: text(p), properties: [] })));
      let docs = await take(listener, 3);
      assert.deepEqual(docs.map(decode), ['a', 'b', 'c']);
      // b alone cannot be acknowledged before a: nothing is.
      await listener.commit([docs[1].id]);
      await listener.close();

      listener = await Listener.open(connection, config, only(broker.url));
      docs = await take(listener, 3);
      assert.deepEqual(docs.map(decode), ['a', 'b', 'c']);
      await listener.commit([docs[0].id, docs[1].id]);
      await listener.close();

      listener = await Listener.open(connection, config, only(broker.url));
      docs = await take(listener, 1);
      assert.deepEqual(docs.map(decode), ['c']);
      await listener.commit([docs[0].id]);
      assert.deepEqual(await listener.next(10, 300), []);
      await listener.close();
      await sender.close();
    });
  }

  it('returns from a QoS 2 commit once the broker releases its PUBREC, from QoS 1 at once', async () => {
    const scripted = await startScriptedBroker();
    // Closed whatever happens: a listener left open keeps reconnecting,
    // and the test process never ends.
    let listener;
    try {
      listener = await Listener.open({ url: scripted.url, mqtt_version: '3.1.1' },
        { subscriptions: [{ filter: 'held/#', qos: 2 }] }, only(scripted.url));
      scripted.send({ cmd: 'publish', topic: 'held/2', payload: Buffer.from('two'), qos: 2, messageId: 7 });
      let docs = await take(listener, 1);
      assert.deepEqual(docs.map(decode), ['two']);
      let committed = false;
      const commit = listener.commit([docs[0].id]).then(() => {
        committed = true;
      });
      await scripted.expect('the PUBREC', (p) => p.cmd === 'pubrec' && p.messageId === 7);
      await sleep(300);
      assert.equal(committed, false, 'a crash now would bring the message again: the commit waits');
      scripted.send({ cmd: 'pubrel', messageId: 7 });
      await within(5000, 'the commit after the PUBREL', commit);
      await scripted.expect('the PUBCOMP', (p) => p.cmd === 'pubcomp' && p.messageId === 7);

      scripted.send({ cmd: 'publish', topic: 'held/1', payload: Buffer.from('one'), qos: 1, messageId: 8 });
      docs = await take(listener, 1);
      await within(5000, 'the QoS 1 commit', listener.commit([docs[0].id]));
      await scripted.expect('the PUBACK', (p) => p.cmd === 'puback' && p.messageId === 8);
    } finally {
      await listener?.close();
      await scripted.stop();
    }
  });
});
