// Resident memory per idle proxied connection: opens N connections through the balancer (each
// exchanges one small message, so both read paths are used, then idles) and reads the balancer's
// RSS from /proc before and after. fulcrum with one worker and with two, and HAProxy when
// installed. The clients and the backend run in processes of their own, so each side has its own
// descriptor limit; a count the balancer's limit cannot hold (two descriptors per connection) is
// said and skipped, not measured short.
// Usage: npm run bench:memory [-- --connections 5000,20000 --workers 1,2]

import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { freePort, has, startFulcrum, startHaproxy, stopAll, workDir } from './lib.ts';

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '5000,20000' },
    workers: { type: 'string', default: '1,2' },
  },
});
const counts = values.connections.split(',').map(Number);
const workerCounts = values.workers.split(',').map(Number);

function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
}

/** This process's open-file limit, which children (the balancers) inherit. */
function descriptorLimit(): number {
  const limits = readFileSync('/proc/self/limits', 'utf8');
  return Number(/Max open files\s+(\d+)/.exec(limits)?.[1] ?? 1024);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

// The backend answers each line with a line and keeps the connection.
const BACKEND = `
const net = require('node:net');
const server = net.createServer((s) => { s.on('data', () => s.write('hello\\n')); s.on('error', () => {}); });
server.listen(Number(process.argv[1]), '127.0.0.1', () => console.log('ready'));
`;

// Opens N connections in batches, each says hi and waits for the answer; prints "open", and
// holds them until stdin closes.
const CLIENTS = `
const net = require('node:net');
const [port, n] = process.argv.slice(1).map(Number);
const sockets = [];
(async () => {
  for (let k = 0; k < n; k += 200) {
    await Promise.all(Array.from({ length: Math.min(200, n - k) }, () => new Promise((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      sockets.push(s);
      s.on('error', () => resolve());
      s.once('connect', () => s.write('hi\\n'));
      s.once('data', resolve);
      s.once('close', resolve);
    })));
  }
  const answered = sockets.filter((s) => !s.destroyed).length;
  console.log('open ' + answered);
})();
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

async function child(
  source: string,
  args: string[],
  ready: string,
): Promise<{ proc: ChildProcess; line: string }> {
  const proc = spawn(process.execPath, ['-e', source, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  let text = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  while (!text.includes(ready)) {
    if (proc.exitCode !== null) throw new Error(`a helper exited: ${text}`);
    await sleep(20);
  }
  return { proc, line: text.trim() };
}

async function openIdle(port: number, n: number): Promise<{ proc: ChildProcess; open: number }> {
  const { proc, line } = await child(CLIENTS, [String(port), String(n)], 'open');
  return { proc, open: Number(line.split(' ')[1]) };
}

async function close(proc: ChildProcess): Promise<void> {
  proc.stdin?.end();
  if (proc.exitCode === null) await once(proc, 'exit');
}

async function measure(name: string, pid: number, port: number, n: number): Promise<number> {
  // Warm up: a first wave opens and closes, so pools and JIT are in place before the baseline.
  await close((await openIdle(port, 200)).proc);
  await sleep(1000);
  const before = rssKiB(pid);
  const { proc, open } = await openIdle(port, n);
  await sleep(2000);
  const after = rssKiB(pid);
  const perConnection = ((after - before) * 1024) / n;
  console.log(
    `${name.padEnd(20)} ${n} idle connections (${open} answered): +${((after - before) / 1024).toFixed(1)} MiB, ${(perConnection / 1000).toFixed(1)} KB each`,
  );
  await close(proc);
  await sleep(500);
  return perConnection;
}

const limit = descriptorLimit();
const dir = workDir();
const backendPort = await freePort();
const backend = await child(BACKEND, [String(backendPort)], 'ready');
const summary: string[] = [];
// Two descriptors per proxied connection, and a reserve for everything else.
const largest = Math.floor((limit - 200) / 2 / 100) * 100;
const runs: number[] = [];
for (const n of counts) {
  if (2 * n + 200 <= limit) {
    runs.push(n);
    continue;
  }
  // Said, not measured short: and the largest count the limit allows is measured instead.
  const line = `${n} connections: not measured, a balancer needs ${2 * n + 200} descriptors and this machine allows ${limit} (ulimit -n); measuring ${largest} instead`;
  console.log(line);
  summary.push(line);
  if (!counts.includes(largest) && !runs.includes(largest)) runs.push(largest);
}
for (const n of runs) {
  let haproxy = 0;
  if (has('haproxy')) {
    const haproxyPort = await freePort();
    const proc = await startHaproxy(dir, haproxyPort, [backendPort]);
    haproxy = await measure('haproxy', proc.pid as number, haproxyPort, n);
    proc.kill('SIGKILL');
  }
  for (const workers of workerCounts) {
    const port = await freePort();
    const proc = await startFulcrum(port, [backendPort], ['--workers', String(workers)]);
    const fulcrum = await measure(`fulcrum --workers ${workers}`, proc.pid as number, port, n);
    proc.kill('SIGKILL');
    summary.push(
      `${n} connections, fulcrum --workers ${workers}: ${(fulcrum / 1000).toFixed(1)} KB each${haproxy > 0 ? ` (haproxy ${(haproxy / 1000).toFixed(1)} KB: ${(fulcrum / haproxy).toFixed(1)}x)` : ''}`,
    );
  }
}
console.log(`\nsummary\n  ${summary.join('\n  ')}`);
backend.proc.kill();
stopAll();
process.exit(0);
