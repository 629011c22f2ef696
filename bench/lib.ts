// Benchmark plumbing: nginx backends, HAProxy and fulcrum side by side, and the load generator.
// Needs Debian's nginx-light (backends) and, for the comparison, haproxy; wrk if present,
// autocannon (a devDependency) otherwise:  apt-get install -y nginx-light haproxy wrk

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../bin/fulcrum', import.meta.url));

export function has(command: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** The median: what the benchmarks report of interleaved runs. */
export function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Resolves once something accepts on `port`. */
export async function waitForPort(port: number, ms = 10_000): Promise<void> {
  const until = Date.now() + ms;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > until) throw new Error(`nothing listens on ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

export function workDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-bench-'));
  // nginx workers run as an unprivileged user: they must be able to read the files.
  chmodSync(dir, 0o755);
  return dir;
}

const running: ChildProcess[] = [];

export function launch(command: string, args: string[]): ChildProcess {
  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  running.push(child);
  return child;
}

/** Stops everything launched. nginx's master gets SIGTERM, which it passes on to its workers (a
 *  SIGKILL would leave them running, and taking CPU, after the benchmark). */
export function stopAll(): void {
  for (const child of running) child.kill(child.spawnfile === 'nginx' ? 'SIGTERM' : 'SIGKILL');
}
process.on('exit', stopAll);

/** The test certificate (example.com, *.example.com, localhost is not in it: wrk does not check). */
export const CERT = fileURLToPath(new URL('../test/fixtures/tls/cert.pem', import.meta.url));
export const KEY = fileURLToPath(new URL('../test/fixtures/tls/key.pem', import.meta.url));

/** nginx with one worker serving `files` on each of `ports`, and over TLS on each of `tlsPorts`. */
export async function startNginx(
  dir: string,
  ports: number[],
  files: Record<string, Buffer>,
  tlsPorts: number[] = [],
) {
  const www = join(dir, 'www');
  execFileSync('mkdir', ['-p', www]);
  chmodSync(www, 0o755);
  for (const [name, body] of Object.entries(files)) {
    writeFileSync(join(www, name), body);
    chmodSync(join(www, name), 0o644);
  }
  const servers = [
    ...ports.map((port) => `server { listen 127.0.0.1:${port}; root ${www}; }`),
    ...tlsPorts.map(
      (port) =>
        `server { listen 127.0.0.1:${port} ssl; ssl_certificate ${CERT}; ssl_certificate_key ${KEY}; root ${www}; }`,
    ),
  ].join('\n  ');
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 10000000;
  keepalive_timeout 120s;
  ${servers}
}
`,
  );
  launch('nginx', ['-c', conf, '-e', `${dir}/nginx-error.log`]);
  for (const port of [...ports, ...tlsPorts]) await waitForPort(port);
}

/** HAProxy's global and default sections: one thread, mode tcp, fulcrum's default timeouts. */
const HAPROXY_HEAD = `global
  nbthread 1
  # maxconn must stay below the fd limit (ulimit -n is 20000 here) or HAProxy refuses to start.
  maxconn 9000
defaults
  mode tcp
  timeout connect 3s
  timeout client 5m
  timeout server 5m`;

/** HAProxy in mode tcp, one thread, leastconn over `backends`; `ssl`: a PEM (certificate and
 *  key) to terminate TLS with (`bind ... ssl crt PEM`). */
export async function startHaproxy(dir: string, port: number, backends: number[], ssl = '') {
  const conf = join(dir, ssl === '' ? 'haproxy.cfg' : 'haproxy-tls.cfg');
  writeFileSync(
    conf,
    `${HAPROXY_HEAD}
frontend fe
  bind 127.0.0.1:${port}${ssl === '' ? '' : ` ssl crt ${ssl}`}
  default_backend be
backend be
  balance leastconn
${backends.map((p, i) => `  server s${i} 127.0.0.1:${p}`).join('\n')}
`,
  );
  const child = launch('haproxy', ['-f', conf, '-db']);
  await waitForPort(port);
  return child;
}

/**
 * HAProxy routing TLS by server name without terminating it (tcp-request inspect-delay and
 * req.ssl_sni), one thread: `localhost` to leastconn over `backends`, two other names elsewhere.
 */
export async function startHaproxySni(dir: string, port: number, backends: number[]) {
  const conf = join(dir, 'haproxy-sni.cfg');
  const servers = backends.map((p, i) => `  server s${i} 127.0.0.1:${p}`).join('\n');
  writeFileSync(
    conf,
    `${HAPROXY_HEAD}
frontend fe
  bind 127.0.0.1:${port}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend one if { req.ssl_sni -i one.example }
  use_backend two if { req.ssl_sni -i -m end .two.example }
  use_backend local if { req.ssl_sni -i localhost }
backend one
  balance leastconn
${servers}
backend two
  balance leastconn
${servers}
backend local
  balance leastconn
${servers}
`,
  );
  const child = launch('haproxy', ['-f', conf, '-db']);
  await waitForPort(port);
  return child;
}

/** fulcrum from a config file (YAML or JSON), listening on `port`. */
export async function startFulcrumConfig(dir: string, port: number, config: object) {
  const path = join(dir, `fulcrum-${port}.json`);
  writeFileSync(path, JSON.stringify(config));
  const child = launch(process.execPath, [BIN, '--config', path, '--log-level', 'warn']);
  await waitForPort(port);
  return child;
}

/** fulcrum as users run it, through bin/fulcrum. */
export async function startFulcrum(port: number, backends: number[], extra: string[] = []) {
  const args = [BIN, '--listen', `127.0.0.1:${port}`, '--log-level', 'warn', ...extra];
  for (const b of backends) args.push('--backend', `127.0.0.1:${b}`);
  const child = launch(process.execPath, args);
  await waitForPort(port);
  return child;
}

export interface Load {
  requestsPerSec: number;
  bytesPerSec: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 };

function parseSize(text: string): number {
  const m = /([\d.]+)([KMG]?)B/.exec(text);
  return m === null ? 0 : Number(m[1]) * UNITS[m[2]];
}

function parseMs(text: string): number {
  const m = /([\d.]+)(us|ms|s)/.exec(text);
  if (m === null) return 0;
  return Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1);
}

/** Drives `url` with `connections` for `seconds`; `close` sends Connection: close. */
export async function load(
  url: string,
  connections: number,
  seconds: number,
  close: boolean,
): Promise<Load> {
  if (has('wrk')) {
    const args = ['-t1', `-c${connections}`, `-d${seconds}s`, '--latency', url];
    if (close) args.push('-H', 'Connection: close');
    const out = execFileSync('wrk', args, { encoding: 'utf8' });
    const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    return {
      requestsPerSec: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0),
      bytesPerSec: parseSize(/Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? ''),
      p50Ms: parseMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''),
      p99Ms: parseMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ''),
      errors: errors === null ? 0 : errors.slice(1).reduce((n, x) => n + Number(x), 0),
    };
  }
  const { default: autocannon } = await import('autocannon');
  const result = await autocannon({
    url,
    connections,
    duration: seconds,
    headers: close ? { connection: 'close' } : {},
  });
  return {
    requestsPerSec: result.requests.average,
    bytesPerSec: result.throughput.average,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    errors: result.errors + result.non2xx,
  };
}
