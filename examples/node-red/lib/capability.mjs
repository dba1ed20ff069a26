// The host side of the world's `mqtt` and `logging` imports for one
// component instance: the calls its worker makes (lib/worker.mjs), served
// on the main thread with MqttClient.
//
// Deny by default: `allow(url)` decides which brokers the guest may
// connect to; without it, none.

import { MqttClient } from './mqtt-client.mjs';
import { err, ok, witError } from './wit.mjs';

const LEVELS = new Set(['debug', 'info', 'warn', 'error']);

export class MqttCapability {
  #allow;
  #log;
  #clients = new Map();
  #nextHandle = 1;
  #yield = false;
  #hostMs = 0;
  #servingSince = null;

  /**
   * @param allow `(url) => boolean`, the brokers the guest may reach
   * @param log `(level, message) => void`, for the guest's log lines
   */
  constructor({ allow, log } = {}) {
    this.#allow = allow ?? (() => false);
    this.#log = log ?? (() => {});
  }

  /**
   * Time spent serving calls since the last reset, in milliseconds, the
   * call being served included.
   */
  get hostMs() {
    const serving = this.#servingSince === null ? 0 : performance.now() - this.#servingSince;
    return this.#hostMs + serving;
  }

  resetHostTime() {
    this.#hostMs = 0;
  }

  /**
   * Asks waiting receives to return now (another call for the instance is
   * queued), or lets them wait again.
   */
  requestYield(on) {
    this.#yield = on;
    if (on) {
      for (const client of this.#clients.values()) client.interrupt();
    }
  }

  #client(handle) {
    const client = this.#clients.get(handle);
    if (!client) {
      throw new Error(`unknown client handle ${handle}`);
    }
    return client;
  }

  /** Serves one call of the guest; the value is what the import returns. */
  async serve(op, args) {
    const started = performance.now();
    // One-way calls (log, drop) may come while a call is served.
    const outermost = this.#servingSince === null;
    if (outermost) this.#servingSince = started;
    try {
      return await this.#dispatch(op, args);
    } finally {
      if (outermost) {
        this.#servingSince = null;
        this.#hostMs += performance.now() - started;
      }
    }
  }

  async #dispatch(op, args) {
    switch (op) {
      case 'connect': {
        const [options] = args;
        if (!this.#allow(options.url)) {
          return err(witError('not-authorized', `the host does not allow connecting to ${options.url}`));
        }
        try {
          const client = await MqttClient.connect(options, {
            log: this.#log,
            shouldYield: () => this.#yield,
          });
          const handle = this.#nextHandle++;
          this.#clients.set(handle, client);
          return ok(handle);
        } catch (e) {
          return err(e.code ? e : witError('internal', String(e?.message ?? e)));
        }
      }
      case 'capabilities':
        return this.#client(args[0]).capabilities();
      case 'publish':
        return this.#client(args[0]).publish(args[1]);
      case 'subscribe':
      case 'unsubscribe':
      case 'receive': {
        const [handle, ...rest] = args;
        try {
          return ok(await this.#client(handle)[op](...rest));
        } catch (e) {
          if (e instanceof Error) throw e;
          return err(e);
        }
      }
      case 'ack':
        try {
          await this.#client(args[0]).ack(args[1]);
          return ok(undefined);
        } catch (e) {
          if (e instanceof Error) throw e;
          return err(e);
        }
      case 'disconnect':
        await this.#client(args[0]).disconnect();
        return undefined;
      case 'drop': {
        // The guest's handle is gone: the connection ends without a
        // DISCONNECT, as for a crash.
        const client = this.#clients.get(args[0]);
        this.#clients.delete(args[0]);
        client?.drop();
        return undefined;
      }
      case 'log': {
        const [level, message] = args;
        this.#log(LEVELS.has(level) ? level : 'info', message);
        return undefined;
      }
      default:
        throw new Error(`unknown host call ${op}`);
    }
  }

  /** Drops every client, as when the instance is discarded. */
  dropAll() {
    for (const client of this.#clients.values()) client.drop();
    this.#clients.clear();
  }
}
