// The newer schedulers: p2c's shares over 100k picks; Maglev's agreement between processes,
// its small remapping when a backend leaves, its stickiness; peak-EWMA shedding a slow backend
// and taking it back, on a clock the test drives.

import '../children.ts';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { fnv1a } from '../../src/core/hash.ts';
import { Maglev } from '../../src/core/maglev.ts';
import { PowerOfTwoChoices } from '../../src/core/p2c.ts';
import { createLatencyState, PeakEwma } from '../../src/core/peak-ewma.ts';
import { Random } from '../../src/core/random.ts';
import { acquire, release } from '../../src/core/scheduler.ts';
import { createTable, UP } from '../../src/shared/table.ts';

t.test('p2c: 100k picks spread evenly over equal backends', async (t) => {
  const table = createTable([1, 1, 1, 1]);
  const p2c = new PowerOfTwoChoices(table, new Random(42));
  const counts = [0, 0, 0, 0];
  for (let k = 0; k < 100_000; k++) {
    const i = p2c.pick(0, 0);
    counts[i]++;
    // Short connections: each ends before the next pick.
    acquire(table, i);
    release(table, i);
  }
  for (const c of counts) t.ok(Math.abs(c / 100_000 - 0.25) < 0.01, `share ${c / 100_000}`);
});

t.test('p2c: 100k held connections spread in proportion to weight', async (t) => {
  const weights = [1, 2, 3, 4];
  const table = createTable(weights);
  const p2c = new PowerOfTwoChoices(table, new Random(7));
  const counts = [0, 0, 0, 0];
  for (let k = 0; k < 100_000; k++) {
    const i = p2c.pick(0, 0);
    counts[i]++;
    acquire(table, i);
  }
  weights.forEach((w, i) => {
    const share = counts[i] / 100_000;
    t.ok(Math.abs(share - w / 10) < 0.01, `backend ${i}: ${share.toFixed(4)} vs ${w / 10}`);
  });
});

t.test('p2c skips unpickable backends', async (t) => {
  const table = createTable([1, 1, 1]);
  table.state[1] &= ~UP;
  const p2c = new PowerOfTwoChoices(table, new Random(3));
  const seen = new Set<number>();
  for (let k = 0; k < 1000; k++) seen.add(p2c.pick(0, 0));
  t.same([...seen].sort(), [0, 2]);
});

const FIXTURE = fileURLToPath(new URL('../fixtures/maglev-map.ts', import.meta.url));
const FIVE = ['10.0.0.1:5432', '10.0.0.2:5432', '10.0.0.3:5432', '10.0.0.4:5432', '10.0.0.5:5432'];

function mapIn(names: string[]): string[] {
  const run = spawnSync(process.execPath, [FIXTURE, ...names], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(run.stderr);
  return run.stdout.trimEnd().split('\n');
}

t.test('maglev: two processes map the same 10k clients identically', async (t) => {
  const first = mapIn(FIVE);
  // The second process has the backends in other slots: the mapping must not depend on it.
  const second = mapIn([...FIVE].reverse());
  t.equal(first.length, 10_000);
  t.equal(first.filter((name, c) => name !== second[c]).length, 0, 'every client agrees');
  const spread = new Map<string, number>();
  for (const name of first) spread.set(name, (spread.get(name) ?? 0) + 1);
  for (const [name, n] of spread) t.ok(Math.abs(n / 10_000 - 0.2) < 0.02, `${name}: ${n}`);
});

t.test('maglev: removing one of 5 backends remaps at most 25% of clients', async (t) => {
  const before = mapIn(FIVE);
  const after = mapIn(FIVE.filter((name) => name !== '10.0.0.3:5432'));
  const moved = before.filter((name, c) => name !== after[c]).length / 10_000;
  const orphans = before.filter((name) => name === '10.0.0.3:5432').length / 10_000;
  t.ok(
    moved <= 0.25,
    `${(moved * 100).toFixed(1)}% remapped (${(orphans * 100).toFixed(1)}% were on it)`,
  );
  t.ok(after.every((name) => name !== '10.0.0.3:5432'));
});

t.test('maglev: a down backend sends only its own clients elsewhere', async (t) => {
  const table = createTable([1, 1, 1, 1]);
  const keys = Uint32Array.from(['a', 'b', 'c', 'd'], (n) => fnv1a(n));
  const maglev = new Maglev(table, keys);
  const clients = Array.from({ length: 5000 }, (_, c) => fnv1a(`192.168.${c >> 8}.${c & 255}`));
  const before = clients.map((key) => maglev.pick(0, key));
  t.same(
    clients.map((key) => maglev.pick(0, key)),
    before,
    'the same client, the same backend',
  );
  table.state[2] &= ~UP;
  const during = clients.map((key) => maglev.pick(0, key));
  t.equal(
    during.filter((i, c) => before[c] !== 2 && i !== before[c]).length,
    0,
    'clients of healthy backends stay put',
  );
  t.ok(
    during.every((i) => i !== 2),
    'nobody goes to the down backend',
  );
  const moved = during.filter((_, c) => before[c] === 2);
  t.ok(new Set(moved).size === 3, 'its clients spread over the three others');
  table.state[2] |= UP;
  t.same(
    clients.map((key) => maglev.pick(0, key)),
    before,
    'back up: every client returns',
  );
});

t.test('maglev: weights set the share of clients', async (t) => {
  const table = createTable([1, 3]);
  const maglev = new Maglev(
    table,
    Uint32Array.from(['light', 'heavy'], (n) => fnv1a(n)),
  );
  let heavy = 0;
  for (let c = 0; c < 20_000; c++) if (maglev.pick(0, fnv1a(`client-${c}`)) === 1) heavy++;
  t.ok(Math.abs(heavy / 20_000 - 0.75) < 0.02, `heavy share ${heavy / 20_000}`);
});

t.test(
  'peak-ewma: a slow backend sheds load at once and wins it back after it recovers',
  async (t) => {
    const table = createTable([1, 1, 1]);
    const clock = new Float64Array([1000]);
    const ewma = new PeakEwma(table, createLatencyState(3), new Random(11), clock);
    const latency = [1, 1, 50];
    const share = (picks: number) => {
      let slow = 0;
      for (let k = 0; k < picks; k++) {
        const i = ewma.pick(0, 0);
        ewma.observe(i, latency[i]);
        if (i === 2) slow++;
        clock[0] += 10; // 100 picks a second
      }
      return slow / picks;
    };
    const warm = share(100);
    t.ok(warm < 0.2, `one slow sample and it is shunned (${warm})`);
    const steady = share(500);
    t.ok(steady < 0.05, `steady: the slow backend gets ${(steady * 100).toFixed(1)}%`);
    latency[2] = 1;
    // Its cost decays until it is drawn and tried again (about 8 s for 50 ms against 1 ms);
    // one fast answer and it is back in the running.
    share(1000);
    const recovered = share(1000);
    t.ok(recovered > 0.25, `10 s after the delay went: ${(recovered * 100).toFixed(1)}%`);
  },
);

t.test(
  'maglev with bounded loads: idle, it is plain Maglev; loaded, no backend passes its cap',
  async (t) => {
    const keys = Uint32Array.from([fnv1a('a'), fnv1a('b'), fnv1a('c')]);
    const table = createTable([1, 1, 2]);
    const plain = new Maglev(table, keys);
    const bounded = new Maglev(table, keys, 125);
    let moved = 0;
    for (let k = 0; k < 2000; k++) {
      const key = Math.imul(k + 1, 0x9e3779b1);
      if (bounded.pick(0, key) !== plain.pick(0, key)) moved++;
    }
    t.equal(moved, 0, 'nothing loaded: 2000 clients reach the same backends as plain Maglev');
    // Every client the same key (one source address): plain Maglev sends all to one backend.
    const key = 12345;
    const mine = plain.pick(0, key);
    for (let n = 0; n < 40; n++) {
      const i = bounded.pick(0, key);
      acquire(table, i);
      const live = table.active[0] + table.active[1] + table.active[2];
      for (let b = 0; b < 3; b++) {
        const cap = Math.ceil((1.25 * live * table.weight[b]) / 4);
        if (table.active[b] > cap) t.fail(`backend ${b}: ${table.active[b]} over its cap ${cap}`);
      }
    }
    t.ok(table.active[mine] < 40, `its own backend holds ${table.active[mine]} of 40`);
    t.ok(table.active[2] >= table.active[0], 'the heavier backend may hold more');
    // Its clients went on along one fixed sequence: the same order every time.
    const order = new Maglev(createTable([1, 1, 2]), keys, 125);
    t.equal(order.pick(0, key), mine, 'the first client still lands on its own backend');
  },
);
