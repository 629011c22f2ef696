// A million picks trigger no garbage collection: the pick path (pick, take a place within a share,
// release, a sibling's room) allocates nothing.
// Runs the picks in a child Node with --expose-gc so the heap starts clean and nothing else in
// the process allocates meanwhile.

import '../children.ts';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { ALGORITHMS } from '../../src/core/scheduler.ts';

const probe = fileURLToPath(new URL('../fixtures/gc-probe.ts', import.meta.url));

// Every algorithm, and maglev again with bounded loads (its caps scan the table on every pick).
const RUNS: Array<[string, string]> = [
  ...ALGORITHMS.map((a): [string, string] => [a, '0']),
  ['maglev', '125'],
];

for (const [algorithm, factor] of RUNS) {
  const name = factor === '0' ? algorithm : `${algorithm} --hash-balance-factor ${factor}`;
  t.test(`${name}: 1M picks, no gc`, async (t) => {
    const run = spawnSync(process.execPath, ['--expose-gc', probe, algorithm, '1000000', factor], {
      encoding: 'utf8',
    });
    t.equal(run.status, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { gcs: number; heapGrowth: number; picks: number };
    t.equal(result.picks, 1_000_000);
    t.equal(result.gcs, 0, 'no garbage collection during the picks');
    // The smallest heap object is 16 bytes: one per pick would be 16 MB. What is left is the
    // JIT's own late work, which a loaded machine can push into the measured loop.
    t.ok(result.heapGrowth < 512 * 1024, `heap grew ${result.heapGrowth} bytes`);
  });
}
