// Scenarios the data plane had no test for: a queued client that leaves, room in the queue made
// by another worker, a backend that stops reading (back-pressure reaches the client), accept-proxy
// on the public-API fallback path, and IPv4-mapped clients against --allow/--deny. Each ends with
// the live counts back at zero.

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import type net from 'node:net';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  type Backend,
  connect,
  eventually,
  type Fulcrum,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
} from '../helpers.ts';

async function start(
  t: { teardown(fn: () => unknown): void },
  args: string[],
  env: NodeJS.ProcessEnv = {},
) {
  const stats = socketPath();
  const fulcrum = await startFulcrum(['--no-health-check', '--stats-socket', stats, ...args], env);
  t.teardown(() => fulcrum.stop());
  return { stats, fulcrum };
}

// fulcrum does not read a client before it has a backend (its bytes could go nowhere), so, as in
// HAProxy without `option abortonclose`, a queued client's close is seen at its queue timeout.
t.test(
  'a queued client that disconnects leaves at its queue timeout and gives everything back',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    // A queue timeout well inside the wait below, whatever else the machine is doing.
    const { stats, fulcrum } = await start(t, [
      '--workers',
      '1',
      '--queue-timeout',
      '1s',
      '--backend',
      `${backend.address},maxconn=1`,
    ]);
    const held = await connect(fulcrum.port);
    t.equal(await readLine(held), String(backend.port));
    const waiting = await connect(fulcrum.port);
    await eventually(
      async () => (await showStat(stats))[0].queued === 1,
      5000,
      'the client to queue',
    );
    waiting.destroy();
    await eventually(
      async () => (await showStat(stats))[0].queued === 0,
      10_000,
      'the queue to empty',
    );
    t.equal((await showStat(stats))[0].live, 1, 'only the held connection is live');
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    t.equal(info['ended_queue-timeout'], 1, 'it ended as a queue timeout');
    held.destroy();
    await settled(stats, fulcrum);
    t.equal(backend.accepted, 1, 'the one that left never reached the backend');
  },
);

t.test('room made by a connection in one worker serves a client queued in another', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const { stats, fulcrum } = await start(t, [
    '--workers',
    '2',
    '--access-log',
    '--backend',
    `${backend.address},maxconn=1`,
  ]);
  const first = await connect(fulcrum.port);
  t.equal(await readLine(first), String(backend.port));
  // Ten queued clients: the kernel spreads them over both workers.
  const queued = await Promise.all(Array.from({ length: 10 }, () => connect(fulcrum.port)));
  await eventually(
    async () => (await showStat(stats))[0].queued === 10,
    5000,
    'ten clients to queue',
  );
  // Each, once served, leaves and so makes room for the next, whichever worker holds it.
  const served = queued.map(async (socket) => {
    const line = await readLine(socket);
    socket.end();
    await once(socket, 'close');
    return line;
  });
  first.end();
  t.same(
    await Promise.all(served),
    queued.map(() => String(backend.port)),
    'all ten served',
  );
  await settled(stats, fulcrum);
  const workers = fulcrum.logs.filter((l) => l.msg === 'connection').map((l) => l.worker);
  t.equal(workers.length, 11);
  t.equal(new Set(workers).size, 2, 'both workers served some of them');
});

t.test(
  'a backend that stops reading stops fulcrum reading its client: memory stays bounded',
  async (t) => {
    let paused: net.Socket | null = null;
    let received = 0;
    const hash = createHash('sha256');
    const backend: Backend = await startBackend((socket) => {
      paused = socket;
      socket.pause();
      socket.on('data', (chunk: Buffer) => {
        received += chunk.length;
        hash.update(chunk);
      });
    });
    t.teardown(() => backend.close());
    const { stats, fulcrum } = await start(t, ['--workers', '1', '--backend', backend.address]);
    const client = await connect(fulcrum.port);
    await eventually(async () => paused !== null, 5000, 'the backend to accept');
    // Write until the client's own buffer stops draining: fulcrum is no longer reading it.
    const chunk = randomBytes(1024 * 1024);
    const sent = createHash('sha256');
    let written = 0;
    const LIMIT = 256 * 1024 * 1024;
    while (written < LIMIT) {
      sent.update(chunk);
      written += chunk.length;
      if (!client.write(chunk)) {
        // A bounded observation: a 'drain' that does not come within 2 s means fulcrum has
        // stopped reading this client (the backend reads nothing, so nothing makes room).
        const drained = await Promise.race([
          once(client, 'drain').then(() => true),
          new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 2000)),
        ]);
        if (!drained) break;
      }
    }
    t.ok(
      written < 64 * 1024 * 1024,
      `the client could write only ${written >> 20} MiB before it had to wait`,
    );
    t.equal(received, 0, 'the paused backend read nothing');
    // The backend reads again: every byte arrives, in order.
    (paused as unknown as net.Socket).resume();
    client.end();
    await eventually(async () => received === written, 20_000, 'every byte at the backend');
    t.equal(hash.digest('hex'), sent.digest('hex'), 'byte for byte');
    (paused as unknown as net.Socket).end();
    await once(client, 'close');
    await settled(stats, fulcrum);
  },
);

t.test('accept-proxy on the public-API fallback path (FULCRUM_NO_ACCEPT_HOOK=1)', async (t) => {
  let first = '';
  const backend = await startBackend((socket) => {
    // The header and the client's bytes may come in one read or two.
    socket.on('data', (chunk: Buffer) => {
      first += chunk.toString();
      if (first.endsWith('hello')) socket.end('ok\n');
    });
  });
  t.teardown(() => backend.close());
  const { stats, fulcrum } = await start(
    t,
    [
      '--workers',
      '1',
      '--listen',
      '127.0.0.1:0,accept-proxy',
      '--send-proxy',
      'v1',
      '--backend',
      backend.address,
    ],
    { FULCRUM_NO_ACCEPT_HOOK: '1' },
  );
  t.ok(
    fulcrum.logs.some((l) => String(l.msg).startsWith('accept hook unavailable')),
    'the fallback path is the one in use',
  );
  const client = await connect(fulcrum.port);
  client.write('PROXY TCP4 127.0.0.9 127.0.0.1 4444 80\r\nhello');
  t.equal(await readLine(client), 'ok');
  t.match(
    first,
    /^PROXY TCP4 127\.0\.0\.9 127\.0\.0\.1 4444 \d+\r\nhello$/,
    'the claimed client goes on',
  );
  client.destroy();
  await settled(stats, fulcrum);
});

async function answers(fulcrum: Fulcrum): Promise<string> {
  const socket = await connect(fulcrum.port);
  const line = await readLine(socket).catch(() => 'closed');
  socket.destroy();
  return line;
}

t.test(
  'IPv4-mapped clients (::ffff:127.0.0.1) are checked as IPv4 by --allow and --deny',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    // A dual-stack listener sees an IPv4 client as ::ffff:127.0.0.1.
    const allowed = await start(t, [
      '--workers',
      '1',
      '--listen',
      '[::]:0',
      '--allow',
      '127.0.0.0/8',
      '--backend',
      backend.address,
    ]);
    t.equal(await answers(allowed.fulcrum), String(backend.port), 'allowed by 127.0.0.0/8');
    const denied = await start(t, [
      '--workers',
      '1',
      '--listen',
      '[::]:0',
      '--deny',
      '127.0.0.1',
      '--backend',
      backend.address,
    ]);
    t.equal(await answers(denied.fulcrum), 'closed', 'denied by 127.0.0.1');
    const info = JSON.parse(await query(denied.stats, 'show info json')) as Record<string, number>;
    t.equal(info.ended_denied, 1, 'counted as denied');
    await settled(allowed.stats);
    await settled(denied.stats);
  },
);
