// The Node-RED nodes: `mqtt-connection` (configuration node),
// `mqtt-connector send` and `mqtt-connector listen`, running the MQTT
// connector component (see ../lib). Their editor forms come from the
// component's schemas (mqtt-connector.html, through the admin endpoints
// registered here) and their configurations are checked by the component.

const SEND_BATCH_MAX = 1000;
/** Messages a Send node holds while the broker is slower than the flow. */
const SEND_QUEUE_LIMIT = 10_000;
/** Messages a Listen node has out in the flow, not yet done. */
const LISTEN_IN_FLIGHT_MAX = 1000;
const LISTEN_WAIT_MS = 1000;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;
const STATUS_EVERY_MS = 500;
/** Errors that opening again would only repeat. */
const PERMANENT = new Set(['invalid-config', 'not-authorized']);

module.exports = async function (RED) {
  const lib = await import('../lib/index.mjs');
  // Fails the module's loading, with what to do, when the package was not
  // built; and has the component compiled before the first deploy.
  await lib.describe();

  /** The problems of a node's configurations, pointers prefixed by what. */
  async function problemsOf(connectionNode, kind, config) {
    if (!connectionNode) {
      return [{ pointer: 'connection', message: 'no MQTT connection is configured' }];
    }
    const [forConnection, forOperation] = await Promise.all([
      lib.validate('connection', connectionNode.configuration()),
      lib.validate(kind, config),
    ]);
    return [
      ...forConnection.map((p) => ({ pointer: `connection${p.pointer || '/'}`, message: p.message })),
      ...forOperation.map((p) => ({ pointer: p.pointer || '/', message: p.message })),
    ];
  }

  function problemStatus(problems) {
    const [first] = problems;
    const more = problems.length > 1 ? ` (+${problems.length - 1} more)` : '';
    return { fill: 'red', shape: 'ring', text: `${first.pointer}: ${first.message}${more}` };
  }

  function guestLog(node) {
    return (level, message) => {
      switch (level) {
        case 'debug': node.debug(message); break;
        case 'warn': node.warn(message); break;
        case 'error': node.error(message); break;
        default: node.log(message);
      }
    };
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  /**
   * Opens an operation, retrying while the broker cannot be reached:
   * `{ op }`, or `{ error }` when the error would only repeat, or `{}` when
   * the node closed first.
   */
  async function openWithRetry(node, Operation, connectionNode, config, isClosed) {
    let delay = RETRY_MIN_MS;
    while (!isClosed()) {
      node.status({ fill: 'yellow', shape: 'ring', text: 'connecting' });
      try {
        const op = await Operation.open(connectionNode.configuration(), config, {
          allow: (url) => connectionNode.allows(url),
          log: guestLog(node),
        });
        if (isClosed()) {
          await op.close();
          return {};
        }
        return { op };
      } catch (e) {
        const code = e.code ?? 'internal';
        node.status({ fill: 'red', shape: 'ring', text: `${code}: ${e.message}` });
        node.error(`cannot open the ${Operation === lib.Sender ? 'send' : 'listen'} operation: ${code}: ${e.message}`);
        if (PERMANENT.has(code)) return { error: { code, message: e.message, reasonCode: e.reasonCode } };
        await sleep(delay);
        delay = Math.min(RETRY_MAX_MS, delay * 2);
      }
    }
    return {};
  }

  // ----- mqtt-connection -----

  function MqttConnectionNode(n) {
    RED.nodes.createNode(this, n);
    this.name = n.name;
    this.connection = n.connection && typeof n.connection === 'object' ? n.connection : {};
  }

  /** The connection configuration, with the password from credentials. */
  MqttConnectionNode.prototype.configuration = function () {
    const c = { ...this.connection };
    if (this.credentials && this.credentials.password) c.password = this.credentials.password;
    return c;
  };

  /**
   * Whether an operation may connect to `url`: only the configured broker,
   * and only one the settings' `mqttConnectionAllowedBrokers` lists, if
   * they list any.
   */
  MqttConnectionNode.prototype.allows = function (url) {
    const listed = RED.settings.mqttConnectionAllowedBrokers;
    if (Array.isArray(listed) && !listed.includes(url)) return false;
    return url === this.connection.url;
  };

  RED.nodes.registerType('mqtt-connection', MqttConnectionNode, {
    credentials: { password: { type: 'password' } },
    settings: { mqttConnectionAllowedBrokers: { value: undefined, exportable: false } },
  });

  // ----- mqtt-connector send -----

  function SendNode(n) {
    RED.nodes.createNode(this, n);
    const node = this;
    const connectionNode = RED.nodes.getNode(n.connection);
    const config = n.config && typeof n.config === 'object' ? n.config : {};
    const overrides = config.overrides ?? {};
    const failureWired = Array.isArray(n.wires) && Array.isArray(n.wires[1]) && n.wires[1].length > 0;
    let sender = null;
    let refusal = null;
    let closed = false;
    let busy = false;
    const queue = [];
    const counts = { sent: 0, failed: 0 };
    let statusTimer = null;

    const showCounts = () => {
      if (statusTimer) return;
      statusTimer = setTimeout(() => {
        statusTimer = null;
        if (closed || !sender) return;
        const failed = counts.failed > 0 ? `, ${counts.failed} failed` : '';
        node.status({ fill: 'green', shape: 'dot', text: `connected · ${counts.sent} sent${failed}` });
      }, STATUS_EVERY_MS);
    };

    const report = (entry, result) => {
      if (result.tag === 'ok') {
        counts.sent += 1;
        entry.send([entry.msg, null]);
        entry.done();
        return;
      }
      counts.failed += 1;
      const e = result.val;
      entry.msg.error = { code: e.code, message: e.message, reasonCode: e.reasonCode };
      if (failureWired) {
        entry.send([null, entry.msg]);
        entry.done();
      } else {
        entry.done(new Error(`${e.code}: ${e.message}`));
      }
    };

    const failAll = (error) => {
      for (const entry of queue.splice(0)) {
        report(entry, { tag: 'err', val: error });
      }
    };

    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        while (queue.length > 0 && sender && !closed) {
          const batch = queue.splice(0, SEND_BATCH_MAX);
          const documents = batch.map((entry, i) => lib.messageToDocument(entry.msg, i, overrides));
          let results;
          try {
            results = await sender.send(documents);
          } catch (e) {
            // The instance broke: the batch's outcome is unknown.
            const error = { code: 'internal', message: e.message };
            results = documents.map(() => ({ tag: 'err', val: error }));
            if (sender.broken) {
              sender = null;
              start();
            }
          }
          results.forEach((result, i) => report(batch[i], result));
          showCounts();
        }
      } finally {
        busy = false;
      }
    };

    const start = async () => {
      const { op, error } = await openWithRetry(node, lib.Sender, connectionNode, config, () => closed);
      if (!op) {
        if (error) {
          refusal = error;
          failAll(refusal);
        }
        return;
      }
      sender = op;
      node.status({ fill: 'green', shape: 'dot', text: 'connected' });
      pump();
    };

    node.on('input', (msg, send, done) => {
      if (refusal) {
        report({ msg, send, done }, { tag: 'err', val: refusal });
        return;
      }
      if (queue.length >= SEND_QUEUE_LIMIT) {
        report({ msg, send, done }, {
          tag: 'err',
          val: { code: 'internal', message: `the send queue is full (${SEND_QUEUE_LIMIT} messages wait for the broker)` },
        });
        return;
      }
      queue.push({ msg, send, done });
      pump();
    });

    node.on('close', async (removed, done) => {
      closed = true;
      clearTimeout(statusTimer);
      failAll({ code: 'closed', message: 'the node was stopped' });
      const op = sender;
      sender = null;
      if (op) await op.close();
      done();
    });

    problemsOf(connectionNode, 'send', config).then((problems) => {
      if (closed) return;
      if (problems.length > 0) {
        refusal = { code: 'invalid-config', message: problems.map((p) => `${p.pointer}: ${p.message}`).join('; ') };
        node.status(problemStatus(problems));
        node.error(`invalid configuration: ${refusal.message}`);
        failAll(refusal);
        return;
      }
      start();
    }, (e) => node.error(e));
  }

  RED.nodes.registerType('mqtt-connector send', SendNode);

  // ----- mqtt-connector listen -----

  function ListenNode(n) {
    RED.nodes.createNode(this, n);
    const node = this;
    const connectionNode = RED.nodes.getNode(n.connection);
    const config = n.config && typeof n.config === 'object' ? n.config : {};
    const form = lib.PAYLOAD_FORMS.includes(n.payloadForm) ? n.payloadForm : 'auto';
    let listener = null;
    let closed = false;
    let finished = false;
    let toCommit = [];
    let commitScheduled = false;
    let notDone = 0;
    let wake = null;
    let statusTimer = null;

    const showStatus = () => {
      if (statusTimer) return;
      statusTimer = setTimeout(() => {
        statusTimer = null;
        if (closed || !listener) return;
        const parts = [finished ? 'snapshot finished' : 'connected'];
        if (tracker.outstanding > 0) parts.push(`${tracker.outstanding} in flow`);
        if (notDone > 0) parts.push(`${notDone} failed, not acknowledged`);
        node.status({ fill: notDone > 0 ? 'yellow' : 'green', shape: 'dot', text: parts.join(' · ') });
      }, STATUS_EVERY_MS);
    };

    const commit = () => {
      commitScheduled = false;
      const ids = toCommit;
      toCommit = [];
      if (ids.length === 0 || !listener) return;
      // A failed commit means redelivery, never loss.
      listener.commit(ids).catch((e) => node.debug(`commit failed: ${e.message}`));
    };

    const tracker = new lib.CompletionTracker(RED.hooks, node.id, (id, failed) => {
      if (failed) {
        notDone += 1;
      } else {
        toCommit.push(id);
        if (!commitScheduled) {
          commitScheduled = true;
          setImmediate(commit);
        }
      }
      showStatus();
      if (wake) wake();
    });

    const pause = (ms) => new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        wake = null;
        resolve();
      }
      wake = done;
    });

    const drop = async () => {
      const op = listener;
      listener = null;
      // Messages of the lost instance are void; the broker sends them again.
      tracker.reset();
      toCommit = [];
      if (op) await op.close();
    };

    const emit = (doc) => {
      let msg;
      try {
        msg = lib.documentToMessage(doc, form);
      } catch (e) {
        notDone += 1;
        node.error(`message ${doc.id} not acknowledged: its payload is not JSON (${e.message})`);
        return;
      }
      tracker.send(msg, doc.id, (m) => node.send(m));
    };

    const run = async () => {
      let delay = RETRY_MIN_MS;
      while (!closed) {
        if (!listener) {
          ({ op: listener = null } = await openWithRetry(node, lib.Listener, connectionNode, config, () => closed));
          if (!listener) return;
          node.status({ fill: 'green', shape: 'dot', text: 'connected' });
        }
        if (finished || tracker.outstanding >= LISTEN_IN_FLIGHT_MAX) {
          await pause(LISTEN_WAIT_MS);
          continue;
        }
        let docs;
        try {
          docs = await listener.next(LISTEN_IN_FLIGHT_MAX - tracker.outstanding, LISTEN_WAIT_MS);
        } catch (e) {
          if (closed) return;
          node.status({ fill: 'red', shape: 'ring', text: `${e.code ?? 'internal'}: ${e.message}` });
          node.error(`listening failed: ${e.message}`);
          await drop();
          await sleep(delay);
          delay = Math.min(RETRY_MAX_MS, delay * 2);
          continue;
        }
        if (closed) return;
        delay = RETRY_MIN_MS;
        if (docs.length === 0) {
          if (!closed && listener && (await listener.done().catch(() => false))) {
            finished = true;
            showStatus();
          }
          continue;
        }
        for (const doc of docs) emit(doc);
        showStatus();
      }
    };

    node.on('close', async (removed, done) => {
      closed = true;
      clearTimeout(statusTimer);
      if (wake) wake();
      tracker.close();
      const op = listener;
      listener = null;
      if (op) await op.close();
      done();
    });

    problemsOf(connectionNode, 'listen', config).then((problems) => {
      if (closed) return;
      if (problems.length > 0) {
        node.status(problemStatus(problems));
        node.error(`invalid configuration: ${problems.map((p) => `${p.pointer}: ${p.message}`).join('; ')}`);
        return;
      }
      run().catch((e) => node.error(e));
    }, (e) => node.error(e));
  }

  RED.nodes.registerType('mqtt-connector listen', ListenNode);

  // ----- editor endpoints -----

  RED.httpAdmin.get('/mqtt-connector/describe', RED.auth.needsPermission('mqtt-connection.read'), (req, res) => {
    lib.describe().then((d) => res.json(d), (e) => res.status(500).json({ error: e.message }));
  });

  RED.httpAdmin.post('/mqtt-connector/validate', RED.auth.needsPermission('mqtt-connection.read'), (req, res) => {
    const { kind, config } = req.body ?? {};
    if (!['connection', 'send', 'listen'].includes(kind)) {
      res.status(400).json({ error: 'kind must be connection, send or listen' });
      return;
    }
    lib.validate(kind, config ?? {}).then(
      (problems) => res.json({ problems }),
      (e) => res.status(500).json({ error: e.message }),
    );
  });
};
