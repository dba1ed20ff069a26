// Brokers for the tests on free loopback ports: the built-in broker of the
// workspace (`host-shim broker --port 0`), and bare TCP servers.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { within } from './wait.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');

/** The host-shim binary cargo built (HOST_SHIM overrides). */
export function hostShimPath() {
  if (process.env.HOST_SHIM) return path.resolve(process.env.HOST_SHIM);
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(repoRoot, process.env.CARGO_TARGET_DIR)
    : path.join(repoRoot, 'target');
  return path.join(targetDir, 'debug', 'host-shim');
}

/** Starts the broker; resolves `{ url, stop() }`. */
export async function startBroker() {
  const bin = hostShimPath();
  if (!existsSync(bin)) {
    throw new Error(`${bin} is missing: run \`cargo build -p host-shim\` in ${repoRoot} (or set HOST_SHIM)`);
  }
  const child = spawn(bin, ['broker', '--host', '127.0.0.1', '--port', '0'], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const url = await within(10_000, 'the broker to say where it listens', new Promise((resolve, reject) => {
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk) => {
      out += chunk;
      const found = /listening on (mqtt:\/\/\S+)/.exec(out);
      if (found) resolve(found[1]);
    });
    child.once('exit', (code) => reject(new Error(`the broker exited (code ${code}) before listening: ${out}`)));
    child.once('error', reject);
  }));
  return {
    url,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await within(10_000, 'the broker to exit', exited).catch(() => child.kill('SIGKILL'));
    },
  };
}

/**
 * A TCP server on a free loopback port that hands each connection to
 * `onSocket`; resolves `{ url, stop() }`, and `stop` drops every
 * connection still open.
 */
export async function serveLoopback(onSocket) {
  const sockets = new Set();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onSocket(socket);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `mqtt://127.0.0.1:${server.address().port}`,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A loopback TCP server that only counts the connections it gets: a
 * broker address the nodes must never reach.
 */
export async function startTrap() {
  let connections = 0;
  const { url, stop } = await serveLoopback(() => {
    connections += 1;
  });
  return {
    url,
    get connections() {
      return connections;
    },
    stop,
  };
}
