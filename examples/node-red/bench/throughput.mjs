// Throughput: N messages (default 100,000, 256-byte payloads, QoS 1)
// through a send node and a listen node in a real Node-RED runtime,
// against the built-in broker; once with this package's nodes and once
// with Node-RED's own `mqtt out` / `mqtt in`. Prints both.
//
//   npm run bench [-- MESSAGES]
//
// BENCH_ONLY=connector|nodered runs one side; BENCH_CONNECTION='{"inflight_window":200}'
// adds keys to the connector's connection configuration.
//
// Messages are handed to the send node with at most WINDOW not yet done
// (a Complete node reports each done()), so neither node queues without
// bound. Timed: from the first message handed over until the send node is
// done with the last (send), and until the listening flow got the last
// (end to end). The connector's listen node acknowledges each message only
// after the flow is done with it; Node-RED's mqtt in acknowledges on arrival.

import { startBroker } from '../test/support/broker.mjs';
import { clearRecords, counted, startNodeRed } from '../test/support/node-red.mjs';
import { sleep, until } from '../test/support/wait.mjs';

const MESSAGES = Number(process.argv[2] ?? 100_000);
const WINDOW = 1000;
const PAYLOAD = 'x'.repeat(256);
const LIMIT_MS = 600_000;
const STALL_MS = 30_000;

function connectorFlow(tab, url) {
  return [
    { id: `${tab}`, type: 'tab', label: tab },
    {
      id: `${tab}-conn`, type: 'mqtt-connection', name: '',
      connection: { url, ...JSON.parse(process.env.BENCH_CONNECTION ?? '{}') },
    },
    {
      id: `${tab}-send`, type: 'mqtt-connector send', z: tab, name: '', connection: `${tab}-conn`,
      config: { topic: `bench/${tab}`, qos: 1 }, wires: [[], []],
    },
    {
      id: `${tab}-listen`, type: 'mqtt-connector listen', z: tab, name: '', connection: `${tab}-conn`,
      config: { subscriptions: [{ filter: `bench/${tab}`, qos: 1 }] }, payloadForm: 'auto', wires: [[`${tab}-got`]],
    },
  ];
}

function nodeRedFlow(tab, url) {
  const { hostname, port } = new URL(url.replace(/^mqtt:/, 'http:'));
  return [
    { id: `${tab}`, type: 'tab', label: tab },
    {
      id: `${tab}-broker`, type: 'mqtt-broker', name: '', broker: hostname, port, clientid: '',
      autoConnect: true, usetls: false, protocolVersion: '5', keepalive: '60', cleansession: true,
      autoUnsubscribe: true, birthTopic: '', closeTopic: '', willTopic: '',
    },
    {
      id: `${tab}-send`, type: 'mqtt out', z: tab, name: '', topic: `bench/${tab}`, qos: '1', retain: 'false',
      respTopic: '', contentType: '', userProps: '', correl: '', expiry: '', broker: `${tab}-broker`, wires: [],
    },
    {
      id: `${tab}-listen`, type: 'mqtt in', z: tab, name: '', topic: `bench/${tab}`, qos: '1', datatype: 'auto-detect',
      broker: `${tab}-broker`, nl: false, rap: true, rh: 0, inputs: 0, wires: [[`${tab}-got`]],
    },
  ];
}

function counters(tab) {
  return [
    { id: `${tab}-got`, type: 'test recorder', z: tab, name: '', count: true, wires: [] },
    { id: `${tab}-complete`, type: 'complete', z: tab, name: '', scope: [`${tab}-send`], uncaught: false, wires: [[`${tab}-done`]] },
    { id: `${tab}-done`, type: 'test recorder', z: tab, name: '', count: true, wires: [] },
  ];
}

/** Hands `count` messages to the send node, at most WINDOW not done. */
async function pump(red, tab, count) {
  const sendNode = red.RED.nodes.getNode(`${tab}-send`);
  let handed = 0;
  while (handed < count) {
    const room = WINDOW - (handed - counted(`${tab}-done`));
    for (let i = 0; i < room && handed < count; i += 1, handed += 1) {
      sendNode.receive({ payload: PAYLOAD });
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function run(red, tab, flow) {
  if (process.env.BENCH_DEBUG) console.log('run', tab);
  clearRecords();
  await red.deploy([...flow, ...counters(tab)]);
  // Node-RED's mqtt nodes say node-red:common.status.connected.
  const connected = /(^|\.)connected$|^connected/;
  await red.waitStatus(`${tab}-send`, connected, 30_000);
  await red.waitStatus(`${tab}-listen`, connected, 30_000);
  const progress = process.env.BENCH_DEBUG
    ? setInterval(() => console.log(tab, 'done', counted(`${tab}-done`), 'got', counted(`${tab}-got`), red.status(`${tab}-send`), red.status(`${tab}-listen`)), 2000)
    : null;
  // Warm up, and make sure the subscription is in place.
  await until(30_000, 'the warm-up message', async () => {
    if (counted(`${tab}-got`) > 0) return true;
    await pump(red, tab, 1);
    await sleep(200);
    return false;
  });
  await until(30_000, 'the warm-up to settle', () => counted(`${tab}-done`) >= 1);
  await sleep(500);
  clearRecords();

  const started = performance.now();
  const cpuStarted = process.cpuUsage();
  const pumping = pump(red, tab, MESSAGES);
  await until(LIMIT_MS, `${tab}: all sends done`, () => counted(`${tab}-done`) >= MESSAGES);
  const sendSeconds = (performance.now() - started) / 1000;
  await pumping;
  // Until the last arrives, or nothing more arrives for STALL_MS.
  let last = -1;
  let lastChange = performance.now();
  let lastArrival = performance.now();
  await until(LIMIT_MS, `${tab}: all messages received`, () => {
    const now = counted(`${tab}-got`);
    if (now !== last) {
      last = now;
      lastChange = performance.now();
      lastArrival = lastChange;
    }
    return now >= MESSAGES || performance.now() - lastChange > STALL_MS;
  });
  const endSeconds = (lastArrival - started) / 1000;
  const cpu = process.cpuUsage(cpuStarted);
  // Anything beyond MESSAGES would be a duplicate.
  await sleep(500);
  clearInterval(progress);
  return {
    send: MESSAGES / sendSeconds,
    end: counted(`${tab}-got`) / endSeconds,
    received: counted(`${tab}-got`),
    cpuMicrosPerMessage: (cpu.user + cpu.system) / MESSAGES,
  };
}

const broker = await startBroker();
const red = await startNodeRed();
try {
  const cases = [
    ['mqtt-connector send / listen', 'connector', connectorFlow],
    ["Node-RED's mqtt out / mqtt in", 'nodered', nodeRedFlow],
  ].filter(([, tab]) => !process.env.BENCH_ONLY || process.env.BENCH_ONLY === tab);
  const rows = [];
  for (const [name, tab, flow] of cases) {
    rows.push([name, await run(red, tab, flow(tab, broker.url))]);
  }
  await red.deploy([]);
  const fmt = (n) => Math.round(n).toLocaleString('en-US');
  console.log(`\n${fmt(MESSAGES)} messages of ${PAYLOAD.length} B at QoS 1, built-in broker on loopback, Node ${process.version}`);
  console.log('| nodes | send msg/s | send + listen msg/s | received | Node-RED process CPU µs/msg |');
  console.log('| --- | --- | --- | --- | --- |');
  for (const [name, r] of rows) {
    console.log(`| ${name} | ${fmt(r.send)} | ${fmt(r.end)} | ${fmt(r.received)} | ${r.cpuMicrosPerMessage.toFixed(1)} |`);
  }
} finally {
  await red.stop();
  await broker.stop();
}
