// UDP benchmark: datagrams a second through fulcrum (one worker, then two) against nginx's stream
// module (`listen ... udp`, one worker: Debian's nginx-light with libnginx-mod-stream) and the
// direct path, at 64, 512 and 1400 bytes; request/response (each client port keeps one datagram
// in flight and waits for its reply) and one-way (a paced offered rate, counted at the backend),
// with the loss of each run. The same load generator and echo backend (bench/udp-peer.ts, raw
// UDP handles) serve every target, so the ratios compare the proxies; on a 2-core machine the
// generator and backend share the cores with the proxy, which the direct row shows.
//   apt-get install -y nginx-light libnginx-mod-stream
// Usage: npm run bench:udp [-- --seconds 3 --rounds 3 --clients 32 --rate 40000]

import { type ChildProcess, spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BIN, has, launch, median, stopAll, workDir } from './lib.ts';

const PEER = fileURLToPath(new URL('./udp-peer.ts', import.meta.url));
const arg = (name: string, fallback: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
};
const SECONDS = arg('seconds', 3);
const CLIENTS = arg('clients', 32);
const RATE = arg('rate', 40_000);
const ROUNDS = arg('rounds', 3);
const SIZES = [64, 512, 1400];
const STREAM_MODULE = '/usr/lib/nginx/modules/ngx_stream_module.so';

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  return port;
}

/** Whether something answers a datagram on `port` (the proxy is up, its backend too). */
async function answers(port: number, ms = 10_000): Promise<void> {
  const socket = dgram.createSocket('udp4');
  const until = Date.now() + ms;
  try {
    for (;;) {
      const got = new Promise<boolean>((resolve) => {
        const onMessage = () => {
          clearTimeout(timer);
          resolve(true);
        };
        const timer = setTimeout(() => {
          socket.off('message', onMessage);
          resolve(false);
        }, 200);
        socket.once('message', onMessage);
      });
      socket.send('ping', port, '127.0.0.1');
      if (await got) return;
      if (Date.now() > until) throw new Error(`nothing answers on udp ${port}`);
    }
  } finally {
    socket.close();
  }
}

/** A child speaking one JSON line per answer (bench/udp-peer.ts). */
const peers: ChildProcess[] = [];
process.on('exit', () => {
  for (const child of peers) child.kill('SIGKILL');
});

function peer(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, [PEER, ...args], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, ...env },
  });
  peers.push(child);
  return child;
}

async function line(child: ChildProcess): Promise<string> {
  const [chunk] = (await once(child.stdout as NodeJS.ReadableStream, 'data')) as [Buffer];
  return chunk.toString().trim();
}

interface Target {
  name: string;
  port: number;
  /** The proxy's process (nginx's master: its workers are counted with it); null: direct. */
  pid: number | null;
}

/** CPU time (user + system, in seconds) of `pid` and its children, from /proc. */
function cpuSeconds(pid: number): number {
  const tick = 100; // USER_HZ on Linux
  let total = 0;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      // fields[1] is the parent, fields[11] and [12] utime and stime (the whole process).
      if (Number(entry) === pid || Number(fields[1]) === pid) {
        total += (Number(fields[11]) + Number(fields[12])) / tick;
      }
    } catch {
      // gone meanwhile
    }
  }
  return total;
}

async function startBackend(ports: number[], oneway: boolean): Promise<ChildProcess> {
  const backend = peer(['backend', ...ports.map(String)], { ONEWAY: oneway ? '1' : '0' });
  if ((await line(backend)) !== 'ready') throw new Error('backend did not start');
  return backend;
}

async function backendReceived(backend: ChildProcess): Promise<number> {
  backend.stdin?.write('report\n');
  return (JSON.parse(await line(backend)) as { received: number }).received;
}

async function startTargets(dir: string, backends: number[]): Promise<Target[]> {
  const targets: Target[] = [{ name: 'direct', port: backends[0], pid: null }];
  if (has('nginx') && existsSync(STREAM_MODULE)) {
    const port = await freeUdpPort();
    const conf = join(dir, 'nginx-udp.conf');
    writeFileSync(
      conf,
      `load_module ${STREAM_MODULE};
worker_processes 1;
daemon off;
pid ${dir}/nginx-udp.pid;
error_log ${dir}/nginx-udp-error.log warn;
events { worker_connections 16384; }
stream {
  upstream backends { ${backends.map((b) => `server 127.0.0.1:${b};`).join(' ')} }
  server { listen 127.0.0.1:${port} udp; proxy_pass backends; proxy_timeout 30s; }
}
`,
    );
    const nginx = launch('nginx', ['-c', conf, '-e', `${dir}/nginx-udp-error.log`]);
    await answers(port);
    targets.push({ name: 'nginx', port, pid: nginx.pid ?? null });
  } else {
    console.error(
      'bench:udp: nginx with the stream module is not installed (apt-get install -y nginx-light libnginx-mod-stream): no comparison',
    );
  }
  for (const workers of [1, 2]) {
    const port = await freeUdpPort();
    const fulcrum = launch(process.execPath, [
      BIN,
      '--listen',
      `127.0.0.1:${port},udp`,
      '--workers',
      String(workers),
      '--log-level',
      'warn',
      '--no-health-check',
      ...backends.flatMap((b) => ['--backend', `127.0.0.1:${b}`]),
    ]);
    await answers(port);
    targets.push({ name: `fulcrum-${workers}w`, port, pid: fulcrum.pid ?? null });
  }
  return targets;
}

interface Result {
  rate: number;
  loss: number;
  /** The proxy's CPU time per datagram it carried (both ways), in microseconds; NaN: direct. */
  cpuUs: number;
}

async function requestResponse(target: Target, size: number): Promise<Result> {
  const client = peer([
    'client',
    String(target.port),
    String(size),
    String(SECONDS),
    String(CLIENTS),
  ]);
  // The CPU is read over the whole run, warm-up second included, and divided by every datagram
  // of it (the measured rate over the whole run's length; two datagrams per exchange).
  const before = target.pid === null ? 0 : cpuSeconds(target.pid);
  const out = JSON.parse(await line(client)) as { rate: number; received: number; lost: number };
  const cpu = target.pid === null ? Number.NaN : cpuSeconds(target.pid) - before;
  return {
    rate: out.rate,
    loss: out.lost / Math.max(1, out.received + out.lost),
    cpuUs: (cpu * 1e6) / (out.rate * (SECONDS + 1) * 2),
  };
}

async function oneWay(target: Target, size: number, backend: ChildProcess): Promise<Result> {
  const before = await backendReceived(backend);
  const cpuBefore = target.pid === null ? 0 : cpuSeconds(target.pid);
  const sender = peer([
    'oneway',
    String(target.port),
    String(size),
    String(SECONDS),
    String(CLIENTS),
    String(RATE),
  ]);
  const out = JSON.parse(await line(sender)) as { sent: number; rate: number };
  // What is still in flight arrives within a moment.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const received = (await backendReceived(backend)) - before;
  const cpu = target.pid === null ? Number.NaN : cpuSeconds(target.pid) - cpuBefore;
  return {
    rate: received / SECONDS,
    loss: Math.max(0, 1 - received / out.sent),
    cpuUs: (cpu * 1e6) / Math.max(1, received),
  };
}

const pct = (x: number) => `${(x * 100).toFixed(2)}%`;
const k = (x: number) => `${(x / 1000).toFixed(1)}k`;

async function main(): Promise<void> {
  const dir = workDir();
  const backendPorts = [await freeUdpPort(), await freeUdpPort()];
  console.log(
    `bench:udp: ${ROUNDS} rounds of ${SECONDS}s runs (the median; loss: the worst run), ${CLIENTS} client ports; one-way offered ${k(RATE)}/s`,
  );
  const rows: string[][] = [
    ['mode', 'size', 'target', 'datagrams/s', 'worst loss', 'vs nginx', 'CPU µs/datagram'],
  ];
  for (const mode of ['request/response', 'one-way'] as const) {
    const backend = await startBackend(backendPorts, mode === 'one-way');
    const targets = await startTargets(dir, backendPorts);
    for (const size of SIZES) {
      // Rounds with the targets interleaved (direct, nginx, fulcrum, direct, ...): the median
      // rate of each, and its worst loss.
      const runs = new Map<string, Result[]>();
      for (let round = 0; round < ROUNDS; round++) {
        for (const target of targets) {
          const result =
            mode === 'one-way'
              ? await oneWay(target, size, backend)
              : await requestResponse(target, size);
          runs.set(target.name, [...(runs.get(target.name) ?? []), result]);
        }
      }
      const results = new Map<string, Result>();
      for (const target of targets) {
        const all = runs.get(target.name) ?? [];
        const result = {
          rate: median(all.map((r) => r.rate)),
          loss: Math.max(...all.map((r) => r.loss)),
          cpuUs: median(all.map((r) => r.cpuUs)),
        };
        results.set(target.name, result);
        const nginx = results.get('nginx');
        rows.push([
          mode,
          String(size),
          target.name,
          k(result.rate),
          pct(result.loss),
          nginx === undefined || target.name === 'direct'
            ? ''
            : `${(result.rate / nginx.rate).toFixed(2)}x`,
          Number.isNaN(result.cpuUs) ? '' : result.cpuUs.toFixed(1),
        ]);
        console.log(rows[rows.length - 1].join('  '));
      }
    }
    stopAll();
    backend.kill();
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(
    `\n${rows.map((r) => `| ${r.map((cell, c) => cell.padEnd(widths[c])).join(' | ')} |`).join('\n')}`,
  );
  process.exit(0);
}

await main();
