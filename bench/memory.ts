// Resident memory per idle proxied connection: opens N connections through the balancer (each
// exchanges one small message, so both read paths are used, then idles) and reads the balancer's
// RSS from /proc before and after. fulcrum --workers 1, and HAProxy when installed.
// Usage: npm run bench:memory [-- --connections 5000]

import { readFileSync } from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { freePort, has, startFulcrum, startHaproxy, stopAll, workDir } from './lib.ts';

const { values } = parseArgs({ options: { connections: { type: 'string', default: '5000' } } });
const count = Number(values.connections);

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The backend answers each line with a line and keeps the connection.
const backendSockets: net.Socket[] = [];
const backend = net.createServer((socket) => {
  backendSockets.push(socket);
  socket.on('data', () => socket.write('hello\n'));
  socket.on('error', () => {});
});
const backendPort = await freePort();
backend.listen(backendPort, '127.0.0.1');

async function openIdle(port: number, n: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  const BATCH = 200;
  for (let k = 0; k < n; k += BATCH) {
    await Promise.all(
      Array.from({ length: Math.min(BATCH, n - k) }, async () => {
        const socket = net.connect(port, '127.0.0.1');
        socket.on('error', () => {});
        sockets.push(socket);
        await new Promise((resolve) => socket.once('connect', resolve));
        socket.write('hi\n');
        await new Promise((resolve) => socket.once('data', resolve));
      }),
    );
  }
  return sockets;
}

async function measure(name: string, pid: number, port: number): Promise<number> {
  // Warm up: a first wave opens and closes, so pools and JIT are in place before the baseline.
  for (const s of await openIdle(port, 200)) s.destroy();
  await sleep(1000);
  const before = rssKiB(pid);
  const sockets = await openIdle(port, count);
  await sleep(2000);
  const after = rssKiB(pid);
  const perConnection = ((after - before) * 1024) / count;
  console.log(
    `${name.padEnd(8)} ${count} idle connections: +${((after - before) / 1024).toFixed(1)} MiB, ${(perConnection / 1000).toFixed(1)} KB each`,
  );
  for (const s of sockets) s.destroy();
  for (const s of backendSockets.splice(0)) s.destroy();
  await sleep(500);
  return perConnection;
}

const dir = workDir();
const results: Record<string, number> = {};
const fulcrumPort = await freePort();
const fulcrum = await startFulcrum(fulcrumPort, [backendPort], ['--workers', '1']);
results.fulcrum = await measure('fulcrum', fulcrum.pid!, fulcrumPort);
fulcrum.kill('SIGKILL');
if (has('haproxy')) {
  const haproxyPort = await freePort();
  const haproxy = await startHaproxy(dir, haproxyPort, [backendPort]);
  results.haproxy = await measure('haproxy', haproxy.pid!, haproxyPort);
  console.log(
    `fulcrum/haproxy memory per connection: ${(results.fulcrum / results.haproxy).toFixed(1)}x`,
  );
}
stopAll();
process.exit(0);
