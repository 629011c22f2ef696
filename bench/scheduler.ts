// Scheduler micro-benchmark: nanoseconds per pick (with the acquire/release around it that the
// data path does) for each algorithm and table size. Usage: npm run bench:core

import { ALGORITHMS, acquire, createScheduler, release } from '../src/core/scheduler.ts';
import { createTable } from '../src/shared/table.ts';

const PICKS = 5_000_000;

console.log('algorithm               backends   ns/pick');
for (const algorithm of ALGORITHMS) {
  for (const size of [2, 8, 64]) {
    const table = createTable(Array.from({ length: size }, (_, i) => 1 + (i % 4)));
    const scheduler = createScheduler(algorithm, table);
    // Some load, so least-conn compares real counts.
    for (let i = 0; i < size; i++) table.active[i] = i % 3;
    // Varied client keys (Maglev hashes them) and a latency sample per pick (peak-EWMA learns
    // from them; the others ignore it), as the data path gives.
    for (let k = 0; k < 200_000; k++) {
      const i = scheduler.pick(0, Math.imul(k, 0x9e3779b1));
      scheduler.observe(i, 1 + (i & 3));
      acquire(table, i);
      release(table, i);
    }
    const start = process.hrtime.bigint();
    for (let k = 0; k < PICKS; k++) {
      const i = scheduler.pick(0, Math.imul(k, 0x9e3779b1));
      scheduler.observe(i, 1 + (i & 3));
      acquire(table, i);
      release(table, i);
    }
    const ns = Number(process.hrtime.bigint() - start) / PICKS;
    console.log(`${algorithm.padEnd(24)}${String(size).padStart(8)}${ns.toFixed(1).padStart(10)}`);
  }
}
