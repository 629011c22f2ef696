// Batch and interactive traffic on the same simulated replicas (bench/replicas.ts, as
// bench:inference), three ways: interactive alone; both on one shared pool without classes; both
// with classes (batch `share: 30`, `priority: 10`). Interactive clients open a connection per
// request (Poisson arrivals at about half the replicas' capacity, short long-tailed requests);
// batch clients hold long connections, each with one heavy request after another, offered at
// twice the capacity. Each backend has maxconn = its slots, so a connection through fulcrum is a
// slot on a replica. Prints interactive p50/p95/p99 (from the arrival to the answer), the
// interactive clients refused, and batch throughput as a share of the replicas' capacity.
// Usage: npm run bench:classes [-- --seconds 20 --seed 7 --workers 1]
// Needs nothing beyond the project's own packages; loopback only (127.0.0.2-4).

import net from 'node:net';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { freePort, startFulcrumConfig, stopAll, workDir } from './lib.ts';
import { exponential, lognormal, random, startReplicas } from './replicas.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '20' },
    warmup: { type: 'string', default: '3' },
    seed: { type: 'string', default: '7' },
    workers: { type: 'string', default: '1' },
  },
});
const SECONDS = Number(values.seconds);
const WARMUP = Number(values.warmup);
const SEED = Number(values.seed);

// Three replicas of ten slots. Interactive requests: median 50 ms, log-normal tail (sigma 1:
// mean 82 ms, p99 about 500 ms). Batch requests: median 500 ms, a narrower tail.
const REPLICAS = 3;
const SLOTS = 10;
const INTERACTIVE = { median: 50, sigma: 1 };
const BATCH = { median: 500, sigma: 0.5 };
const MEAN_INTERACTIVE_MS = INTERACTIVE.median * Math.exp(INTERACTIVE.sigma ** 2 / 2);
const CAPACITY_PER_S = (REPLICAS * SLOTS * 1000) / MEAN_INTERACTIVE_MS;
/** Interactive arrivals per second: half of what the replicas serve. */
const RATE = CAPACITY_PER_S / 2;
/** Batch connections: each keeps a slot busy while it has one, so twice the slots is twice the
 *  capacity; each lasts about 5 s, then its client connects again. */
const BATCH_CONNECTIONS = 2 * REPLICAS * SLOTS;
const BATCH_LIFETIME_MS = 5000;

const service = (rand: () => number, line: string) =>
  line.charAt(0) === 'b'
    ? lognormal(rand, BATCH.median, BATCH.sigma)
    : lognormal(rand, INTERACTIVE.median, INTERACTIVE.sigma);

interface Setup {
  readonly name: string;
  readonly batch: boolean;
  readonly classes: boolean;
}

const SETUPS: Setup[] = [
  { name: 'interactive alone', batch: false, classes: false },
  { name: 'shared, no classes', batch: true, classes: false },
  { name: 'share 30, priority', batch: true, classes: true },
];

interface Row {
  setup: string;
  p50: number;
  p95: number;
  p99: number;
  served: number;
  refused: number;
  /** Batch service given, as a share of the replicas' capacity over the measured time. */
  batchShare: number;
}

/** Interactive clients: a new connection per request, Poisson arrivals. */
function interactive(port: number, seed: number, record: (ms: number | null) => void) {
  const rand = random(seed);
  let stopped = false;
  let next = 0;
  const sockets = new Set<net.Socket>();
  const arrive = () => {
    if (stopped) return;
    const at = performance.now();
    const id = next++;
    const socket = net.connect(port, '127.0.0.1');
    sockets.add(socket);
    socket.setNoDelay(true);
    let answered = false;
    socket.on('connect', () => socket.write(`i${id}\n`));
    socket.on('data', () => {
      if (answered) return;
      answered = true;
      record(performance.now() - at);
      socket.end();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      if (!answered && !stopped) record(null);
    });
    timer = setTimeout(arrive, exponential(rand, 1000 / RATE));
  };
  let timer = setTimeout(arrive, 0);
  return () => {
    stopped = true;
    clearTimeout(timer);
    for (const s of sockets) s.destroy();
  };
}

/** Batch clients: long connections, one heavy request after another. */
function batch(port: number, seed: number) {
  const rand = random(seed);
  let stopped = false;
  let next = 0;
  const sockets = new Set<net.Socket>();
  const session = () => {
    if (stopped) return;
    const socket = net.connect(port, '127.0.0.1');
    sockets.add(socket);
    const until = performance.now() + exponential(rand, BATCH_LIFETIME_MS);
    const ask = () => socket.write(`b${next++}\n`);
    socket.on('connect', ask);
    socket.on('data', () => {
      if (performance.now() >= until) socket.end();
      else ask();
    });
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      session();
    });
  };
  for (let i = 0; i < BATCH_CONNECTIONS; i++) session();
  return () => {
    stopped = true;
    for (const s of sockets) s.destroy();
  };
}

const wait = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function run(setup: Setup): Promise<Row> {
  const simulated = await startReplicas(REPLICAS, SLOTS, SEED, service);
  const chat = await freePort();
  const bulk = await freePort();
  const child = await startFulcrumConfig(workDir(), chat, {
    workers: Number(values.workers),
    log: { level: 'warn' },
    pools: [
      {
        name: 'replicas',
        health: false,
        backends: simulated.replicas.map((r) => ({
          address: `${r.host}:${simulated.port}`,
          maxconn: SLOTS,
        })),
      },
    ],
    frontends: [
      { name: 'interactive', listen: [`127.0.0.1:${chat}`], pool: 'replicas' },
      {
        name: 'batch',
        listen: [`127.0.0.1:${bulk}`],
        pool: 'replicas',
        queueTimeout: '10m',
        ...(setup.classes ? { share: 30, priority: 10 } : {}),
      },
    ],
  });
  const histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 600_000,
    numberOfSignificantValueDigits: 3,
  });
  let measuring = false;
  let refused = 0;
  const stopBatch = setup.batch ? batch(bulk, SEED + 1) : () => {};
  const stopInteractive = interactive(chat, SEED, (ms) => {
    if (!measuring) return;
    if (ms === null) refused++;
    else histogram.recordValue(Math.max(1, Math.round(ms)));
  });
  await wait(WARMUP * 1000);
  const busyAt = simulated.replicas.reduce((n, r) => n + (r.busyMs.get('b') ?? 0), 0);
  measuring = true;
  await wait(SECONDS * 1000);
  measuring = false;
  const busy = simulated.replicas.reduce((n, r) => n + (r.busyMs.get('b') ?? 0), 0) - busyAt;
  stopInteractive();
  stopBatch();
  child.kill('SIGKILL');
  simulated.close();
  const row = {
    setup: setup.name,
    p50: histogram.getValueAtPercentile(50),
    p95: histogram.getValueAtPercentile(95),
    p99: histogram.getValueAtPercentile(99),
    served: histogram.totalCount,
    refused,
    batchShare: busy / (REPLICAS * SLOTS * SECONDS * 1000),
  };
  histogram.destroy();
  return row;
}

console.log(
  `${REPLICAS} replicas x ${SLOTS} slots (maxconn ${SLOTS} each); interactive: a connection per request, ` +
    `${RATE.toFixed(0)}/s (half the capacity), service median ${INTERACTIVE.median} ms (sigma ${INTERACTIVE.sigma}); ` +
    `batch: ${BATCH_CONNECTIONS} long connections (twice the slots), service median ${BATCH.median} ms; ` +
    `${SECONDS} s each, seed ${SEED}, ${values.workers} worker(s)`,
);
console.log('| setup | interactive p50 | p95 | p99 | refused | batch share of capacity |');
console.log('|---|---|---|---|---|---|');
const rows: Row[] = [];
for (const setup of SETUPS) {
  const row = await run(setup);
  rows.push(row);
  console.log(
    `| ${row.setup} | ${row.p50} ms | ${row.p95} ms | ${row.p99} ms | ${row.refused} of ${row.served + row.refused} | ${
      setup.batch ? `${(row.batchShare * 100).toFixed(0)}%` : '-'
    } |`,
  );
}
const [alone, , classes] = rows;
const ratio = classes.p99 / alone.p99;
console.log(
  `with classes: interactive p99 ${ratio.toFixed(2)}x alone (target at most 1.30) ${ratio <= 1.3 ? 'met' : 'NOT met'}; ` +
    `batch ${(classes.batchShare * 100).toFixed(0)}% of capacity (target at least 25%) ${classes.batchShare >= 0.25 ? 'met' : 'NOT met'}`,
);
stopAll();
process.exit(0);
