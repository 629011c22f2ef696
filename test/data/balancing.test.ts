// Balancing through real processes: least-connections is global across workers, a dead backend
// costs the client nothing (connect retried elsewhere), backups stand in only when needed.

import type net from 'node:net';
import t from 'tap';
import { closedPort, connect, greet, readLine, startBackend, startFulcrum } from '../helpers.ts';

t.test('least-conn across 2 workers: 10 held connections spread 5/5 (±1)', async (t) => {
  const backends = [await startBackend(greet), await startBackend(greet)];
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--algorithm',
    'least-conn',
    '--backend',
    backends[0].address,
    '--backend',
    backends[1].address,
  ]);
  const held: net.Socket[] = [];
  t.teardown(async () => {
    for (const s of held) s.destroy();
    await fulcrum.stop();
    for (const b of backends) await b.close();
  });
  // Counted from what the clients were told (health probes reach the backends too).
  const counts = [0, 0];
  for (let k = 0; k < 10; k++) {
    const socket = await connect(fulcrum.port);
    held.push(socket);
    const port = Number(await readLine(socket)); // the backend has it: the next pick counts it
    counts[backends.findIndex((b) => b.port === port)]++;
  }
  t.equal(counts[0] + counts[1], 10);
  t.ok(Math.abs(counts[0] - counts[1]) <= 2, `spread ${counts[0]}/${counts[1]}`);
});

t.test('one backend dead: 20 held connections all succeed, none sees an error', async (t) => {
  const live = await startBackend(greet);
  const dead = `127.0.0.1:${await closedPort()}`;
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--backend',
    dead,
    '--backend',
    live.address,
  ]);
  const held: net.Socket[] = [];
  let errors = 0;
  t.teardown(async () => {
    for (const s of held) s.destroy();
    await fulcrum.stop();
    await live.close();
  });
  const greetings = await Promise.all(
    Array.from({ length: 20 }, async () => {
      const socket = await connect(fulcrum.port);
      socket.on('error', () => errors++);
      held.push(socket);
      return readLine(socket);
    }),
  );
  t.equal(greetings.length, 20);
  t.same(new Set(greetings), new Set([String(live.port)]), 'every client reached the live backend');
  t.equal(errors, 0, 'no client saw an error');
});

t.test('backups take connections only while no normal backend is available', async (t) => {
  const normal = await startBackend(greet);
  const backup = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--backend',
    normal.address,
    '--backend',
    `${backup.address},backup`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await backup.close();
  });
  for (let k = 0; k < 4; k++) {
    const socket = await connect(fulcrum.port);
    t.equal(await readLine(socket), String(normal.port), 'normal backend while it is up');
    socket.destroy();
  }
  await normal.close();
  const socket = await connect(fulcrum.port);
  t.equal(await readLine(socket), String(backup.port), 'backup once the normal one refuses');
  socket.destroy();
});

t.test('weight 0 is never picked; weights steer round-robin-weighted', async (t) => {
  const a = await startBackend(greet);
  const b = await startBackend(greet);
  const zero = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--algorithm',
    'weighted-round-robin',
    '--backend',
    `${a.address},weight=3`,
    '--backend',
    `${b.address},weight=1`,
    '--backend',
    `${zero.address},weight=0`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    for (const x of [a, b, zero]) await x.close();
  });
  const answers: string[] = [];
  for (let k = 0; k < 8; k++) {
    const socket = await connect(fulcrum.port);
    answers.push(await readLine(socket));
    socket.destroy();
  }
  const count = (port: number) => answers.filter((x) => x === String(port)).length;
  t.equal(count(a.port), 6);
  t.equal(count(b.port), 2);
  t.equal(count(zero.port), 0);
});
