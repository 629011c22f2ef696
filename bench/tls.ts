// TLS termination, side by side: HAProxy (`bind ... ssl crt`, nbthread 1) and fulcrum (--tls-cert,
// --workers 1, then 2) terminating the same ECDSA P-256 certificate in front of the same plain
// nginx backends. Full TLS 1.3 handshakes per second (a new connection per request; neither
// resumes: wrk keeps no session), and bulk 1 MiB responses over kept-alive TLS connections.
// Ratios to HAProxy's, and the CPU each spends per handshake (from /proc). Beside them in the
// handshake run, node:tls answering by itself (bench/tls-alone.ts): the ceiling for fulcrum.
// With --profile, `perf record` samples fulcrum (one worker) and HAProxy during the handshake
// run: where the time goes, grouped (the handshake's own crypto, the rest of OpenSSL, malloc,
// the kernel, V8 and our JavaScript), and the top symbols. Needs perf (apt-get install -y
// linux-perf).
// Run alone: npm run bench:tls [-- --seconds 8 --runs 3 --profile]; `npm run bench` runs it too.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Load } from './lib.ts';
import {
  BIN,
  CERT,
  freePort,
  has,
  KEY,
  launch,
  load,
  startHaproxy,
  startNginx,
  stopAll,
  waitForPort,
  workDir,
} from './lib.ts';

/** Where samples of a TLS terminator go, by symbol: first match wins. */
const GROUPS: Array<[string, RegExp]> = [
  ['kernel', /\[k\]/],
  [
    'handshake crypto (X25519, P-256, SHA, AES-GCM)',
    /x25519|fe_|fe64|ecp_nistz256|sha\d+_block|aes|gcm|ghash|bn_|BN_|ecdsa|ec_GFp|cmov|poly1305|chacha/i,
  ],
  ['JavaScript (fulcrum and node:tls, net)', /JS:|\[JIT\]|Builtins_|LazyCompile/],
  ['V8 runtime and GC', /v8::|Scavenger|Heap|heap_|Isolate/],
  ['malloc and copies', /malloc|free|_int_|memmove|memset|memcpy|consolidate|unlink_chunk/],
  [
    'OpenSSL bookkeeping (state machine, lookups, BIO)',
    /ossl|OPENSSL|CRYPTO|EVP|SSL|ssl|tls|BIO|ERR|OBJ|X509|ASN1|strcmp|lh_|sa_get/,
  ],
  ['libuv and node', /uv_|node::|epoll/],
];

/** CPU seconds a process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Target {
  name: string;
  port: number;
  pid: number;
  /** Runs the handshake scenario only (it serves no /bulk). */
  handshakesOnly?: boolean;
}

/** perf's samples of `pid` for `seconds`, by symbol (percent of all). */
async function perfRecord(
  pid: number,
  seconds: number,
  file: string,
): Promise<Map<string, number>> {
  await new Promise<void>((resolve) => {
    const child = spawn(
      'perf',
      ['record', '-F', '999', '-p', String(pid), '-o', file, '--', 'sleep', String(seconds)],
      {
        stdio: 'ignore',
      },
    );
    child.once('exit', () => resolve());
  });
  const out = spawnSync(
    'perf',
    ['report', '-i', file, '--no-children', '--sort', 'sym', '--stdio'],
    {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    },
  ).stdout;
  const symbols = new Map<string, number>();
  for (const line of out.split('\n')) {
    const m = /^\s+([\d.]+)%\s+(.*)$/.exec(line);
    if (m !== null) symbols.set(m[2].trim(), Number(m[1]));
  }
  return symbols;
}

/** A perf breakdown: shares by group, then the top symbols. */
function breakdown(name: string, symbols: Map<string, number>): string {
  const groups = new Map<string, number>();
  for (const [symbol, share] of symbols) {
    const group = GROUPS.find(([, pattern]) => pattern.test(symbol))?.[0] ?? 'other';
    groups.set(group, (groups.get(group) ?? 0) + share);
  }
  const top = [...symbols]
    .slice(0, 10)
    .map(([s, p]) => `${p.toFixed(1)}%  ${s.replace(/^\[\.\] /, '')}`);
  return `${name}, where a handshake's CPU goes (perf):\n    ${[...groups]
    .sort((a, b) => b[1] - a[1])
    .map(([g, p]) => `${p.toFixed(1).padStart(5)}%  ${g}`)
    .join('\n    ')}\n  top symbols:\n    ${top.join('\n    ')}`;
}

async function haproxy(dir: string, backends: number[]): Promise<Target> {
  const port = await freePort();
  const pem = join(dir, 'haproxy-tls.pem');
  writeFileSync(pem, readFileSync(CERT, 'utf8') + readFileSync(KEY, 'utf8'));
  const child = await startHaproxy(dir, port, backends, pem);
  return { name: 'haproxy', port, pid: child.pid as number };
}

async function fulcrum(
  backends: number[],
  workers: number,
  profileDir: string | null,
): Promise<Target> {
  const port = await freePort();
  const args = [
    BIN,
    '--listen',
    `127.0.0.1:${port}`,
    '--log-level',
    'warn',
    '--workers',
    String(workers),
    '--tls-cert',
    CERT,
    '--tls-key',
    KEY,
  ];
  for (const b of backends) args.push('--backend', `127.0.0.1:${b}`);
  // JIT frames named in perf's report.
  const flags = profileDir === null ? [] : ['--perf-basic-prof'];
  const child = launch(process.execPath, [...flags, ...args]);
  await waitForPort(port);
  return { name: `fulcrum x${workers}`, port, pid: child.pid as number };
}

/** bench/tls-alone.ts: node:tls answering by itself, the ceiling of a node:tls terminator. */
async function alone(): Promise<Target> {
  const port = await freePort();
  const script = fileURLToPath(new URL('./tls-alone.ts', import.meta.url));
  const child = launch(process.execPath, [script, String(port), CERT, KEY]);
  await waitForPort(port);
  return { name: 'node:tls alone', port, pid: child.pid as number, handshakesOnly: true };
}

/** The handshake and bulk runs against each target; returns the summary rows. */
export async function terminationRows(
  dir: string,
  backends: number[],
  seconds: number,
  profileDir: string | null = null,
  runs = 1,
): Promise<string[]> {
  if (!has('wrk') || !has('haproxy')) {
    console.error('bench: TLS termination needs wrk and haproxy (apt-get install -y wrk haproxy)');
    return [];
  }
  // A profile is of the handshake run alone, one worker: what one full handshake costs.
  const targets = [await haproxy(dir, backends), await fulcrum(backends, 1, profileDir)];
  if (profileDir === null) targets.push(await fulcrum(backends, 2, null), await alone());
  for (const target of targets) await load(`https://localhost:${target.port}/small`, 10, 2, true);
  const scenarios = [
    { name: 'TLS termination, full handshake per request', path: '/small', close: true, c: 50 },
    { name: 'TLS termination, bulk 1 MiB responses', path: '/bulk', close: false, c: 8 },
  ].slice(0, profileDir === null ? 2 : 1);
  console.log('\nTLS termination (ECDSA P-256, TLS 1.3) vs HAProxy bind ssl crt, nbthread 1:');
  const rows: string[] = [];
  for (const scenario of scenarios) {
    const value = (r: Load) => (scenario.close ? r.requestsPerSec : r.bytesPerSec);
    // Runs interleave the targets; each figure is the run with the median value.
    const all = new Map<string, Array<{ load: Load; cpu: number }>>();
    const profiles: string[] = [];
    for (let run = 0; run < runs; run++) {
      for (const target of targets) {
        if (target.handshakesOnly === true && !scenario.close) continue;
        const before = cpuSeconds(target.pid);
        const url = `https://localhost:${target.port}${scenario.path}`;
        const recording =
          profileDir === null || run > 0
            ? null
            : perfRecord(
                target.pid,
                Math.max(1, seconds - 2),
                join(profileDir, `${target.port}.perf`),
              );
        const result = await load(url, scenario.c, seconds, scenario.close);
        const measured = { load: result, cpu: cpuSeconds(target.pid) - before };
        all.set(target.name, [...(all.get(target.name) ?? []), measured]);
        if (recording !== null) profiles.push(breakdown(target.name, await recording));
      }
    }
    for (const profile of profiles) console.log(`\n${profile}\n`);
    const results = new Map(
      [...all].map(([name, measured]) => {
        const sorted = [...measured].sort((a, b) => value(a.load) - value(b.load));
        return [name, sorted[Math.floor(sorted.length / 2)]] as const;
      }),
    );
    const reference = results.get('haproxy') as { load: Load; cpu: number };
    console.log(`${scenario.name} (${scenario.close ? 'handshakes/s' : 'throughput'}):`);
    for (const [name, r] of results) {
      const done = r.load.requestsPerSec * seconds;
      const perRequest = done > 0 ? (r.cpu / done) * 1e6 : 0;
      console.log(
        `  ${name.padEnd(14)} ${(value(r.load) / value(reference.load)).toFixed(2)}x   p99 ${r.load.p99Ms.toFixed(2)} ms   CPU ${perRequest.toFixed(0)} µs per ${scenario.close ? 'handshake' : 'response'}${r.load.errors ? `   errors ${r.load.errors}` : ''}`,
      );
    }
    const ratio = (name: string) => {
      const r = results.get(name);
      return r === undefined ? '-' : (value(r.load) / value(reference.load)).toFixed(2);
    };
    const ceiling = scenario.close
      ? `; node:tls alone (no backend) ${ratio('node:tls alone')}x`
      : '';
    rows.push(
      `${scenario.name}: fulcrum/haproxy ${ratio('fulcrum x1')}x (one worker), ${ratio('fulcrum x2')}x (two workers)${ceiling}`,
    );
  }
  return rows;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      runs: { type: 'string', default: '1' },
      profile: { type: 'boolean', default: false },
    },
  });
  const dir = workDir();
  const backends = [await freePort(), await freePort()];
  await startNginx(dir, backends, {
    small: Buffer.from('ok\n'.padEnd(100, '.')),
    bulk: randomBytes(1024 * 1024),
  });
  const profileDir = values.profile ? dir : null;
  const runs = Math.max(1, Number(values.runs));
  const rows = await terminationRows(dir, backends, Number(values.seconds), profileDir, runs);
  console.log(`\nsummary\n  ${rows.join('\n  ')}`);
  stopAll();
  process.exit(0);
}
