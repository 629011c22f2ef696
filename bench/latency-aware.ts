// Latency-aware picking, measured: three backends, one of which answers 50 ms late (its first
// byte), under a steady load of short connections. For each scheduler: the client's p50/p99 time
// to the first byte and the slow backend's share of connections. No external tools.
// Usage: npm run bench:latency [-- --seconds 6 --concurrency 8]

import net from 'node:net';
import { parseArgs } from 'node:util';
import { build } from 'hdr-histogram-js';
import { freePort, startFulcrum, stopAll } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '6' },
    concurrency: { type: 'string', default: '8' },
  },
});
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);
const DELAY = [0, 0, 50];

const ports: number[] = [];
for (let b = 0; b < DELAY.length; b++) {
  const port = await freePort();
  net
    .createServer((socket) => {
      socket.on('error', () => {});
      setTimeout(() => socket.end(`${b}\n`), DELAY[b] + Math.random());
    })
    .listen(port, '127.0.0.1');
  ports.push(port);
}

/** One client connection: ms to the first byte, and which backend answered. */
function once(port: number): Promise<[number, number]> {
  return new Promise((resolve) => {
    const started = performance.now();
    const socket = net.connect(port, '127.0.0.1');
    socket.once('data', (chunk: Buffer) => {
      resolve([performance.now() - started, Number(chunk.toString().trim())]);
      socket.destroy();
    });
    socket.on('error', () => resolve([performance.now() - started, -1]));
  });
}

console.log(`one of three backends 50 ms late; ${concurrency} clients, ${seconds} s per scheduler`);
console.log('scheduler       p50 ms   p99 ms   slow share');
for (const algorithm of ['round-robin', 'least-conn', 'p2c', 'peak-ewma']) {
  const port = await freePort();
  const child = await startFulcrum(port, ports, [
    '--workers',
    '1',
    '--no-health-check',
    '--algorithm',
    algorithm,
  ]);
  const histogram = build({
    lowestDiscernibleValue: 1,
    highestTrackableValue: 60_000_000,
    numberOfSignificantValueDigits: 2,
  });
  let slow = 0;
  let total = 0;
  const until = performance.now() + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < until) {
        const [ms, backend] = await once(port);
        histogram.recordValue(Math.round(ms * 1000));
        total++;
        if (backend === 2) slow++;
      }
    }),
  );
  child.kill('SIGKILL');
  const p = (q: number) => (histogram.getValueAtPercentile(q) / 1000).toFixed(2).padStart(8);
  console.log(
    `${algorithm.padEnd(14)}${p(50)} ${p(99)}   ${((slow / total) * 100).toFixed(1).padStart(6)}%`,
  );
}
stopAll();
process.exit(0);
