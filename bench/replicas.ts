// Simulated model-serving replicas, shared by bench:inference and bench:classes: each has a few
// concurrent slots and a FIFO queue behind them, long-tailed service times drawn from a seeded
// generator (the same arrivals and services for every configuration compared), and shows its
// queue (waiting + running) on /metrics as vLLM does. The protocol is one line per request; the
// answer is the same line. Loopback only (127.0.0.2 and up).

import http from 'node:http';
import net from 'node:net';
import { freePort } from './lib.ts';

/** A small seeded generator (mulberry32), so every run sees the same arrivals. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export function exponential(rand: () => number, mean: number): number {
  return -Math.log(1 - rand()) * mean;
}

/** A log-normal draw: `median`, and `sigma` for the tail (1: p99 about 10x the median). */
export function lognormal(rand: () => number, median: number, sigma: number): number {
  // Box-Muller: one normal draw.
  const z = Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  return median * Math.exp(sigma * z);
}

/** How long a request takes, given the replica's generator and the request's line. */
export type Service = (rand: () => number, line: string) => number;

/** One replica: `slots` requests at once, the rest wait in order. */
export class Replica {
  readonly host: string;
  running = 0;
  readonly waiting: Array<() => void> = [];
  deepest = 0;
  /** Milliseconds of service given, by the first character of the request's line. */
  readonly busyMs = new Map<string, number>();
  private readonly rand: () => number;
  private readonly slots: number;
  private readonly service: Service;

  constructor(host: string, seed: number, slots: number, service: Service) {
    this.host = host;
    this.rand = random(seed);
    this.slots = slots;
    this.service = service;
  }

  get queue(): number {
    return this.running + this.waiting.length;
  }

  request(line: string, answer: () => void): void {
    const run = () => {
      this.running++;
      const ms = this.service(this.rand, line);
      const kind = line.charAt(0);
      this.busyMs.set(kind, (this.busyMs.get(kind) ?? 0) + ms);
      setTimeout(() => {
        this.running--;
        answer();
        this.waiting.shift()?.();
      }, ms);
    };
    if (this.running < this.slots) run();
    else {
      this.waiting.push(run);
      this.deepest = Math.max(this.deepest, this.waiting.length);
    }
  }
}

export interface Replicas {
  readonly replicas: Replica[];
  /** The service port, the same on each replica's host. */
  readonly port: number;
  readonly metricsPort: number;
  close(): void;
}

/** Starts `count` replicas: the service on one port and /metrics on another, same on each host. */
export async function startReplicas(
  count: number,
  slots: number,
  seed: number,
  service: Service,
): Promise<Replicas> {
  const port = await freePort();
  const metricsPort = await freePort();
  const replicas: Replica[] = [];
  const servers: net.Server[] = [];
  for (let r = 0; r < count; r++) {
    const replica = new Replica(`127.0.0.${r + 2}`, seed * 100 + r, slots, service);
    replicas.push(replica);
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      let pending = '';
      socket.on('data', (chunk: Buffer) => {
        pending += chunk.toString('latin1');
        let nl = pending.indexOf('\n');
        while (nl >= 0) {
          const line = pending.slice(0, nl);
          pending = pending.slice(nl + 1);
          replica.request(line, () => {
            if (!socket.destroyed) socket.write(`${line}\n`);
          });
          nl = pending.indexOf('\n');
        }
      });
    });
    const metrics = http.createServer((_req, res) => {
      res.end(
        `# TYPE sim:num_requests gauge\nsim:num_requests{state="waiting"} ${replica.waiting.length}\nsim:num_requests{state="running"} ${replica.running}\n`,
      );
    });
    for (const [s, p] of [
      [server, port],
      [metrics, metricsPort],
    ] as const) {
      s.listen(p, replica.host);
      await new Promise((resolve) => s.once('listening', resolve));
      servers.push(s);
    }
  }
  return {
    replicas,
    port,
    metricsPort,
    close: () => {
      for (const s of servers) s.close();
    },
  };
}
