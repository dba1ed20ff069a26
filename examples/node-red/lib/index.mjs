// What the Node-RED nodes (nodes/mqtt-connector.js) use.

export { describe, validate, Sender, Listener, ConnectorError, InstanceBroken } from './connector.mjs';
export { messageToDocument, documentToMessage, PAYLOAD_FORMS } from './documents.mjs';
export { CompletionTracker } from './completion.mjs';
export { NotBuiltError } from './component.mjs';
