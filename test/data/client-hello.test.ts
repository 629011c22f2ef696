// The ClientHello parser: real hellos from node:tls (one record, or re-cut into many), names in any
// case, every prefix "incomplete" with a need beyond it, and fuzzing (random bytes, truncation,
// single-byte mutations, malformed extensions, SSLv2 hellos, oversized records): nothing throws,
// nothing is held past MAX_HELLO_BYTES, and a name comes out only when the hello carries it.

import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';
import t from 'tap';
import { MAX_HELLO_BYTES, parseClientHello } from '../../src/data/client-hello.ts';

/** The first bytes node:tls sends when it connects asking for `servername` (null: none). */
async function captureHello(servername: string | null): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const server = net.createServer((socket) => {
    socket.on('data', (chunk) => {
      chunks.push(chunk);
      if (parseClientHello(Buffer.concat(chunks)).status === 'done') socket.destroy();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const client = tls.connect({
    host: '127.0.0.1',
    port,
    rejectUnauthorized: false,
    ...(servername === null ? {} : { servername }),
  });
  client.on('error', () => {});
  await new Promise((resolve) => client.on('close', resolve));
  server.close();
  return Buffer.concat(chunks);
}

/** A hand-built ClientHello record with these extensions (type, body). */
function buildHello(extensions: Array<[number, Buffer]>, sessionId = 32): Buffer {
  const ext = Buffer.concat(
    extensions.map(([type, body]) => {
      const head = Buffer.alloc(4);
      head.writeUInt16BE(type, 0);
      head.writeUInt16BE(body.length, 2);
      return Buffer.concat([head, body]);
    }),
  );
  const extLength = Buffer.alloc(2);
  extLength.writeUInt16BE(ext.length);
  const body = Buffer.concat([
    Buffer.from([3, 3]),
    randomBytes(32),
    Buffer.from([sessionId]),
    randomBytes(sessionId),
    Buffer.from([0, 2, 0x13, 0x01]), // one cipher suite
    Buffer.from([1, 0]), // null compression
    extLength,
    ext,
  ]);
  const handshake = Buffer.concat([
    Buffer.from([1, body.length >> 16, (body.length >> 8) & 0xff, body.length & 0xff]),
    body,
  ]);
  return record(handshake);
}

function record(payload: Buffer, type = 0x16): Buffer {
  const head = Buffer.from([type, 3, 1, 0, 0]);
  head.writeUInt16BE(payload.length, 3);
  return Buffer.concat([head, payload]);
}

/** A server_name extension body naming `names` (type 0 each). */
function sni(...names: Array<string | Buffer>): Buffer {
  const entries = Buffer.concat(
    names.map((name) => {
      const bytes = typeof name === 'string' ? Buffer.from(name, 'latin1') : name;
      const head = Buffer.from([0, 0, 0]);
      head.writeUInt16BE(bytes.length, 1);
      return Buffer.concat([head, bytes]);
    }),
  );
  const list = Buffer.alloc(2);
  list.writeUInt16BE(entries.length);
  return Buffer.concat([list, entries]);
}

/** The same hello cut into records of at most `size` bytes of handshake each. */
function recut(hello: Buffer, size: number): Buffer {
  const handshake = hello.subarray(5);
  const records: Buffer[] = [];
  for (let at = 0; at < handshake.length; at += size) {
    records.push(record(handshake.subarray(at, at + size)));
  }
  return Buffer.concat(records);
}

function nameOf(bytes: Buffer): string | null | 'incomplete' {
  const parsed = parseClientHello(bytes);
  return parsed.status === 'done' ? parsed.serverName : 'incomplete';
}

t.test('real node:tls hellos: the name, lowercased; none when none is sent', async (t) => {
  const hello = await captureHello('Api.Example.COM');
  t.equal(nameOf(hello), 'api.example.com');
  t.equal(nameOf(await captureHello(null)), null, 'no server_name extension');
  t.equal(nameOf(Buffer.concat([hello, Buffer.from('more bytes after')])), 'api.example.com');
});

t.test('a hello over many records, and every prefix of it is incomplete', async (t) => {
  const hello = await captureHello('db.internal.example');
  for (const size of [1, 3, 50, 200]) {
    const cut = recut(hello, size);
    t.equal(nameOf(cut), 'db.internal.example', `records of ${size} bytes`);
  }
  const cut = recut(hello, 7);
  let parses = 0;
  let got = 0;
  let need = 1;
  // As a dribbling client would be parsed: only once `need` bytes are in.
  for (let length = 0; length <= cut.length; length++) {
    if (length < need) continue;
    const parsed = parseClientHello(cut, length);
    parses++;
    if (parsed.status === 'incomplete') {
      if (parsed.need <= length) t.fail(`need ${parsed.need} at ${length}`);
      need = parsed.need;
    } else {
      got = length;
      t.equal(parsed.serverName, 'db.internal.example');
    }
  }
  t.equal(got, cut.length, 'done exactly when the last record is in');
  t.ok(parses <= Math.ceil(cut.length / 12) * 2 + 2, `${parses} parses, about two per record`);
});

t.test('hand-built hellos: extensions before the name, names in odd forms', async (t) => {
  t.equal(nameOf(buildHello([[0, sni('a.example.com')]])), 'a.example.com');
  t.equal(
    nameOf(
      buildHello([
        [0x2b, Buffer.from([2, 3, 4])],
        [0, sni('B.example.com.')],
      ]),
    ),
    'b.example.com',
    'trailing dot dropped, after another extension',
  );
  t.equal(nameOf(buildHello([[0, sni('first.example', 'second.example')]])), 'first.example');
  t.equal(nameOf(buildHello([], 0)), null, 'extensions block empty');
  for (const bad of [
    'with space.example',
    'a..b',
    '.lead',
    'x'.repeat(64),
    '',
    'ü.example',
    'a\u0000b',
    'a\u0010b',
  ]) {
    t.equal(nameOf(buildHello([[0, sni(bad)]])), null, `not a host name: ${JSON.stringify(bad)}`);
  }
  t.equal(
    nameOf(buildHello([[0, sni(`${'a.'.repeat(126)}a`)]])),
    `${'a.'.repeat(126)}a`,
    '253 characters',
  );
  t.equal(nameOf(buildHello([[0, sni(`${'a.'.repeat(127)}a`)]])), null, '255 characters');
});

t.test('what is not a ClientHello names no server', async (t) => {
  t.equal(nameOf(Buffer.from('GET / HTTP/1.1\r\n')), null, 'plain text');
  t.equal(nameOf(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])), null, 'an SSLv2-style hello');
  t.equal(nameOf(record(Buffer.from([2, 0, 0, 1, 0]))), null, 'a handshake that is not a hello');
  t.equal(nameOf(record(Buffer.from('x'), 0x17)), null, 'application data');
  t.equal(nameOf(Buffer.from([0x16, 2, 0])), null, 'record version is not 3.x');
  t.equal(nameOf(Buffer.from([0x16, 3, 1, 0, 0])), null, 'an empty record');
  t.equal(nameOf(Buffer.from([0x16, 3, 1, 0x40, 0x01])), null, 'a record over 16 KiB');
  const huge = Buffer.from([0x16, 3, 1, 0x40, 0, 1, 0x00, 0x40, 0x01]);
  t.equal(nameOf(huge), null, 'a hello that says it is over 16 KiB');
  const hello = await captureHello('x.example');
  const afterApp = Buffer.concat([
    recut(hello, 20).subarray(0, 25),
    record(Buffer.from('x'), 0x17),
  ]);
  t.equal(nameOf(afterApp), null, 'another record type before the hello is whole');
  t.equal(nameOf(Buffer.from([0x16])), 'incomplete', 'one byte that could start one');
  t.equal(nameOf(Buffer.alloc(0)), 'incomplete');
});

t.test('the most a client can make us read is MAX_HELLO_BYTES', async (t) => {
  // A maximal hello in 1000-byte records: read whole; one byte more handshake and it is not.
  const padding = (n: number): [number, Buffer] => [21, Buffer.alloc(n)];
  const base = buildHello([[0, sni('big.example')]]).length - 5 - 4;
  const full = buildHello([[0, sni('big.example')], padding(16384 - base - 4)]);
  t.equal(full.length - 5 - 4, 16384, 'a handshake body of exactly 16 KiB');
  t.equal(nameOf(recut(full, 2000)), 'big.example');
  const over = buildHello([[0, sni('big.example')], padding(16384 - base - 3)]);
  t.equal(nameOf(recut(over, 2000)), null);
  for (let length = 0; length < 300; length++) {
    const parsed = parseClientHello(recut(full, 1), length);
    if (parsed.status === 'incomplete' && parsed.need > MAX_HELLO_BYTES) t.fail('need past max');
  }
  t.equal(nameOf(recut(full, 1)), null, 'one-byte records: too many bytes for a name');
});

t.test('fuzz: random, truncated and mutated hellos never throw or overreach', async (t) => {
  const real = await captureHello('fuzz.example.org');
  const samples = [real, recut(real, 40), buildHello([[0, sni('m.example')]])];
  let count = 0;
  const check = (input: Buffer, what: string) => {
    count++;
    let parsed: ReturnType<typeof parseClientHello>;
    try {
      parsed = parseClientHello(input);
    } catch (err) {
      t.fail(`${what} threw: ${(err as Error).message}`);
      return;
    }
    if (parsed.status === 'incomplete') {
      if (parsed.need <= input.length || parsed.need > MAX_HELLO_BYTES) t.fail(`${what}: need`);
    } else if (parsed.serverName !== null && !/^[a-z0-9_.-]+$/.test(parsed.serverName)) {
      t.fail(`${what}: not a host name: ${parsed.serverName}`);
    }
  };
  for (let k = 0; k < 20_000; k++) {
    const input = randomBytes(k % 300);
    if (k % 2 === 0 && input.length > 3) input.set([0x16, 3, 1]);
    check(input, 'random');
  }
  for (const sample of samples) {
    for (let length = 0; length <= sample.length; length++) {
      check(sample.subarray(0, length), 'truncated');
    }
    for (let at = 0; at < sample.length; at++) {
      for (const value of [0x00, 0x01, 0x20, 0x7f, 0x80, 0xff]) {
        const mutated = Buffer.from(sample);
        mutated[at] = value;
        check(mutated, `mutated at ${at}`);
      }
    }
  }
  t.ok(count > 30_000, `${count} inputs parsed without throwing`);
});
