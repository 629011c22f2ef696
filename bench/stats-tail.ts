// What reading the stats costs the traffic: small keep-alive requests over 4 connections through
// fulcrum in front of 16 backends, quiet, while a client asks `show info json` four times a second
// (no histogram: what any stats client costs), and while it asks `show stat json` as often (as a
// dashboard, `fulcrum top` and a Prometheus scrape together might), runs interleaved. Every
// `show stat` answer carries each backend's latency percentiles, read from the workers'
// histograms: the ratios to the quiet runs say whether that stalls the relay.
// Usage: npm run bench:stats-tail [-- --seconds 5 --runs 3]   (needs nginx-light and wrk)

import { execFile } from 'node:child_process';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { freePort, has, median, startFulcrum, startNginx, workDir } from './lib.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    runs: { type: 'string', default: '3' },
    backends: { type: 'string', default: '16' },
  },
});
const seconds = Number(values.seconds);
const runs = Math.max(1, Number(values.runs));

if (!has('nginx') || !has('wrk')) {
  console.error('bench:stats-tail needs nginx and wrk: apt-get install -y nginx-light wrk');
  process.exit(2);
}

const dir = workDir();
const ports: number[] = [];
for (let i = 0; i < Number(values.backends); i++) ports.push(await freePort());
await startNginx(dir, ports, { small: Buffer.from('ok\n'.padEnd(100, '.')) });
const port = await freePort();
const stats = join(tmpdir(), `fulcrum-stats-tail-${process.pid}.sock`);
await startFulcrum(port, ports, ['--workers', '1', '--no-health-check', '--stats-socket', stats]);

interface Run {
  rps: number;
  p50: number;
  p99: number;
  max: number;
}

const run = promisify(execFile);

function ms(text: string | undefined): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text ?? '');
  if (m === null) return 0;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

/** wrk in its own process, so this one can ask for stats meanwhile. */
async function load(connections: number, secs: number): Promise<Run> {
  const url = `http://127.0.0.1:${port}/small`;
  const { stdout } = await run('wrk', ['-t1', `-c${connections}`, `-d${secs}s`, '--latency', url]);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(stdout)?.[1] ?? 0),
    p50: ms(/\s50%\s+(\S+)/.exec(stdout)?.[1]),
    p99: ms(/\s99%\s+(\S+)/.exec(stdout)?.[1]),
    max: ms(/Latency\s+\S+\s+\S+\s+(\S+)/.exec(stdout)?.[1]),
  };
}

/** Sends `command` every 250 ms, each answer read to its end, until stopped. */
function poll(command: string): () => void {
  const timer = setInterval(() => {
    const socket = net.connect(stats);
    socket.on('error', () => {});
    socket.resume();
    socket.end(`${command}\n`);
  }, 250);
  return () => clearInterval(timer);
}

// Every backend has timings before the runs (a histogram nothing was recorded in is cheap to read).
await load(16, 2);

// `show info` reads no histogram: what any client of the stats socket costs on this machine.
const modes = [
  { name: 'quiet', command: null },
  { name: 'show info 4x/s', command: 'show info json' },
  { name: 'show stat 4x/s', command: 'show stat json' },
] as const;
const results: Run[][] = modes.map(() => []);
for (let i = 0; i < runs; i++) {
  for (const [k, mode] of modes.entries()) {
    const stop = mode.command === null ? () => {} : poll(mode.command);
    results[k].push(await load(4, seconds));
    stop();
  }
}

const m = (runs: Run[], key: keyof Run) => median(runs.map((r) => r[key]));
console.log(
  `small keep-alive requests, 4 connections, ${ports.length} backends, ${runs} interleaved runs of ${seconds} s (medians):`,
);
for (const [k, mode] of modes.entries()) {
  const set = results[k];
  const vs = (key: keyof Run) => (m(set, key) / m(results[0], key)).toFixed(2);
  console.log(
    `  ${mode.name.padEnd(15)} ${Math.round(m(set, 'rps'))} requests/s (${vs('rps')}x)   p50 ${m(set, 'p50').toFixed(3)} ms (${vs('p50')}x)   p99 ${m(set, 'p99').toFixed(3)} ms (${vs('p99')}x)   max ${m(set, 'max').toFixed(2)} ms`,
  );
}
process.exit(0);
