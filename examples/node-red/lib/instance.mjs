// A connector instance in its own worker thread, driven from the main
// thread: export calls in, host calls (the `mqtt` and `logging` imports)
// served by an MqttCapability.
//
// Calls run one at a time, in order. A call queued behind a `next` that
// waits in `receive` makes that receive return at once, so a commit never
// waits out a receive timeout.
//
// A call that computes for longer than `guestTimeMs` (not counting the
// time spent in host calls, such as waiting for a broker) ends the worker;
// so does a trap. The instance is then broken: every later call fails,
// and its connections are dropped.

import { MessageChannel, Worker } from 'node:worker_threads';
import { MqttCapability } from './capability.mjs';
import { coreModules } from './component.mjs';

const WORKER_URL = new URL('./worker.mjs', import.meta.url);

/** The guest's own computing allowed in one call, by default. */
export const DEFAULT_GUEST_TIME_MS = 10_000;

/** A call failed because the instance broke (trap, time limit, exit). */
export class InstanceBroken extends Error {}

/** A call failed with the connector's `error` record. */
export class ConnectorError extends Error {
  constructor(error) {
    super(error.message);
    this.code = error.code;
    this.reasonCode = error.reasonCode;
    this.documentIndex = error.documentIndex;
  }
}

export class Instance {
  #worker;
  #capability;
  #calls = new Map();
  #nextCall = 1;
  #tail = Promise.resolve();
  #queued = 0;
  #broken = null;
  #guestTimeMs;
  #callStarted = 0;
  #watchdog = null;

  /**
   * Starts a worker with a fresh instance.
   *
   * @param allow `(url) => boolean`: brokers the guest may connect to
   * @param log `(level, message) => void`: the guest's log lines
   * @param guestTimeMs the guest's own computing allowed in one call
   */
  static async start({ allow, log, guestTimeMs = DEFAULT_GUEST_TIME_MS } = {}) {
    const instance = new Instance({ allow, log, guestTimeMs, modules: await coreModules() });
    await instance.#ready;
    return instance;
  }

  #ready;

  constructor({ allow, log, guestTimeMs, modules }) {
    this.#guestTimeMs = guestTimeMs;
    this.#capability = new MqttCapability({ allow, log });
    const { port1: hostPort, port2: guestPort } = new MessageChannel();
    const signal = new SharedArrayBuffer(4);
    const signalView = new Int32Array(signal);
    this.#worker = new Worker(WORKER_URL, {
      workerData: { modules, signal, rpcPort: guestPort },
      transferList: [guestPort],
    });
    hostPort.on('message', async ({ op, args, oneWay }) => {
      let reply;
      try {
        reply = { value: await this.#capability.serve(op, args) };
      } catch (e) {
        reply = { trap: String(e?.message ?? e) };
      }
      if (oneWay || this.#broken) return;
      hostPort.postMessage(reply);
      Atomics.store(signalView, 0, 1);
      Atomics.notify(signalView, 0);
    });
    // The host port must not keep the process alive on its own.
    hostPort.unref();
    this.#ready = new Promise((resolve, reject) => {
      this.#worker.once('message', (m) => (m.ready ? resolve() : reject(new Error('worker did not start'))));
      this.#worker.once('error', reject);
    });
    this.#worker.on('message', (m) => this.#answer(m));
    this.#worker.on('error', (e) => this.#break(`the connector failed: ${e.message}`));
    this.#worker.on('exit', (code) => this.#break(`the connector's worker exited (code ${code})`));
  }

  /** Why the instance broke, or null. */
  get broken() {
    return this.#broken;
  }

  #answer({ id, value, error, trap }) {
    const call = this.#calls.get(id);
    if (!call) return;
    this.#calls.delete(id);
    this.#stopWatch();
    if (trap !== undefined) {
      this.#break(`the connector failed: ${trap}`);
      call.reject(new InstanceBroken(this.#broken));
    } else if (error !== undefined) {
      call.reject(new ConnectorError(error));
    } else {
      call.resolve(value);
    }
  }

  #break(why) {
    if (this.#broken) return;
    this.#broken = why;
    this.#stopWatch();
    this.#capability.dropAll();
    for (const call of this.#calls.values()) call.reject(new InstanceBroken(why));
    this.#calls.clear();
    this.#worker.terminate().catch(() => {});
  }

  #startWatch() {
    this.#callStarted = performance.now();
    this.#capability.resetHostTime();
    this.#watchdog = setInterval(() => {
      const guestMs = performance.now() - this.#callStarted - this.#capability.hostMs;
      if (guestMs > this.#guestTimeMs) {
        this.#break(`the connector computed for more than ${this.#guestTimeMs} ms in one call`);
      }
    }, Math.min(1000, this.#guestTimeMs));
    this.#watchdog.unref();
  }

  #stopWatch() {
    clearInterval(this.#watchdog);
    this.#watchdog = null;
  }

  /**
   * Calls an export of the worker (see lib/worker.mjs); resolves with its
   * value, rejects with ConnectorError or InstanceBroken.
   */
  call(method, ...args) {
    this.#queued += 1;
    // Whatever waits in `receive` now should make way.
    this.#capability.requestYield(true);
    const run = () => {
      this.#queued -= 1;
      if (this.#queued === 0) this.#capability.requestYield(false);
      if (this.#broken) {
        return Promise.reject(new InstanceBroken(this.#broken));
      }
      return new Promise((resolve, reject) => {
        const id = this.#nextCall++;
        this.#calls.set(id, { resolve, reject });
        this.#startWatch();
        this.#worker.postMessage({ id, method, args });
      });
    };
    const result = this.#tail.then(run, run);
    this.#tail = result.catch(() => {});
    return result;
  }

  /** Ends the worker and drops its connections. */
  async terminate() {
    this.#break('the instance was closed');
  }
}
