// One frontend run in the calling thread, without worker threads or a control plane: for tests and
// benchmarks that need to look inside the data plane (its buffer pool, its sweeps) while it runs.

import type { RunFlags } from '../config.ts';
import { configFromFlags } from '../config.ts';
import { Pool } from '../control/pool.ts';
import { updateNow } from './clock.ts';
import { Frontend } from './frontend.ts';

/** Builds the frontend the CLI would build from `flags`, in this thread, and opens its listeners. */
export async function startLocalFrontend(flags: RunFlags): Promise<Frontend> {
  const config = configFromFlags({ workers: '1', ...flags }).frontends[0];
  updateNow();
  const pool = new Pool(config, 1, true);
  const frontend = new Frontend(pool.update(), 0, {
    live: new Int32Array(new SharedArrayBuffer(4)),
    maxConnections: 0,
    backlog: 511,
  });
  const failures = await frontend.syncListeners();
  if (failures.length > 0) throw new Error(`${failures[0].endpoint}: ${failures[0].message}`);
  return frontend;
}
