// A broker the test drives packet by packet (MQTT 3.1.1, one client at a
// time): it answers CONNECT, SUBSCRIBE and PINGREQ by itself and leaves
// everything else to the test, so a test can hold back a PUBREL and see
// what the client does meanwhile.

import mqttPacket from 'mqtt-packet';
import { serveLoopback } from './broker.mjs';
import { within } from './wait.mjs';

const PROTOCOL = { protocolVersion: 4 };

/** Starts the broker on a free loopback port; resolves its handle. */
export async function startScriptedBroker() {
  const received = [];
  let socket = null;
  let arrived = () => {};
  const { url, stop } = await serveLoopback((s) => {
    socket = s;
    const parser = mqttPacket.parser(PROTOCOL);
    parser.on('packet', (packet) => {
      if (packet.cmd === 'connect') {
        send({ cmd: 'connack', returnCode: 0, sessionPresent: false });
      } else if (packet.cmd === 'subscribe') {
        send({ cmd: 'suback', messageId: packet.messageId, granted: packet.subscriptions.map((x) => x.qos) });
      } else if (packet.cmd === 'pingreq') {
        send({ cmd: 'pingresp' });
      }
      received.push(packet);
      arrived();
    });
    parser.on('error', (e) => s.destroy(e));
    s.on('data', (chunk) => parser.parse(chunk));
    s.on('error', () => {});
  });

  function send(packet) {
    if (!socket) throw new Error('no client is connected');
    socket.write(mqttPacket.generate(packet, PROTOCOL));
  }

  return {
    url,
    /** Writes `packet` (an mqtt-packet object) to the client. */
    send,
    /** The first packet from the client matching `test`, waiting for it. */
    async expect(what, test) {
      return within(5000, what, new Promise((resolve) => {
        const look = () => {
          const found = received.find(test);
          if (found) {
            arrived = () => {};
            resolve(found);
          }
        };
        arrived = look;
        look();
      }));
    },
    stop,
  };
}
