// Consistent hashing with bounded loads, end to end: thirty connections held from one address
// over three backends, with and without --hash-balance-factor; and Maglev's table following a
// `set weight` at runtime.

import type net from 'node:net';
import t, { type Test } from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
} from '../helpers.ts';

async function threeBackends(t: Test, extra: string[]) {
  const backends = [
    await startBackend(greet),
    await startBackend(greet),
    await startBackend(greet),
  ];
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    stats,
    '--algorithm',
    'maglev',
    ...extra,
    ...backends.flatMap((b) => ['--backend', b.address]),
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    for (const b of backends) await b.close();
  });
  return { backends, stats, fulcrum };
}

/** Opens `n` connections one after another and holds them: where each landed. */
async function hold(port: number, n: number): Promise<{ sockets: net.Socket[]; ports: string[] }> {
  const sockets: net.Socket[] = [];
  const ports: string[] = [];
  for (let i = 0; i < n; i++) {
    const socket = await connect(port);
    sockets.push(socket);
    ports.push(await readLine(socket));
  }
  return { sockets, ports };
}

t.test('without a balance factor, one address sends all thirty to one backend', async (t) => {
  const { stats, fulcrum } = await threeBackends(t, []);
  const { sockets, ports } = await hold(fulcrum.port, 30);
  t.equal(new Set(ports).size, 1, 'one backend took them all');
  for (const s of sockets) s.destroy();
  await settled(stats, fulcrum);
});

t.test('with factor 125, no backend holds more than its cap of the thirty', async (t) => {
  const { stats, fulcrum } = await threeBackends(t, ['--hash-balance-factor', '125']);
  const plain = await hold(fulcrum.port, 1);
  const own = plain.ports[0];
  const { sockets, ports } = await hold(fulcrum.port, 29);
  const counts = (await showStat(stats))[0].backends.map((b) => b.active);
  t.equal(
    counts.reduce((a, b) => a + b, 0),
    30,
  );
  const cap = Math.ceil((1.25 * 30) / 3);
  t.ok(Math.max(...counts) <= cap, `no backend above ${cap}: ${counts.join(', ')}`);
  t.ok(
    counts.every((c) => c > 0),
    'every backend took some',
  );
  t.equal(
    ports.filter((p) => p === own).length + 1,
    Math.max(...counts),
    'its own backend is filled first',
  );
  for (const s of [...sockets, ...plain.sockets]) s.destroy();
  await settled(stats, fulcrum);
});

t.test("set weight rebuilds Maglev's table in every worker", async (t) => {
  const { backends, stats, fulcrum } = await threeBackends(t, ['--hash-key', 'source-ip-port']);
  const share = async () => {
    const { sockets, ports } = await hold(fulcrum.port, 90);
    for (const s of sockets) s.destroy();
    return ports.filter((p) => p === String(backends[0].port)).length / 90;
  };
  const before = await share();
  t.match(await query(stats, `set weight default/${backends[0].address} 8`), /weight 8/);
  const after = await share();
  // Weights 8:1:1 give it 80% of the table, against a third before.
  t.ok(
    after > 0.6 && after > before + 0.25,
    `its share went from ${before.toFixed(2)} to ${after.toFixed(2)}`,
  );
  await settled(stats, fulcrum);
});
