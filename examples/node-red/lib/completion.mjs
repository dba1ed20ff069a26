// Knows when every node a message reached has called done() for it, with
// Node-RED's messaging hooks (Node-RED 2.0 and later):
//
// - `preDeliver`: a tracked message is about to be delivered to a node
//   along a wire (cloned already when it goes to several): one more node
//   owes a done() for it.
// - `onComplete`: a node called done() (or done(err)) for a message it was
//   delivered: one fewer.
//
// A message is settled when no node owes a done() any more: complete, or
// failed when any node called done(err). A node that sends a message on
// before calling done() (as Node-RED asks) keeps its document open; a
// node that makes a new message object instead ends the tracking there.

const KEY = '_mqttConnector';
const HOOK = 'mqttConnector';

/** The trackers of one Node-RED runtime, by its hooks API. */
const registries = new WeakMap();

class Registry {
  #hooks;
  #entries = new Map();
  #deliveries = new WeakMap();
  #owners = 0;

  constructor(hooks) {
    this.#hooks = hooks;
  }

  attach() {
    if (this.#owners++ === 0) {
      this.#hooks.add(`preDeliver.${HOOK}`, (event) => this.#delivered(event));
      this.#hooks.add(`onComplete.${HOOK}`, (event) => this.#completed(event));
    }
  }

  detach() {
    if (--this.#owners === 0) {
      this.#hooks.remove(`*.${HOOK}`);
    }
  }

  add(token, entry) {
    this.#entries.set(token, entry);
  }

  delete(token) {
    this.#entries.delete(token);
  }

  #delivered({ msg, destination }) {
    const entry = msg && this.#entries.get(msg[KEY]);
    if (!entry) return;
    let byNode = this.#deliveries.get(msg);
    if (!byNode) {
      byNode = new Map();
      this.#deliveries.set(msg, byNode);
    }
    byNode.set(destination.id, (byNode.get(destination.id) ?? 0) + 1);
    entry.owed += 1;
  }

  #completed({ msg, error, node }) {
    const entry = msg && this.#entries.get(msg[KEY]);
    const byNode = entry && this.#deliveries.get(msg);
    const owed = byNode?.get(node.id) ?? 0;
    // Only a node the message was delivered to can settle it (not a Catch
    // or Complete node that got a copy).
    if (owed === 0) return;
    byNode.set(node.id, owed - 1);
    if (error) entry.failed = true;
    entry.owed -= 1;
    entry.check();
  }
}

/**
 * Tracks the messages of one Listen node.
 *
 * @param hooks `RED.hooks`
 * @param onSettled `(docId, failed) => void`, once per tracked message
 */
export class CompletionTracker {
  #registry;
  #prefix;
  #onSettled;
  #tokens = new Set();
  #generation = 0;

  constructor(hooks, nodeId, onSettled) {
    let registry = registries.get(hooks);
    if (!registry) {
      registry = new Registry(hooks);
      registries.set(hooks, registry);
    }
    this.#registry = registry;
    this.#prefix = nodeId;
    this.#onSettled = onSettled;
    registry.attach();
  }

  /** Messages outstanding: sent, not settled. */
  get outstanding() {
    return this.#tokens.size;
  }

  /**
   * Forgets every outstanding message (the connection they came on is
   * gone; the broker sends them again).
   */
  reset() {
    for (const token of this.#tokens) this.#registry.delete(token);
    this.#tokens.clear();
    this.#generation += 1;
  }

  /**
   * Marks `msg` as carrying document `docId` and calls `send(msg)`; the
   * document settles when every node it reached is done with it.
   */
  send(msg, docId, send) {
    const token = `${this.#prefix}#${this.#generation}:${docId}`;
    msg[KEY] = token;
    const entry = {
      // The node's own share, released once send() has routed the message.
      owed: 1,
      failed: false,
      check: () => {
        if (entry.owed === 0 && this.#tokens.delete(token)) {
          this.#registry.delete(token);
          this.#onSettled(docId, entry.failed);
        }
      },
    };
    this.#tokens.add(token);
    this.#registry.add(token, entry);
    send(msg);
    entry.owed -= 1;
    entry.check();
  }

  /** Stops tracking for good. */
  close() {
    this.reset();
    this.#registry.detach();
  }
}
