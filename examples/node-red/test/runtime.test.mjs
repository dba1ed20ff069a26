// The nodes in a real Node-RED runtime, against the built-in broker:
// flows are deployed through the admin HTTP API, messages handed to the
// send nodes, and what the listen nodes emit recorded by a test node.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, beforeEach, describe, it } from 'node:test';
import { startBroker, startTrap } from './support/broker.mjs';
import { clearRecords, recorded, startNodeRed } from './support/node-red.mjs';
import { sleep, until } from './support/wait.mjs';

let broker;
let trap;
let red;

before(async () => {
  broker = await startBroker();
  trap = await startTrap();
  // Only the test broker may be named by any connection.
  red = await startNodeRed({ mqttConnectionAllowedBrokers: [broker.url] });
});

after(async () => {
  await red?.stop();
  await trap?.stop();
  await broker?.stop();
});

// Each test deploys nodes of its own ids, on a tab of its own.
let prefix = '';
let testCount = 0;
const id = (name) => `${prefix}${name}`;

beforeEach(() => {
  clearRecords();
  testCount += 1;
  prefix = `t${testCount}-`;
});

function tab() {
  return { id: id('tab'), type: 'tab', label: prefix };
}

function connection(name, connectionConfig) {
  return { id: id(name), type: 'mqtt-connection', name: '', connection: connectionConfig };
}

function wired(wires) {
  return wires.map((port) => port.map(id));
}

function sendNode(name, connectionName, config, wires = [[], []]) {
  return {
    id: id(name), type: 'mqtt-connector send', z: id('tab'), name: '',
    connection: id(connectionName), config, wires: wired(wires),
  };
}

function listenNode(name, connectionName, config, wires) {
  return {
    id: id(name), type: 'mqtt-connector listen', z: id('tab'), name: '',
    connection: id(connectionName), config, payloadForm: 'auto', wires: wired(wires),
  };
}

function recorder(name, { hold = [], fail = [] } = {}) {
  return { id: id(name), type: 'test recorder', z: id('tab'), name: '', hold, fail, wires: [] };
}

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const got = (name) => recorded(id(name));
const payloads = (name) => got(name).map((m) => m.payload);
const waitStatus = (name, pattern) => red.waitStatus(id(name), pattern);
const inject = (name, msg) => red.inject(id(name), msg);

describe('the mqtt-connector nodes in Node-RED', () => {
  it('a retained send is seen by a later listener, flagged retained', async () => {
    const flows = [
      tab(),
      connection('conn', { url: broker.url }),
      sendNode('send', 'conn', { topic: 'retained/config', qos: 1, retained: true }, [['sent'], ['failed']]),
      recorder('sent'),
      recorder('failed'),
    ];
    await red.deploy(flows);
    await waitStatus('send', /connected/);
    inject('send', { payload: 'v1' });
    await until(10_000, 'the send to be acknowledged', () => got('sent').length === 1);
    assert.equal(got('failed').length, 0);

    // A listener deployed afterwards gets the stored message, RETAIN=1.
    await red.deploy([
      ...flows,
      listenNode('listen', 'conn', { subscriptions: [{ filter: 'retained/#', qos: 1 }] }, [['got']]),
      recorder('got'),
    ]);
    await until(10_000, 'the retained message', () => got('got').length === 1);
    const [stored] = got('got');
    assert.equal(stored.payload, 'v1');
    assert.equal(stored.topic, 'retained/config');
    assert.equal(stored.retain, true);
    assert.equal(stored.qos, 1);

    // Forwarded live to the subscription it already has: RETAIN=0.
    await waitStatus('send', /connected/);
    inject('send', { payload: 'v2' });
    await until(10_000, 'the live message', () => got('got').length === 2);
    assert.equal(got('got')[1].payload, 'v2');
    assert.equal(got('got')[1].retain, false);
  });

  it('a message the connector refuses goes to the second output with its error', async () => {
    await red.deploy([
      tab(),
      connection('conn', { url: broker.url }),
      sendNode('send', 'conn', { topic: 'errors/ok', qos: 1 }, [['sent'], ['failed']]),
      recorder('sent'),
      recorder('failed'),
    ]);
    await waitStatus('send', /connected/);
    inject('send', { payload: 'a', topic: 'errors/+' });
    inject('send', { payload: 'b' });
    await until(10_000, 'both outcomes', () => got('sent').length + got('failed').length === 2);
    assert.deepEqual(payloads('sent'), ['b']);
    const [failed] = got('failed');
    assert.equal(failed.payload, 'a');
    assert.equal(failed.error.code, 'invalid-document');
    assert.match(failed.error.message, /wildcard/);
  });

  it('carries payloads and MQTT 5.0 properties between msg and the broker', async () => {
    await red.deploy([
      tab(),
      connection('conn', { url: broker.url }),
      sendNode('send', 'conn', { topic: 'props/default', qos: 1 }, [['sent'], ['failed']]),
      listenNode('listen', 'conn', { subscriptions: [{ filter: 'props/#', qos: 1 }] }, [['got']]),
      recorder('sent'),
      recorder('failed'),
      recorder('got'),
    ]);
    await waitStatus('send', /connected/);
    await waitStatus('listen', /connected/);
    inject('send', {
      topic: 'props/full',
      payload: Buffer.from([0xff, 0x00, 0x7f]),
      properties: {
        contentType: 'application/octet-stream',
        responseTopic: 'props/reply',
        correlationData: Buffer.from('c-1'),
        messageExpiryInterval: 3600,
        userProperties: { origin: 'test', tag: ['a', 'b'] },
      },
    });
    inject('send', { payload: { celsius: 21.5 }, properties: { payloadFormatIndicator: true } });
    await until(10_000, 'both messages', () => got('got').length === 2);
    assert.equal(got('failed').length, 0);
    const [binary, json] = got('got');
    assert.equal(binary.topic, 'props/full');
    assert.ok(Buffer.isBuffer(binary.payload), 'a payload that is not UTF-8 stays a Buffer');
    assert.deepEqual([...binary.payload], [0xff, 0x00, 0x7f]);
    assert.equal(binary.properties.contentType, 'application/octet-stream');
    assert.equal(binary.properties.responseTopic, 'props/reply');
    assert.equal(binary.properties.correlationData.toString(), 'c-1');
    assert.ok(binary.properties.messageExpiryInterval > 3500 && binary.properties.messageExpiryInterval <= 3600);
    assert.deepEqual(binary.properties.userProperties, { origin: 'test', tag: ['a', 'b'] });
    assert.equal(json.topic, 'props/default');
    assert.deepEqual(JSON.parse(json.payload), { celsius: 21.5 });
    assert.equal(json.properties.payloadFormatIndicator, true);
  });

  it('QoS 2 delivers every message exactly once', async () => {
    const count = 200;
    await red.deploy([
      tab(),
      connection('conn', { url: broker.url }),
      sendNode('send', 'conn', { topic: 'exactly/once', qos: 2 }, [['sent'], []]),
      listenNode('listen', 'conn', { subscriptions: [{ filter: 'exactly/#', qos: 2 }] }, [['got']]),
      recorder('sent'),
      recorder('got'),
    ]);
    await waitStatus('send', /connected/);
    await waitStatus('listen', /connected/);
    for (let i = 0; i < count; i += 1) inject('send', { payload: `n${i}` });
    await until(20_000, `${count} messages`, () => got('got').length >= count);
    // Anything sent twice would come within this grace period.
    await sleep(500);
    const received = payloads('got');
    assert.equal(received.length, count);
    assert.equal(new Set(received).size, count);
    assert.ok(got('got').every((m) => m.qos === 2 && m.duplicate === false));
    assert.equal(got('sent').length, count);
  });

  it('acknowledges a message only once the flow is done with it', async () => {
    const persistent = { url: broker.url, client_id: 'ack-after-done', clean_start: false, session_expiry_secs: 300 };
    const flows = [
      tab(),
      connection('conn', { url: broker.url }),
      connection('session', persistent),
      sendNode('send', 'conn', { topic: 'ack/t', qos: 1 }, [[], []]),
      listenNode('listen', 'session', { subscriptions: [{ filter: 'ack/#', qos: 1 }] }, [['got']]),
      // m4 fails (done with an error); m5 is never done.
      recorder('got', { fail: ['m4'], hold: ['m5'] }),
    ];
    await red.deploy(flows);
    await waitStatus('send', /connected/);
    await waitStatus('listen', /connected/);
    for (const p of ['m1', 'm2', 'm3', 'm4', 'm5']) inject('send', { payload: p });
    await until(10_000, 'five messages', () => got('got').length === 5);
    assert.deepEqual(payloads('got'), ['m1', 'm2', 'm3', 'm4', 'm5']);
    await waitStatus('listen', /1 in flow · 1 failed, not acknowledged/);

    // Restarting the flow reconnects with the same session: the broker
    // sends again what was never acknowledged, and only that.
    await red.deploy(flows, 'reload');
    await until(10_000, 'the redelivery', () => got('got').length >= 7);
    await sleep(500);
    const again = got('got').slice(5);
    assert.deepEqual(again.map((m) => m.payload), ['m4', 'm5']);
    assert.ok(again.every((m) => m.duplicate === true), 'redelivered messages carry DUP');
  });

  it('shows a configuration problem in the node status with its JSON pointer', async () => {
    await red.deploy([
      tab(),
      connection('conn', { url: broker.url }),
      connection('badconn', { url: 'http://127.0.0.1:1' }),
      sendNode('send', 'conn', { topic: 'a/#/b' }),
      listenNode('listen', 'conn', { subscriptions: [{ filter: 'a/#/b' }] }, [[]]),
      sendNode('send2', 'badconn', { topic: 'fine' }),
    ]);
    const send = await waitStatus('send', /^\/topic: /);
    assert.equal(send.fill, 'red');
    assert.match(send.text, /wildcard/);
    await waitStatus('listen', /^\/subscriptions\/0\/filter: /);
    await waitStatus('send2', /^connection\/url: /);
  });

  it('connects to no broker but the configured one', async () => {
    await red.deploy([
      tab(),
      connection('elsewhere', { url: trap.url }),
      sendNode('send', 'elsewhere', { topic: 'x' }, [[], ['failed']]),
      listenNode('listen', 'elsewhere', { subscriptions: [{ filter: '#' }] }, [[]]),
      recorder('failed'),
    ]);
    const status = await waitStatus('send', /not-authorized/);
    assert.match(status.text, new RegExp(`does not allow connecting to ${trap.url}`));
    await waitStatus('listen', /not-authorized/);
    inject('send', { payload: 'p' });
    await until(5_000, 'the refusal', () => got('failed').length === 1);
    assert.equal(got('failed')[0].error.code, 'not-authorized');
    assert.equal(trap.connections, 0, 'nothing connected to the other address');
  });

  it('runs the example flow of the README', async () => {
    const file = readFileSync(path.join(packageDir, 'examples', 'ack-after-done.json'), 'utf8');
    const readme = readFileSync(path.join(packageDir, 'README.md'), 'utf8');
    const shown = /```json\n(\[[\s\S]*?\])\n```/.exec(readme);
    assert.ok(shown, 'the README shows a flow');
    assert.deepEqual(JSON.parse(shown[1]), JSON.parse(file), 'the README shows examples/ack-after-done.json');

    const flows = JSON.parse(file.replaceAll('mqtt://localhost:1883', broker.url));
    // What the flow's "seen" debug node shows, a recorder gets too.
    const watcher = flows.find((n) => n.name === 'archive and settings');
    watcher.wires[0].push(id('seen'));
    flows.push({ ...recorder('seen'), z: watcher.z });
    await red.deploy(flows);
    const node = (name) => flows.find((n) => n.name === name).id;
    for (const name of ['retained setting', 'publish reading', 'readings', 'archive', 'archive and settings']) {
      await red.waitStatus(node(name), /connected/);
    }
    const press = (name) => fetch(`${red.url}/inject/${node(name)}`, { method: 'POST' });
    assert.equal((await press('temperature limit')).status, 200);
    assert.equal((await press('a reading')).status, 200);
    await until(10_000, 'the setting and the archived reading', () => got('seen').length === 2);
    const byTopic = Object.fromEntries(got('seen').map((m) => [m.topic, m.payload]));
    assert.deepEqual(byTopic['config/limits'], { max_celsius: 30 });
    assert.equal(byTopic['archive/sensors/kitchen/temperature'].celsius, 21.5);
  });
});
