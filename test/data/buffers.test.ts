// Read buffers, observed in-process: a frontend runs in this test's own thread, so the worker's
// buffer pool can be asked directly. An idle connection holds no buffer at all (small reads land
// in the thread's shared buffer and are copied out before their write); after a burst, quiet
// connections hand every large buffer back (at the latest at the next idle sweep); and data
// still flows, byte-exact, whatever pends.

import { createHash, randomBytes } from 'node:crypto';
import type net from 'node:net';
import t from 'tap';
import {
  LARGE_SIZE,
  largeBuffersInUse,
  SMALL_SIZE,
  smallBuffersInUse,
} from '../../src/data/buffers.ts';
import { BUFFER_RELEASE_MS, updateNow } from '../../src/data/clock.ts';
import type { Connection } from '../../src/data/connection.ts';
import { MAX_RELEASES, releaseIdleBuffers } from '../../src/data/connection.ts';
import { startLocalFrontend } from '../../src/local.ts';
import { LIVE } from '../../src/shared/counters.ts';
import { connect, startBackend, waitFor } from '../helpers.ts';

const CONNECTIONS = 100;
const BURST = 256 * 1024;

function sha(buffer: Buffer): string {
  return createHash('sha256').update(buffer).digest('hex');
}

/** Reads exactly `size` bytes from a socket that was paused until now (so fulcrum's writes pend). */
async function receive(socket: net.Socket, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let got = 0;
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      chunks.push(chunk);
      got += chunk.length;
      if (got >= size) {
        socket.off('data', onData);
        socket.pause();
        resolve();
      }
    };
    socket.on('data', onData);
    socket.resume();
  });
  return Buffer.concat(chunks);
}

t.test('quiet connections give their large buffers back; data stays exact', async (t) => {
  const bursts = [randomBytes(BURST), randomBytes(BURST)];
  // Sends a first burst at once, and a second one when asked.
  const backend = await startBackend((socket) => {
    socket.write(bursts[0]);
    socket.on('data', () => socket.write(bursts[1]));
  });
  const local = await startLocalFrontend([
    '--listen',
    '127.0.0.1:0',
    '--backend',
    backend.address,
    '--retries',
    '0',
  ]);
  t.ok(local.hooked, 'the accept hook is in use, so both sides read through onread');
  const { frontend, port } = local;
  const sockets: net.Socket[] = [];
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    local.close();
    await backend.close();
  });

  for (let k = 0; k < CONNECTIONS; k++) {
    const socket = await connect(port);
    socket.pause();
    sockets.push(socket);
  }
  await new Promise((resolve) => setTimeout(resolve, 100)); // let fulcrum's writes to them pend
  const first = await Promise.all(sockets.map((s) => receive(s, BURST)));
  for (const data of first) t.equal(sha(data), sha(bursts[0]), 'first burst exact');

  await new Promise((resolve) => setTimeout(resolve, BUFFER_RELEASE_MS + 200));
  updateNow();
  frontend.sweepIdle();
  t.equal(largeBuffersInUse(), 0, 'no large buffer held by a quiet connection');

  // The sockets re-pointed to their small buffers still carry data exactly, both ways.
  for (const s of sockets) s.write('again');
  const second = await Promise.all(sockets.map((s) => receive(s, BURST)));
  for (const data of second) t.equal(sha(data), sha(bursts[1]), 'second burst exact');
  await new Promise((resolve) => setTimeout(resolve, BUFFER_RELEASE_MS + 200));
  updateNow();
  frontend.sweepIdle();
  t.equal(largeBuffersInUse(), 0, 'and given back again after the second burst');
});

t.test(
  'a socket the sweep re-points again and again keeps its large buffer after a bound',
  async (t) => {
    // Each burst is 1 KiB and then 64 KiB, written at once: fulcrum's backend side reads the first
    // KiB into the shared buffer, moves to a large one and fills it with the rest. A stream that
    // stopped at a full read keeps the large buffer until the sweep re-points it, which costs Node
    // a listener object each time: after MAX_RELEASES the socket keeps its buffer instead.
    let upstream: net.Socket | null = null;
    const backend = await startBackend((socket) => {
      upstream = socket;
      socket.on('end', () => socket.end());
    });
    const local = await startLocalFrontend([
      '--listen',
      '127.0.0.1:0',
      '--backend',
      backend.address,
    ]);
    const client = await connect(local.port);
    client.pause();
    t.teardown(async () => {
      local.close();
      await backend.close();
    });
    await waitFor(() => upstream !== null && local.frontend.established.head !== null, 3000, 'up');
    const conn = local.frontend.established.head as Connection;
    let released = 0;
    let kept = 0;
    for (let cycle = 0; cycle < 200 && kept < 3; cycle++) {
      const burst = randomBytes(SMALL_SIZE + LARGE_SIZE);
      (upstream as unknown as net.Socket).write(burst);
      t.equal(sha(await receive(client, burst.length)), sha(burst), 'burst exact');
      await waitFor(() => !conn.backend.stalled, 3000, 'the backend side reading again');
      if (largeBuffersInUse() !== 1) continue; // the reads fell otherwise this time
      releaseIdleBuffers(conn);
      if (largeBuffersInUse() === 0) released++;
      else kept++;
    }
    t.equal(released, MAX_RELEASES, `given back ${MAX_RELEASES} times`);
    t.equal(kept, 3, 'then kept, however often the sweep comes');
    t.equal(conn.backend.releases, MAX_RELEASES, 'no re-point beyond the bound');
    client.destroy();
    await waitFor(() => local.frontend.slot[LIVE] === 0, 3000, 'the connection to finish');
    t.equal(largeBuffersInUse(), 0, 'the kept buffer given back when the connection ends');
  },
);

/** Sends `first` (a header or hello, and a request), then a second request; each is echoed. */
async function twoRequests(port: number, first: Buffer, echoed: number): Promise<void> {
  const socket = await connect(port);
  socket.pause();
  socket.write(first);
  await receive(socket, echoed);
  const second = randomBytes(3000);
  socket.write(second);
  t.equal(sha(await receive(socket, second.length)), sha(second), 'the second request is exact');
  socket.destroy();
  await new Promise((resolve) => socket.once('close', resolve));
}

// The read that completes a PROXY header or a ClientHello connects to a backend, and the next
// buffer the client reads into must still be its own (regression: it was the backend socket's
// small buffer, which the relay then gave to the large-buffer pool as if it were large).
for (const [what, args, first] of [
  [
    'a PROXY header',
    ['--listen', '127.0.0.1:0,accept-proxy'],
    Buffer.from('PROXY TCP4 127.0.0.1 127.0.0.1 40000 443\r\nhello'),
  ],
  [
    'a ClientHello',
    ['--listen', '127.0.0.1:0', '--algorithm', 'maglev', '--hash-key', 'sni'],
    Buffer.concat([
      Buffer.from([0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0]), // a short, malformed hello
      Buffer.from('hello'),
    ]),
  ],
] as const) {
  t.test(`after ${what}, each socket reads into its own buffers`, async (t) => {
    const backend = await startBackend((socket) => socket.pipe(socket));
    const local = await startLocalFrontend([...args, '--backend', backend.address]);
    t.teardown(async () => {
      local.close();
      await backend.close();
    });
    const echoed = what === 'a PROXY header' ? 5 : first.length;
    for (let k = 0; k < 10; k++) await twoRequests(local.port, first, echoed);
    await waitFor(() => local.frontend.slot[LIVE] === 0, 3000, 'every connection to finish');
    t.equal(largeBuffersInUse(), 0, 'no buffer given back that was not taken');
  });
}

t.test('idle connections hold no buffer; small writes that pend stay exact', async (t) => {
  // The backend reads nothing until told, so fulcrum's writes to it pend while clients send
  // small chunks (each read under 1 KiB lands in the shared buffer and is copied out).
  const held: net.Socket[] = [];
  const backend = await startBackend((socket) => {
    socket.pipe(socket);
    socket.pause(); // after pipe(), which resumes its source
    held.push(socket);
  });
  const local = await startLocalFrontend(['--listen', '127.0.0.1:0', '--backend', backend.address]);
  t.teardown(async () => {
    local.close();
    await backend.close();
  });
  const sockets: net.Socket[] = [];
  for (let k = 0; k < 20; k++) sockets.push(await connect(local.port));
  await waitFor(() => held.length === 20, 5000, 'every connection at the backend');
  t.equal(smallBuffersInUse(), 0, 'connected and idle: no small buffer held');
  t.equal(largeBuffersInUse(), 0, 'and no large one');

  // Many small writes per connection, each on its own turn of the loop so reads stay small.
  const sent = sockets.map(() => [] as Buffer[]);
  for (let round = 0; round < 200; round++) {
    for (let k = 0; k < sockets.length; k++) {
      const chunk = randomBytes(1 + ((round * 37 + k * 11) % 900));
      sent[k].push(chunk);
      sockets[k].write(chunk);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const expected = sent.map((chunks) => Buffer.concat(chunks));
  for (const s of held) s.resume();
  const echoed = await Promise.all(
    sockets.map((s, k) => {
      s.pause();
      return receive(s, expected[k].length);
    }),
  );
  for (let k = 0; k < sockets.length; k++) {
    t.equal(sha(echoed[k].subarray(0, expected[k].length)), sha(expected[k]), `stream ${k} exact`);
  }
  for (const s of sockets) s.destroy();
  await waitFor(() => local.frontend.slot[LIVE] === 0, 5000, 'every connection to finish');
  t.equal(smallBuffersInUse(), 0, 'every small buffer given back');
  t.equal(largeBuffersInUse(), 0, 'every large buffer given back');
});
