// The Node-RED editor in headless Chromium: the send node's edit dialog
// shows the form generated from the component's Send schema, and a
// problem the component finds shows with its JSON pointer.
//
// Chromium is Debian's `chromium` (CHROMIUM overrides its path). The
// screenshot goes to test-output/editor.png; UPDATE_SCREENSHOT=1 also
// writes docs/editor.png, the one the README shows.

import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, it } from 'node:test';
import { chromium } from 'playwright-core';
import { startBroker } from './support/broker.mjs';
import { describe as describeConnector } from '../lib/connector.mjs';
import { startNodeRed } from './support/node-red.mjs';

const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

let broker;
let red;
let browser;

before(async () => {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} is missing: apt-get install chromium (or set CHROMIUM)`);
  }
  broker = await startBroker();
  red = await startNodeRed();
  browser = await chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    timeout: 60_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      // Playwright gives each launch a fresh --user-data-dir of its own.
    ],
  });
});

after(async () => {
  await browser?.close();
  await red?.stop();
  await broker?.stop();
});

it('the send node edit dialog shows the fields of the Send schema', async () => {
  await red.deploy([
    { id: 'tab', type: 'tab', label: 'Flow 1' },
    { id: 'conn', type: 'mqtt-connection', name: 'built-in broker', connection: { url: broker.url } },
    {
      id: 'send', type: 'mqtt-connector send', z: 'tab', name: '', x: 320, y: 120,
      connection: 'conn', config: { topic: 'sensors/+/temperature', qos: 1 }, wires: [[], []],
    },
  ]);
  const page = await browser.newPage({ viewport: { width: 1100, height: 1820 } });
  page.setDefaultTimeout(30_000);
  await page.goto(red.url);
  await page.waitForFunction(() => window.RED && RED.nodes && RED.nodes.node('send'));
  await page.evaluate(() => RED.editor.edit(RED.nodes.node('send')));
  await page.waitForSelector('#node-input-mqttc-send .mqttc-form');

  // Every property of the schema has its field, named by its JSON pointer.
  const { schemas } = await describeConnector();
  const pointers = await page.$$eval('#node-input-mqttc-send [data-pointer]', (els) =>
    els.map((el) => el.getAttribute('data-pointer')));
  for (const key of Object.keys(schemas.send.properties)) {
    assert.ok(pointers.includes(`/${key}`), `a field for /${key}`);
  }
  for (const key of ['topic', 'qos', 'retained']) {
    assert.ok(pointers.includes(`/overrides/${key}`), `a field for /overrides/${key}`);
  }
  assert.equal(await page.inputValue('[data-pointer="/topic"] input'), 'sensors/+/temperature');

  // The component's problem with the topic shows with its pointer.
  const problem = page.locator('#node-input-mqttc-send .mqttc-problem');
  await problem.first().waitFor();
  assert.match(await problem.first().innerText(), /^\/topic .*wildcard/);
  assert.equal(await page.locator('[data-pointer="/topic"] input.input-error').count(), 1);

  const tray = page.locator('.red-ui-tray').last();
  mkdirSync(path.join(packageDir, 'test-output'), { recursive: true });
  const shot = path.join(packageDir, 'test-output', 'editor.png');
  await tray.screenshot({ path: shot });
  if (process.env.UPDATE_SCREENSHOT === '1') {
    mkdirSync(path.join(packageDir, 'docs'), { recursive: true });
    copyFileSync(shot, path.join(packageDir, 'docs', 'editor.png'));
  }

  // Fixing the topic clears the problem; saving keeps the form's values.
  await page.fill('[data-pointer="/topic"] input', 'sensors/kitchen/temperature');
  await page.waitForFunction(() => document.querySelectorAll('#node-input-mqttc-send .mqttc-problem').length === 0);
  await page.click('#node-dialog-ok');
  const saved = await page.evaluate(() => RED.nodes.node('send').config);
  assert.equal(saved.topic, 'sensors/kitchen/temperature');
  assert.equal(saved.qos, 1);
  await page.close();
});
