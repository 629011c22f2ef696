// The descriptor budget: every client connection costs two descriptors (client and backend), and
// the rest of fulcrum (health probes, the stats socket, the metrics port, listeners, Node's own)
// needs a reserve that clients can never take, or a flood of clients would blind the health
// checks and lock operators out. Invariant: the live-connection limit the workers enforce leaves
// that reserve free; like HAProxy's maxconn from ulimit-n, it is derived from the process's
// descriptor limit when --max-connections is not given, and a larger one given is warned about.

import { readFileSync } from 'node:fs';
import type { Config } from '../config/types.ts';
import { MAX_CLIENTS } from '../stats/server.ts';

/** Connections the metrics port holds at most (Prometheus needs one or two). Here, not in
 *  stats/metrics.ts, so the budget is known without loading prom-client. */
export const MAX_METRICS_CLIENTS = 16;

/** Descriptors Node and fulcrum hold whatever the load: stdio, threads' pipes, DNS, logs. */
const BASE_RESERVE = 64;

/** The soft limit on open descriptors (`ulimit -n`), or null where it cannot be read. */
export function descriptorLimit(): number | null {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(
      readFileSync('/proc/self/limits', 'utf8'),
    );
    if (line === null || line[1] === 'unlimited') return null;
    return Number(line[1]);
  } catch {
    return null;
  }
}

/** Descriptors kept out of the clients' reach for `config`. */
function reserve(config: Config): number {
  let kept = BASE_RESERVE;
  if (config.stats !== null) kept += MAX_CLIENTS;
  if (config.metrics !== null) kept += MAX_METRICS_CLIENTS;
  for (const frontend of config.frontends) {
    // A listener each, and one probe at a time per backend.
    kept += frontend.listen.length + frontend.backends.length;
  }
  return kept;
}

export interface ConnectionBudget {
  /** The limit the workers enforce; 0: none. */
  readonly maxConnections: number;
  /** What to tell the operator about it, or null. */
  readonly note: { level: 'info' | 'warn'; message: string; fields: Record<string, number> } | null;
}

/** The live-connection limit for `config` under a descriptor limit of `limit` (null: unknown). */
export function connectionBudget(config: Config, limit: number | null): ConnectionBudget {
  if (limit === null) return { maxConnections: config.maxConnections, note: null };
  const kept = reserve(config);
  const fits = Math.max(1, Math.floor((limit - kept) / 2));
  const fields = { descriptorLimit: limit, reserved: kept, maxConnections: fits };
  if (config.maxConnections === 0) {
    return {
      maxConnections: fits,
      note: {
        level: 'info',
        message: 'max connections from the descriptor limit (two per connection, a reserve kept)',
        fields,
      },
    };
  }
  if (config.maxConnections > fits) {
    return {
      maxConnections: config.maxConnections,
      note: {
        level: 'warn',
        message:
          'max connections is more than the descriptor limit allows: raise it (ulimit -n, LimitNOFILE) or clients may take the descriptors health checks need',
        fields: { ...fields, maxConnections: config.maxConnections, fits },
      },
    };
  }
  return { maxConnections: config.maxConnections, note: null };
}
