// A real Node-RED runtime in the test's process, on a free loopback port:
// its editor and admin HTTP API are served, flows are deployed through
// the admin API, and this package is installed in its user directory the
// way a user installs it (a link in node_modules).
//
// Node-RED is one runtime per process, so one per test file.

import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { until, within } from './wait.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const packageDir = path.resolve(here, '..', '..');
const require = createRequire(import.meta.url);

/** What the test recorder nodes got (test/nodes/test-recorder.js). */
export function recorded(id) {
  return globalThis.__mqttConnectorTestRecords?.get(id) ?? [];
}

/** How many messages a counting recorder got. */
export function counted(id) {
  return globalThis.__mqttConnectorTestCounts?.get(id) ?? 0;
}

export function clearRecords() {
  globalThis.__mqttConnectorTestRecords?.clear();
  globalThis.__mqttConnectorTestCounts?.clear();
}

/**
 * Starts Node-RED. `settings` are added to its settings. Resolves
 * `{ RED, url, deploy(flows, type), status(id), inject(id, msg), stop() }`.
 */
export async function startNodeRed(settings = {}) {
  const userDir = mkdtempSync(path.join(os.tmpdir(), 'mqtt-connector-node-red-'));
  const pkg = JSON.parse(
    (await import('node:fs')).readFileSync(path.join(packageDir, 'package.json'), 'utf8'),
  );
  mkdirSync(path.join(userDir, 'node_modules'));
  symlinkSync(packageDir, path.join(userDir, 'node_modules', pkg.name), 'dir');
  writeFileSync(path.join(userDir, 'package.json'), JSON.stringify({
    name: 'node-red-project',
    private: true,
    dependencies: { [pkg.name]: `file:${packageDir}` },
  }));

  // NODE_RED_MODULE runs the tests on another Node-RED installation.
  const RED = require(process.env.NODE_RED_MODULE ?? 'node-red');
  const server = http.createServer();
  RED.init(server, {
    userDir,
    flowFile: 'flows.json',
    credentialSecret: false,
    uiHost: '127.0.0.1',
    httpAdminRoot: '/',
    httpNodeRoot: false,
    nodesDir: [path.join(here, '..', 'nodes')],
    logging: { console: { level: process.env.NODE_RED_LOG ?? 'warn', metrics: false, audit: false } },
    editorTheme: { tours: false, projects: { enabled: false } },
    telemetry: { enabled: false, updateNotification: false },
    diagnostics: { enabled: false, ui: false },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    ...settings,
  });
  server.on('request', RED.httpAdmin);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  await within(60_000, 'Node-RED to start', RED.start());

  const statuses = new Map();
  const onStatus = ({ id, status }) => statuses.set(id, status);
  RED.events.on('node-status', onStatus);

  return {
    RED,
    url,
    userDir,

    /** Deploys `flows` through the admin API ('full' or 'reload'). */
    async deploy(flows, type = 'full') {
      statuses.clear();
      const body = type === 'reload' ? await (await fetch(`${url}/flows`, { headers: { 'Node-RED-API-Version': 'v2' } })).json() : { flows };
      const res = await fetch(`${url}/flows`, {
        method: 'POST',
        headers: {
          'Content-Type': 'application/json',
          'Node-RED-API-Version': 'v2',
          'Node-RED-Deployment-Type': type,
        },
        body: JSON.stringify(body),
      });
      if (!res.ok) {
        throw new Error(`deploy failed: ${res.status} ${await res.text()}`);
      }
    },

    /** The last status a node showed (`{ fill, shape, text }`), if any. */
    status(id) {
      return statuses.get(id);
    },

    /** Waits until the node's status text matches `pattern`. */
    async waitStatus(id, pattern, ms = 15_000) {
      return until(ms, `node ${id} to show a status matching ${pattern} (last: ${JSON.stringify(statuses.get(id))})`,
        () => (pattern.test(statuses.get(id)?.text ?? '') ? statuses.get(id) : null));
    },

    /** Hands `msg` to a node as if a wire delivered it. */
    inject(id, msg) {
      const node = RED.nodes.getNode(id);
      if (!node) throw new Error(`no node ${id} is running`);
      node.receive(msg);
    },

    async stop() {
      RED.events.removeListener('node-status', onStatus);
      await within(30_000, 'Node-RED to stop', RED.stop());
      await new Promise((resolve) => server.close(resolve));
      server.closeAllConnections?.();
      rmSync(userDir, { recursive: true, force: true });
    },
  };
}
