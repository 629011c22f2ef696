// Simulated model-serving replicas behind fulcrum, one run per scheduler: where connection counts
// lie. Each replica has a few concurrent slots and a FIFO queue behind them; service times have
// a long tail; it shows its queue (waiting + running) on /metrics as vLLM does. Clients hold
// long-lived connections with very unequal request rates (a few heavy ones, many light ones),
// send requests without waiting for answers, in bursts, and reconnect after a while; so the
// number of connections on a replica says little about how busy it is. Every scheduler sees the
// same arrivals (one seed). Prints p50/p95/p99 request latency and the deepest queue seen.
// Usage: npm run bench:inference [-- --seconds 30 --load-interval 50ms --seed 7]
// Needs nothing beyond the project's own packages; loopback only (127.0.0.2-9).

import net from 'node:net';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { BIN, freePort, launch, stopAll, waitForPort } from './lib.ts';
import { exponential, lognormal, random, startReplicas } from './replicas.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '30' },
    warmup: { type: 'string', default: '3' },
    'load-interval': { type: 'string', default: '50ms' },
    seed: { type: 'string', default: '7' },
    algorithms: { type: 'string', default: 'round-robin,least-conn,peak-ewma,least-load' },
  },
});
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);

// The workload. Eight replicas of two slots each; a median service of 15 ms with a long tail
// (log-normal, sigma 1: mean 25 ms, p99 150 ms), so about 80 requests/s of capacity each.
const REPLICAS = 8;
const SLOTS = 2;
const MEDIAN_MS = 15;
const SIGMA = 1;
// Two heavy clients on connections they keep (a batch job, a busy HTTP/2 client: 40 requests/s
// each, half a replica) and 150 light ones on short connections (a request at once, then about
// one a second for the second or so the connection lasts, then a new connection): about 380
// requests/s, 60% of capacity, and near all of it in a burst. Balanced by connection count, a
// replica that carries a heavy connection gets as many light ones as any other, and runs past
// its limit in every burst.
const HEAVY = { count: 2, rate: 40, lifetimeMs: Number.POSITIVE_INFINITY };
const LIGHT = { count: 150, rate: 1, lifetimeMs: 1000 };
/** Bursts: the arrival rate is BURST times the base for BURST_MS of every CYCLE_MS. */
const BURST = 1.6;
const BURST_MS = 1500;
const CYCLE_MS = 5000;
const CALM = (CYCLE_MS - BURST * BURST_MS) / (CYCLE_MS - BURST_MS);

function serviceMs(rand: () => number): number {
  return lognormal(rand, MEDIAN_MS, SIGMA);
}

/** The clients: HEAVY and LIGHT connections, each reconnecting when its lifetime is over. */
function startClients(port: number, seed: number, record: (ms: number) => void) {
  const rand = random(seed);
  const started = performance.now();
  let stopped = false;
  const sockets = new Set<net.Socket>();
  const burst = () => ((performance.now() - started) % CYCLE_MS < BURST_MS ? BURST : CALM);
  const session = (kind: typeof HEAVY) => {
    if (stopped) return;
    const rate = kind.rate;
    const socket = net.connect(port, '127.0.0.1');
    sockets.add(socket);
    socket.setNoDelay(true);
    const sent = new Map<number, number>();
    let next = 0;
    let pending = '';
    let timer: NodeJS.Timeout | null = null;
    const end = setTimeout(
      () => {
        if (timer !== null) clearTimeout(timer);
        // Wait for what is in flight, then go: the answers still count.
        const close = () => {
          if (sent.size === 0 || stopped || socket.destroyed) socket.end();
          else setTimeout(close, 5);
        };
        close();
      },
      // A kept connection is never ended by its client (a timer cannot take Infinity).
      Math.min(exponential(rand, kind.lifetimeMs), 2_000_000_000),
    );
    const arrive = () => {
      sent.set(next, performance.now());
      socket.write(`${next++}\n`);
      timer = setTimeout(arrive, exponential(rand, 1000 / (rate * burst())));
    };
    // A client connects because it has a request to send: the first goes at once.
    socket.on('connect', arrive);
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        const id = Number(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        const at = sent.get(id);
        if (at !== undefined) {
          record(performance.now() - at);
          sent.delete(id);
        }
        nl = pending.indexOf('\n');
      }
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(end);
      if (timer !== null) clearTimeout(timer);
      sockets.delete(socket);
      session(kind);
    });
  };
  for (let i = 0; i < HEAVY.count; i++) session(HEAVY);
  for (let i = 0; i < LIGHT.count; i++) session(LIGHT);
  return () => {
    stopped = true;
    for (const s of sockets) s.destroy();
  };
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Row {
  algorithm: string;
  p50: number;
  p95: number;
  p99: number;
  deepest: number;
  requests: number;
}

async function run(algorithm: string): Promise<Row> {
  const seed = Number(values.seed);
  const simulated = await startReplicas(REPLICAS, SLOTS, seed, serviceMs);
  const { replicas, port, metricsPort } = simulated;
  const listen = await freePort();
  const args = [
    BIN,
    '--listen',
    `127.0.0.1:${listen}`,
    '--workers',
    '1',
    '--log-level',
    'warn',
    '--algorithm',
    algorithm,
    '--load-metric',
    'sim:num_requests',
    '--load-metrics-port',
    String(metricsPort),
    '--load-interval',
    String(values['load-interval']),
    ...replicas.flatMap((r) => ['--backend', `${r.host}:${port}`]),
  ];
  const child = launch(process.execPath, args);
  await waitForPort(listen);
  const histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000,
    numberOfSignificantValueDigits: 3,
  });
  let measuring = false;
  const stop = startClients(listen, seed, (ms) => {
    if (measuring) histogram.recordValue(Math.max(1, Math.round(ms)));
  });
  await wait(WARMUP * 1000);
  for (const r of replicas) r.deepest = 0;
  measuring = true;
  await wait(SECONDS * 1000);
  measuring = false;
  stop();
  child.kill('SIGKILL');
  simulated.close();
  const row = {
    algorithm,
    p50: histogram.getValueAtPercentile(50),
    p95: histogram.getValueAtPercentile(95),
    p99: histogram.getValueAtPercentile(99),
    deepest: Math.max(...replicas.map((r) => r.deepest)),
    requests: histogram.totalCount,
  };
  histogram.destroy();
  return row;
}

console.log(
  `${REPLICAS} replicas x ${SLOTS} slots, service median ${MEDIAN_MS} ms (log-normal, sigma ${SIGMA}); ` +
    `${HEAVY.count} heavy kept connections at ${HEAVY.rate}/s + ${LIGHT.count} light at ${LIGHT.rate}/s ` +
    `(new connection every ~${LIGHT.lifetimeMs / 1000} s), bursts x${BURST}; ${SECONDS} s per scheduler; ` +
    `--load-interval ${values['load-interval']}`,
);
const rows: Row[] = [];
for (const algorithm of String(values.algorithms).split(',')) {
  const row = await run(algorithm);
  rows.push(row);
  console.log(
    `${row.algorithm.padEnd(12)} p50 ${String(row.p50).padStart(5)} ms  p95 ${String(row.p95).padStart(5)} ms  ` +
      `p99 ${String(row.p99).padStart(5)} ms  deepest queue ${String(row.deepest).padStart(3)}  (${row.requests} requests)`,
  );
}
const leastConn = rows.find((r) => r.algorithm === 'least-conn');
const leastLoad = rows.find((r) => r.algorithm === 'least-load');
if (leastConn !== undefined && leastLoad !== undefined) {
  const ratio = leastLoad.p99 / leastConn.p99;
  console.log(
    `least-load p99 / least-conn p99 = ${ratio.toFixed(2)} (target: at most 0.50) ${ratio <= 0.5 ? 'met' : 'NOT met'}`,
  );
}
stopAll();
process.exit(0);
