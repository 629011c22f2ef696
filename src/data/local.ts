// One frontend run in the calling thread, without worker threads or a control plane: for tests and
// benchmarks that need to look inside the data plane (its buffer pool, its sweeps) while it runs.

import type { RunFlags } from '../config.ts';
import { configFromFlags } from '../config.ts';
import { buildTable } from '../core/table.ts';
import { allocateCounters, backendOffset, openSlot } from '../stats/counters.ts';
import { updateNow } from './clock.ts';
import { Frontend } from './frontend.ts';

/** Builds the frontend the CLI would build from `flags`, in this thread, and opens its listeners. */
export async function startLocalFrontend(flags: RunFlags): Promise<Frontend> {
  const config = configFromFlags({ workers: '1', ...flags }).frontends[0];
  updateNow();
  const shared = buildTable(config.backends);
  const counters = allocateCounters(1, config.backends.length);
  const frontend = new Frontend(
    config,
    { table: shared, backendOffset: config.backends.map((_, i) => backendOffset(i)) },
    openSlot(counters, 0),
    { live: new Int32Array(counters.live), maxConnections: 0, backlog: 511 },
  );
  await frontend.listen();
  return frontend;
}
