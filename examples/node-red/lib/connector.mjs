// The connector's operations for a JavaScript runtime: `describe` and
// `validate` on an instance in this thread (it may connect nowhere), and
// Send and Listen operations each in an instance of its own worker
// (lib/instance.mjs).

import { coreModules, instantiate, loadBindings } from './component.mjs';
import { Instance } from './instance.mjs';
import { witError } from './wit.mjs';

let local = null;

/** An instance in this thread that may not connect anywhere. */
function localInstance() {
  local ??= (async () => {
    const bindings = await loadBindings();
    class Client {
      static connect(options) {
        return { tag: 'err', val: witError('not-authorized', `the host does not allow connecting to ${options.url}`) };
      }
    }
    return instantiate(bindings, await coreModules(), { Client, log: () => {} });
  })();
  return local;
}

/**
 * The connector's metadata with its schemas parsed:
 * `{ name, version, operations, schemas: { connection, send, listen } }`.
 */
export async function describe() {
  const m = (await localInstance()).describe();
  return {
    name: m.name,
    version: m.version,
    operations: m.operations,
    schemas: {
      connection: JSON.parse(m.connectionSchema),
      send: JSON.parse(m.sendSchema),
      listen: JSON.parse(m.listenSchema),
    },
  };
}

/**
 * Every problem of a configuration, `[{ pointer, message }]`.
 *
 * @param kind 'connection', 'send' or 'listen'
 * @param config the configuration, as an object or JSON text
 */
export async function validate(kind, config) {
  const text = typeof config === 'string' ? config : JSON.stringify(config);
  const wit = kind === 'connection' ? undefined : kind;
  return (await localInstance()).validate(wit, text);
}

class Operation {
  #instance;

  constructor(instance) {
    this.#instance = instance;
  }

  static async open(kind, connection, config, options) {
    const instance = await Instance.start(options);
    try {
      await instance.call(kind === 'send' ? 'openSender' : 'openListener',
        JSON.stringify(connection), JSON.stringify(config));
    } catch (e) {
      await instance.terminate();
      throw e;
    }
    return instance;
  }

  get instance() {
    return this.#instance;
  }

  /** Why the instance broke (then every call fails), or null. */
  get broken() {
    return this.#instance.broken;
  }

  /** Disconnects normally, then ends the worker. */
  async close() {
    try {
      await this.#instance.call('close');
    } catch {
      // Broken already: its connections were dropped.
    } finally {
      await this.#instance.terminate();
    }
  }
}

/** A Send operation. */
export class Sender extends Operation {
  /**
   * Connects and checks both configurations.
   *
   * @param connection the connection configuration (object)
   * @param config the Send configuration (object)
   * @param options `{ allow, log, guestTimeMs }` as for Instance.start
   * @throws ConnectorError (bad configuration, broker refused) or
   *   InstanceBroken
   */
  static async open(connection, config, options) {
    return new Sender(await Operation.open('send', connection, config, options));
  }

  /** Sends documents; one `{ tag: 'ok' | 'err', val }` per document. */
  send(documents) {
    return this.instance.call('send', documents);
  }
}

/** A Listen operation. */
export class Listener extends Operation {
  /** Connects and subscribes; see Sender.open. */
  static async open(connection, config, options) {
    return new Listener(await Operation.open('listen', connection, config, options));
  }

  /** Up to `max` documents, waiting at most `timeoutMs` for the first. */
  next(max, timeoutMs) {
    return this.instance.call('next', max, timeoutMs);
  }

  /** Acknowledges documents to the broker, by id. */
  commit(ids) {
    return this.instance.call('commit', ids);
  }

  /** Whether the operation has finished (a retained snapshot went quiet). */
  done() {
    return this.instance.call('done');
  }
}

export { ConnectorError, InstanceBroken } from './instance.mjs';
