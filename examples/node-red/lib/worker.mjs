// One connector instance in a worker thread.
//
// The component's imports are synchronous: `publish` returns after the
// broker's acknowledgements, `receive` after its timeout. Each import here
// posts the call to the main thread (lib/capability.mjs serves it with
// MQTT.js) and blocks this thread with Atomics.wait until the answer is on
// the port; the main thread's event loop keeps running meanwhile.
//
// The main thread calls the exports with messages on `parentPort`:
// `{ id, method, args }`, answered `{ id, value }`, `{ id, error }` (the
// connector's `error` record) or `{ id, trap }` (the instance is broken).

import { parentPort, receiveMessageOnPort, workerData } from 'node:worker_threads';
import { instantiate, loadBindings } from './component.mjs';

const { modules, signal: signalBuffer, rpcPort } = workerData;
const signal = new Int32Array(signalBuffer);

/** Calls the host and waits for its answer. */
function call(op, args) {
  Atomics.store(signal, 0, 0);
  rpcPort.postMessage({ op, args });
  for (;;) {
    Atomics.wait(signal, 0, 0);
    const reply = receiveMessageOnPort(rpcPort);
    if (reply) {
      const { value, trap } = reply.message;
      if (trap !== undefined) {
        throw new Error(`host call ${op} failed: ${trap}`);
      }
      return value;
    }
    // Woken without an answer: wait again.
    Atomics.store(signal, 0, 0);
  }
}

/** Tells the host something that needs no answer. */
function tell(op, args) {
  rpcPort.postMessage({ op, args, oneWay: true });
}

const symbolDispose = Symbol.dispose ?? Symbol.for('dispose');

/** The `client` resource of the `mqtt` import: a handle on the host's. */
class Client {
  #handle;

  constructor(handle) {
    this.#handle = handle;
  }

  static connect(options) {
    const result = call('connect', [options]);
    return result.tag === 'ok' ? new Client(result.val) : result;
  }

  capabilities() {
    return call('capabilities', [this.#handle]);
  }

  publish(batch) {
    return call('publish', [this.#handle, batch]);
  }

  subscribe(subscriptions) {
    return call('subscribe', [this.#handle, subscriptions]);
  }

  unsubscribe(filters) {
    return call('unsubscribe', [this.#handle, filters]);
  }

  receive(max, timeoutMs) {
    return call('receive', [this.#handle, max, timeoutMs]);
  }

  ack(ids) {
    return call('ack', [this.#handle, ids]);
  }

  disconnect() {
    call('disconnect', [this.#handle]);
  }

  [symbolDispose]() {
    tell('drop', [this.#handle]);
  }
}

const operations = instantiate(await loadBindings(), modules, {
  Client,
  log: (level, message) => tell('log', [level, message]),
});

// The one open operation of this instance.
let operation = null;

const exportsByName = {
  describe: () => operations.describe(),
  validate: (kind, config) => operations.validate(kind, config),
  openSender: (connection, config) => {
    operation = operations.Sender.open(connection, config);
  },
  openListener: (connection, config) => {
    operation = operations.Listener.open(connection, config);
  },
  send: (documents) => operation.send(documents),
  next: (max, timeoutMs) => operation.next(max, timeoutMs),
  commit: (ids) => operation.commit(BigUint64Array.from(ids)),
  done: () => operation.done(),
  close: () => {
    if (operation) {
      operation.close();
      operation[symbolDispose]?.();
      operation = null;
    }
  },
};

parentPort.on('message', ({ id, method, args }) => {
  try {
    const value = exportsByName[method](...args);
    parentPort.postMessage({ id, value });
  } catch (e) {
    // jco throws a result's `err` as a ComponentError carrying it.
    if (e && Object.hasOwn(e, 'payload')) {
      parentPort.postMessage({ id, error: e.payload });
    } else {
      parentPort.postMessage({ id, trap: String(e?.stack ?? e) });
    }
  }
});

parentPort.postMessage({ ready: true });
