// Per-backend maxconn: a full backend is skipped; when every backend is full a new client waits
// in a bounded queue, is connected as soon as a connection ends, and is closed when it has waited
// --queue-timeout. And slow start: a backend that joins ramps up instead of being flooded.

import type net from 'node:net';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  greet,
  readLine,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitFor,
} from '../helpers.ts';

t.test(
  'every backend at its maxconn: the next client waits, then gets the freed place',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--stats-socket',
      stats,
      '--backend',
      `${backend.address},maxconn=2`,
    ]);
    t.teardown(() => fulcrum.stop());
    const held = [await connect(fulcrum.port), await connect(fulcrum.port)];
    for (const socket of held) t.equal(await readLine(socket), String(backend.port));
    const waiting = await connect(fulcrum.port);
    const answer = readLine(waiting);
    const queued = async () => (await showStat(stats))[0].queued;
    await waitFor(() => backend.accepted === 2, 1000, 'two at the backend');
    t.equal(await queued(), 1, 'the third client is queued');
    t.equal(backend.open.size, 2, 'the backend never has more than its maxconn');
    held[0].end();
    t.equal(await answer, String(backend.port), 'the queued client got the freed place');
    t.equal(await queued(), 0);
    held[1].destroy();
    waiting.destroy();
  },
);

t.test('a client that waits past --queue-timeout is closed, and counted', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--stats-socket',
    stats,
    '--queue-timeout',
    '500ms',
    '--backend',
    `${backend.address},maxconn=1`,
  ]);
  t.teardown(() => fulcrum.stop());
  const held = await connect(fulcrum.port);
  await readLine(held);
  const started = Date.now();
  const waiting = await connect(fulcrum.port);
  waiting.resume(); // read, so fulcrum's close is seen (its FIN: the helper allows half-open)
  await new Promise((resolve) => {
    waiting.once('end', resolve);
    waiting.once('close', resolve);
  });
  const waited = Date.now() - started;
  // The coarse clock (100 ms ticks) may end it up to a tick late, never early.
  t.ok(waited >= 500 && waited < 2000, `closed after ${waited} ms`);
  t.equal(backend.accepted, 1, 'the backend was never asked for more');
  let info = '';
  const until = Date.now() + 2000;
  while (!/^ended_queue-timeout: 1$/m.test(info) && Date.now() < until) {
    info = await query(stats, 'show info');
  }
  t.match(info, /^ended_queue-timeout: 1$/m, 'counted as queue-timeout');
  held.destroy();
});

t.test('slow start: a backend that joins takes a growing share, not a flood', async (t) => {
  const [a, b] = await Promise.all([startBackend(greet), startBackend(greet)]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--stats-socket',
    stats,
    '--backend',
    a.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const held: net.Socket[] = [];
  const hold = async (n: number) => {
    const answers: string[] = [];
    for (let i = 0; i < n; i++) {
      const socket = await connect(fulcrum.port);
      answers.push(await readLine(socket));
      held.push(socket);
    }
    return answers.filter((x) => x === String(b.port)).length;
  };
  t.teardown(() => {
    for (const socket of held) socket.destroy();
  });
  await hold(10);
  t.match(await query(stats, `add backend default ${b.address},slowstart=3s`), /^added/);
  const early = await hold(10);
  t.ok(early <= 2, `right after joining, ${early} of 10 new connections went to it`);
  await new Promise((resolve) => setTimeout(resolve, 3200));
  const later = await hold(20);
  t.ok(later >= 14, `after its slow start, ${later} of 20 went to it (catching up)`);
});
