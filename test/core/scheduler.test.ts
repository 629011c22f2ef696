// The scheduler core: exact pick sequences, shares over 100k picks, the backup tier, the avoid
// mask used by retries, and active counts that never go negative.

import t from 'tap';
import type { Algorithm } from '../../src/core/scheduler.ts';
import { ALGORITHMS, acquire, createScheduler, release } from '../../src/core/scheduler.ts';
import { avoidBit } from '../../src/core/table.ts';
import { createTable, DRAINING, ENABLED, UP } from '../../src/shared/table.ts';

/** Client keys spread over the hash space, for Maglev. */
function spread(k: number): number {
  return Math.imul(k + 1, 0x9e3779b1) >>> 0;
}

function sequence(algorithm: Algorithm, weights: number[], count: number): number[] {
  const scheduler = createScheduler(algorithm, createTable(weights));
  const picks: number[] = [];
  for (let k = 0; k < count; k++) picks.push(scheduler.pick(0, 0));
  return picks;
}

function shares(algorithm: Algorithm, weights: number[], picks: number, hold: boolean): number[] {
  const table = createTable(weights);
  const scheduler = createScheduler(algorithm, table);
  const counts = new Array<number>(weights.length).fill(0);
  for (let k = 0; k < picks; k++) {
    const i = scheduler.pick(0, 0);
    counts[i]++;
    if (hold) acquire(table, i);
  }
  return counts.map((c) => c / picks);
}

t.test('round-robin visits each backend in turn and skips weight 0', async (t) => {
  t.same(sequence('round-robin', [1, 1, 1], 7), [0, 1, 2, 0, 1, 2, 0]);
  t.same(sequence('round-robin', [1, 0, 5], 4), [0, 2, 0, 2]);
});

t.test('smooth weighted round-robin gives nginx sequence for 5,1,1', async (t) => {
  t.same(sequence('weighted-round-robin', [5, 1, 1], 7), [0, 0, 1, 0, 2, 0, 0]);
  t.same(sequence('weighted-round-robin', [1, 0, 1], 4), [0, 2, 0, 2]);
});

t.test('least-conn rotates its start so equal loads still spread', async (t) => {
  t.same(sequence('least-conn', [1, 1, 1], 6), [0, 1, 2, 0, 1, 2]);
});

t.test('least-conn picks the lowest (active+1)/weight, cross-multiplied', async (t) => {
  const table = createTable([1, 3]);
  const scheduler = createScheduler('least-conn', table);
  table.active[0] = 1;
  table.active[1] = 4; // 5/3 < 2/1
  t.equal(scheduler.pick(0, 0), 1);
  table.active[1] = 6; // 7/3 > 2/1
  t.equal(scheduler.pick(0, 0), 0);
  table.active[1] = 5; // 6/3 == 2/1: a tie, either start order is fine, both are minimal
  const tie = scheduler.pick(0, 0);
  t.ok(tie === 0 || tie === 1);
  table.active[0] = 0;
  table.active[1] = 0; // idle: 1/3 < 1/1, the heavier backend first
  t.equal(scheduler.pick(0, 0), 1);
});

t.test(
  'least-load: (reported load + placed since + 1) / weight; no report: live connections',
  async (t) => {
    const table = createTable([1, 1, 2]);
    const scheduler = createScheduler('least-load', table);
    t.same(sequence('least-load', [1, 1, 1], 6), [0, 1, 2, 0, 1, 2], 'no report: least-conn');
    table.load.fill(Number.NaN);
    table.load[0] = 10;
    table.load[1] = 0;
    table.load[2] = 4; // (4+1)/2 > (0+1)/1
    t.equal(scheduler.pick(0, 0), 1, 'the smallest report wins');
    // Connections placed on 1 since its report count against it: after 2, (0+2+1)/1 > 5/2.
    acquire(table, 1);
    acquire(table, 1);
    t.equal(scheduler.pick(0, 0), 2);
    // A new report of 1 starts counting again from there.
    table.loadBase[1] = table.sent[1];
    table.load[1] = 0;
    t.equal(scheduler.pick(0, 0), 1, 'a fresh report: placed-since starts from zero');
    // A backend without a report is judged by its live connections: 2 live on 1 after its report
    // is dropped, (2+1)/1 against (4+1)/2 and (10+1)/1.
    table.load[1] = Number.NaN;
    t.equal(scheduler.pick(0, 0), 2);
    table.active[1] = 0;
    t.equal(scheduler.pick(0, 0), 1, 'no report and no connection: 1/1 < 5/2');
    // `sent` wraps: the count since the report is still right.
    table.active[1] = 10;
    table.sent[0] = 0x7fffffff;
    table.loadBase[0] = 0x7ffffffe;
    table.load[0] = 0;
    t.equal(scheduler.pick(0, 0), 0, '(0+1+1)/1 < (4+1)/2');
    Atomics.add(table.sent, 0, 3); // wraps to negative
    t.equal(scheduler.pick(0, 0), 2, '(0+4+1)/1 > (4+1)/2 across the wrap');
  },
);

t.test('held connections follow weights within 1% over 100k picks', async (t) => {
  const weights = [1, 2, 3, 4];
  const total = 10;
  for (const algorithm of ['least-conn', 'weighted-round-robin'] as const) {
    // least-conn only follows weights when connections are held; wrr follows them regardless.
    const got = shares(algorithm, weights, 100_000, algorithm === 'least-conn');
    for (let i = 0; i < weights.length; i++) {
      t.ok(
        Math.abs(got[i] - weights[i] / total) < 0.01,
        `${algorithm} backend ${i}: share ${got[i].toFixed(4)} vs ${weights[i] / total}`,
      );
    }
  }
  const rr = shares('round-robin', weights, 100_000, false);
  for (const share of rr) t.ok(Math.abs(share - 0.25) < 0.01, `round-robin share ${share}`);
});

t.test('backups are used only when no normal backend is pickable', async (t) => {
  for (const algorithm of ALGORITHMS) {
    const table = createTable([1, 1, 1], [false, false, true]);
    const scheduler = createScheduler(algorithm, table);
    const seen = new Set<number>();
    for (let k = 0; k < 60; k++) seen.add(scheduler.pick(0, spread(k)));
    t.same([...seen].sort(), [0, 1], `${algorithm}: normal tier only`);
    table.state[0] &= ~UP;
    table.state[1] |= DRAINING;
    t.equal(scheduler.pick(0, 0), 2, `${algorithm}: backup when the others are down or draining`);
    table.state[2] &= ~ENABLED;
    t.equal(scheduler.pick(0, 0), -1, `${algorithm}: -1 when nothing is pickable`);
  }
});

t.test('the avoid mask excludes backends a connection already tried', async (t) => {
  for (const algorithm of ALGORITHMS) {
    const scheduler = createScheduler(algorithm, createTable([1, 1, 1]));
    for (let k = 0; k < 10; k++) {
      t.equal(scheduler.pick(avoidBit(0) | avoidBit(2), 0), 1, algorithm);
    }
    t.equal(scheduler.pick(avoidBit(0) | avoidBit(1) | avoidBit(2), 0), -1, algorithm);
  }
});

t.test('an empty table picks -1', async (t) => {
  for (const algorithm of ALGORITHMS) {
    t.equal(createScheduler(algorithm, createTable([])).pick(0, 0), -1);
  }
});

t.test('active counts never go negative under random acquire/release', async (t) => {
  const table = createTable([1, 2, 3, 1, 5]);
  const scheduler = createScheduler('least-conn', table);
  const held: number[] = [];
  let seed = 12345;
  const random = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x80000000;
  };
  let minSeen = 0;
  for (let step = 0; step < 50_000; step++) {
    if (held.length === 0 || random() < 0.55) {
      const i = scheduler.pick(0, 0);
      acquire(table, i);
      held.push(i);
    } else {
      const k = Math.floor(random() * held.length);
      const i = held[k];
      held[k] = held[held.length - 1];
      held.pop();
      release(table, i);
    }
    for (let i = 0; i < table.size; i++) minSeen = Math.min(minSeen, table.active[i]);
  }
  t.equal(minSeen, 0, 'no count ever went below zero');
  for (const i of held) release(table, i);
  t.same([...table.active], [0, 0, 0, 0, 0], 'every count returns to zero');
});

t.test(
  'a backend at its maxconn is skipped by every algorithm, and taken again below it',
  async (t) => {
    for (const algorithm of ALGORITHMS) {
      const table = createTable([1, 1]);
      table.maxconn[0] = 2;
      const scheduler = createScheduler(algorithm, table);
      const held: number[] = [];
      for (let k = 0; k < 10; k++) {
        const i = scheduler.pick(0, spread(k));
        held.push(i);
        acquire(table, i);
      }
      t.equal(held.filter((i) => i === 0).length, 2, `${algorithm}: backend 0 holds exactly 2`);
      release(table, 0);
      let again = -1;
      for (let k = 0; k < 50 && again !== 0; k++) {
        again = scheduler.pick(0, spread(k));
        if (again !== 0) acquire(table, again);
      }
      t.equal(again, 0, `${algorithm}: picked again once below its maxconn`);
      table.maxconn[1] = 1;
      for (let i = 0; i < 2; i++) table.active[i] = table.maxconn[i];
      t.equal(scheduler.pick(0, 0), -1, `${algorithm}: all full: nothing to pick`);
    }
  },
);
