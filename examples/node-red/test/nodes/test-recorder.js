// A node for the tests and the bench: records every message it receives
// (in globalThis.__mqttConnectorTestRecords, by node id; with `count` set,
// only how many, in globalThis.__mqttConnectorTestCounts) and then calls
// done(), except for a payload listed in `hold` (it never calls done() for
// those) or in `fail` (it calls done(err)).

module.exports = function (RED) {
  const records = (globalThis.__mqttConnectorTestRecords ??= new Map());
  const counts = (globalThis.__mqttConnectorTestCounts ??= new Map());

  function TestRecorder(config) {
    RED.nodes.createNode(this, config);
    const hold = new Set(config.hold ?? []);
    const fail = new Set(config.fail ?? []);
    if (config.count) {
      this.on('input', (msg, send, done) => {
        counts.set(this.id, (counts.get(this.id) ?? 0) + 1);
        done();
      });
      return;
    }
    this.on('input', (msg, send, done) => {
      if (!records.has(this.id)) records.set(this.id, []);
      records.get(this.id).push(msg);
      const payload = String(msg.payload);
      if (hold.has(payload)) return;
      if (fail.has(payload)) {
        done(new Error(`test recorder fails ${payload}`));
        return;
      }
      done();
    });
  }

  RED.nodes.registerType('test recorder', TestRecorder);
};
