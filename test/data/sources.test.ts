// Frontends chosen by source network on one shared listener, end to end: real clients bound to
// loopback addresses of their own (127.0.8.x and 127.0.0.1), through fulcrum to backends that
// greet each client with their name. The most specific network wins; the frontend with neither
// serverNames nor sources takes the rest; with none, the rest is closed and counted; behind a
// PROXY header the header's source decides; with server names, the name first, then the source
// among the frontends on that name. Each ends with live counts at zero.

import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import {
  closedPort,
  ended,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
} from '../helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-sources-'));

/** Backends that greet each client with their name; closed when the test ends. */
async function named(t: Test, ...names: string[]) {
  const backends = await Promise.all(
    names.map((name) =>
      startBackend((socket) => {
        socket.on('error', () => {});
        socket.write(`${name}\n`);
        socket.resume();
        socket.on('end', () => socket.end());
      }),
    ),
  );
  t.teardown(() => Promise.all(backends.map((b) => b.close())));
  return backends.map((b) => b.address);
}

interface Door {
  readonly name: string;
  readonly backends: string[];
  readonly sources?: string[];
  readonly serverNames?: string[];
}

/** fulcrum with these frontends on one shared port (each its own health-free pool). */
async function startShared(t: Test, frontends: Door[], listenSuffix = '', host = '127.0.0.1') {
  const port = await closedPort();
  const stats = socketPath();
  const path = join(
    dir,
    `${frontends.map((f) => f.name).join('-')}${listenSuffix ? '-p' : ''}.json`,
  );
  writeFileSync(
    path,
    JSON.stringify({
      workers: 1,
      statsSocket: stats,
      frontends: frontends.map((f) => ({
        listen: [`${host.includes(':') ? `[${host}]` : host}:${port}${listenSuffix}`],
        health: false,
        ...f,
      })),
    }),
  );
  const fulcrum = await startFulcrum(['--config', path]);
  t.teardown(() => fulcrum.stop());
  return { fulcrum, port, stats };
}

/** The first line a client bound to `from` reads (plain TCP), or a rejection if it is closed. */
async function greeting(port: number, from: string): Promise<string> {
  const socket = net.connect({
    host: from.includes(':') ? '::1' : '127.0.0.1',
    port,
    localAddress: from,
  });
  socket.on('error', () => {});
  try {
    return await readLine(socket);
  } finally {
    socket.destroy();
  }
}

/** The ClientHello node:tls sends asking for `name`, as a capturing server sees its first bytes. */
async function helloFor(name: string): Promise<Buffer> {
  const server = net.createServer((socket) => {
    socket.once('data', (chunk: Buffer) => {
      server.emit('hello', chunk);
      socket.destroy();
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const client = tls.connect({
    host: '127.0.0.1',
    port,
    servername: name,
    rejectUnauthorized: false,
  });
  client.on('error', () => {});
  const [hello] = (await once(server, 'hello')) as [Buffer];
  client.destroy();
  server.close();
  return hello;
}

/** The first line a client bound to `from` reads after sending a ClientHello asking for `name`
 *  (the backends here greet whatever comes; fulcrum routes on the hello and passes it on). */
async function tlsGreeting(port: number, from: string, name: string): Promise<string> {
  const hello = await helloFor(name);
  const socket = net.connect({ host: '127.0.0.1', port, localAddress: from });
  socket.on('error', () => {});
  socket.write(hello);
  try {
    return await readLine(socket);
  } finally {
    socket.destroy();
  }
}

async function accepted(stats: string): Promise<Record<string, number>> {
  return Object.fromEntries((await showStat(stats)).map((f) => [f.name, f.accepted]));
}

t.test('the most specific source network wins; the plain frontend takes the rest', async (t) => {
  const [chat, nightly, one] = await named(t, 'chat', 'nightly', 'one');
  const { port, stats, fulcrum } = await startShared(t, [
    { name: 'nightly', sources: ['127.0.8.0/24', '::ffff:127.0.9.0/120'], backends: [nightly] },
    { name: 'chat', backends: [chat] },
    { name: 'one', sources: ['127.0.8.9'], backends: [one] },
  ]);
  t.equal(await greeting(port, '127.0.8.1'), 'nightly', 'a client of the /24');
  t.equal(await greeting(port, '127.0.8.9'), 'one', 'the /32 inside it is more specific');
  t.equal(await greeting(port, '127.0.0.1'), 'chat', 'anyone else: the plain frontend');
  t.equal(await greeting(port, '127.0.9.1'), 'nightly', 'an IPv4-mapped IPv6 network');
  t.same(
    await accepted(stats),
    { nightly: 2, chat: 1, one: 1 },
    'each client counted once, by the frontend it went to',
  );
  await settled(stats, fulcrum);
});

t.test('IPv6: a client of ::1 goes to the frontend whose network holds it', async (t) => {
  const [near, far] = await named(t, 'near', 'far');
  const { port, stats, fulcrum } = await startShared(
    t,
    [
      { name: 'far', sources: ['fd00::/8'], backends: [far] },
      { name: 'near', sources: ['::1/128'], backends: [near] },
    ],
    '',
    '::1',
  );
  t.equal(await greeting(port, '::1'), 'near');
  t.same(await accepted(stats), { far: 0, near: 1 });
  await settled(stats, fulcrum);
});

t.test('with no plain frontend, other clients are closed and counted', async (t) => {
  const [nightly] = await named(t, 'nightly');
  const { port, stats, fulcrum } = await startShared(t, [
    { name: 'nightly', sources: ['127.0.8.0/24'], backends: [nightly] },
  ]);
  t.equal(await greeting(port, '127.0.8.2'), 'nightly');
  await t.rejects(greeting(port, '127.0.0.1'), 'a client from elsewhere is closed');
  t.equal(await ended(stats, 'no-frontend', 1), 1, 'and counted');
  t.same(await accepted(stats), { nightly: 2 }, 'by the door');
  await settled(stats, fulcrum);
});

t.test("behind a PROXY header, the header's source decides", async (t) => {
  const [chat, nightly] = await named(t, 'chat', 'nightly');
  const { port, stats, fulcrum } = await startShared(
    t,
    [
      { name: 'chat', backends: [chat] },
      { name: 'nightly', sources: ['10.8.0.0/16'], backends: [nightly] },
    ],
    ',accept-proxy',
  );
  const through = async (source: string) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    await once(socket, 'connect');
    socket.write(`PROXY TCP4 ${source} 127.0.0.1 40000 ${port}\r\n`);
    try {
      return await readLine(socket);
    } finally {
      socket.destroy();
    }
  };
  t.equal(await through('10.8.3.4'), 'nightly', 'the source the header names');
  t.equal(await through('192.0.2.1'), 'chat', 'not the peer (127.0.0.1 is in neither)');
  t.same(await accepted(stats), { chat: 1, nightly: 1 });
  await settled(stats, fulcrum);
});

t.test('server names first, then the source among the frontends on one name', async (t) => {
  const [api, apiBatch, rest] = await named(t, 'api', 'api-batch', 'rest');
  const { port, stats, fulcrum } = await startShared(t, [
    { name: 'api', serverNames: ['api.example.com'], backends: [api] },
    {
      name: 'api-batch',
      serverNames: ['api.example.com'],
      sources: ['127.0.8.0/24'],
      backends: [apiBatch],
    },
    { name: 'rest', backends: [rest] },
  ]);
  t.equal(await tlsGreeting(port, '127.0.8.1', 'api.example.com'), 'api-batch', 'name and source');
  t.equal(await tlsGreeting(port, '127.0.0.1', 'api.example.com'), 'api', 'the name, elsewhere');
  t.equal(await tlsGreeting(port, '127.0.8.1', 'other.test'), 'rest', 'another name: the rest');
  t.same(await accepted(stats), { api: 1, 'api-batch': 1, rest: 1 });
  await settled(stats, fulcrum);
});
