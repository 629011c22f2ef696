// A tiny DNS server on loopback for discovery tests: it answers from a zone the test edits, can
// fail (SERVFAIL) or hold its answers until released, and counts the questions it got.

import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import dnsPacket from 'dns-packet';

export type Zone = Map<string, dnsPacket.Answer[]>;

/**
 * A DNS server answering from `zone` (name -> records); `failing` answers SERVFAIL; while
 * `holding`, answers wait until release(). `asked`: questions received so far, so a test can wait
 * for DNS rounds instead of sleeping.
 */
export async function dnsServer(t: { teardown(fn: () => unknown): void }) {
  const zone: Zone = new Map();
  const held: Array<() => void> = [];
  const state = { failing: false, holding: false, zone, asked: 0 };
  /** The answer to `message`, given to `send` now or, while holding, on release(). */
  const answer = (message: Buffer, send: (response: Buffer) => void) => {
    const request = dnsPacket.decode(message);
    state.asked++;
    const question = request.questions?.[0];
    const answers = state.failing
      ? []
      : (zone.get(question?.name ?? '') ?? []).filter((a) => a.type === question?.type);
    const response = dnsPacket.encode({
      type: 'response',
      id: request.id,
      flags: state.failing ? 2 : dnsPacket.AUTHORITATIVE_ANSWER, // 2: SERVFAIL
      questions: request.questions,
      answers,
    });
    if (state.holding) held.push(() => send(response));
    else send(response);
  };
  const onDatagram = (socket: dgram.Socket) => (message: Buffer, peer: dgram.RemoteInfo) => {
    answer(message, (response) => {
      // Too big for a datagram: say it is truncated, and the resolver asks again over TCP.
      if (response.length > 512) {
        const header = Buffer.from(response.subarray(0, 12));
        header[2] |= 0x02; // TC
        header.writeUInt16BE(0, 6); // no answers
        header.writeUInt16BE(0, 8);
        header.writeUInt16BE(0, 10);
        const question = dnsPacket.decode(message);
        response = Buffer.concat([
          header,
          dnsPacket.encode({ ...question, type: 'response' }).subarray(12),
        ]);
      }
      socket.send(response, peer.port, peer.address);
    });
  };
  // Over TCP too, for answers too big for UDP: each message has a 2-byte length.
  const onStream = (conn: net.Socket) => {
    conn.on('error', () => {});
    let pending = Buffer.alloc(0);
    conn.on('data', (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      while (pending.length >= 2 && pending.length >= 2 + pending.readUInt16BE(0)) {
        const message = pending.subarray(2, 2 + pending.readUInt16BE(0));
        pending = pending.subarray(2 + message.length);
        answer(message, (response) => {
          const length = Buffer.alloc(2);
          length.writeUInt16BE(response.length);
          conn.write(Buffer.concat([length, response]));
        });
      }
    });
  };
  // One port for both: TCP takes a free one, UDP follows; taken for UDP, both try again.
  for (let attempt = 1; ; attempt++) {
    const tcp = net.createServer(onStream);
    tcp.listen(0, '127.0.0.1');
    await once(tcp, 'listening');
    const port = (tcp.address() as net.AddressInfo).port;
    const socket = dgram.createSocket('udp4');
    socket.on('message', onDatagram(socket));
    const bound = await new Promise<boolean>((resolve) => {
      socket.once('error', () => resolve(false));
      socket.bind(port, '127.0.0.1', () => resolve(true));
    });
    if (!bound) {
      tcp.close();
      socket.close();
      if (attempt === 20) throw new Error('no port free for both UDP and TCP');
      continue;
    }
    t.teardown(() => {
      socket.close();
      tcp.close();
    });
    /** Stops holding and sends every answer held so far. */
    const release = () => {
      state.holding = false;
      for (const send of held.splice(0)) send();
    };
    return { state, release, address: `127.0.0.1:${port}` };
  }
}

/** A records for `name`, with a TTL of a second. */
export function a(name: string, ...addresses: string[]): dnsPacket.Answer[] {
  return addresses.map((data) => ({ type: 'A', name, ttl: 1, data }) as dnsPacket.Answer);
}
