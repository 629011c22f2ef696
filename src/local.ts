// One frontend run in the calling thread, without worker threads or a control plane: for tests and
// benchmarks that need to look inside the data plane (its buffer pool, its sweeps) while it runs.
// It sits above control/ and data/ because it builds a pool (control) and runs it (data).

import { loaderFromArgs } from './config/flags.ts';
import { Frontend as FrontendState } from './control/frontend.ts';
import { Pool } from './control/pool.ts';
import { updateNow } from './data/clock.ts';
import { Frontend } from './data/frontend.ts';
import { Listeners } from './data/listeners.ts';

/** A frontend running in this thread, with its listening sockets. */
export interface LocalFrontend {
  readonly frontend: Frontend;
  /** The port of its first listener. */
  readonly port: number;
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  readonly hooked: boolean;
  /** Stops listening; live connections carry on. */
  close(): void;
}

/** Builds the frontend the CLI would build from `args`, in this thread, and opens its listeners. */
export async function startLocalFrontend(args: readonly string[]): Promise<LocalFrontend> {
  const config = (await loaderFromArgs(['--workers', '1', ...args])()).frontends[0];
  updateNow();
  const pool = new Pool(config, 1, true);
  const frontend = new Frontend(new FrontendState(config, pool, 1).update(), 0, {
    live: new Int32Array(new SharedArrayBuffer(4)),
    maxConnections: 0,
    backlog: 511,
  });
  const listeners = new Listeners(511);
  const failures = await listeners.sync([frontend]);
  if (failures.length > 0) throw new Error(`${failures[0].endpoint}: ${failures[0].message}`);
  return {
    frontend,
    port: listeners.firstPort(),
    hooked: listeners.hooked,
    close: () => listeners.close(),
  };
}
