// TLS termination, side by side: HAProxy (`bind ... ssl crt`, nbthread 1) and fulcrum (--tls-cert,
// --workers 1, then 2) terminating the same ECDSA P-256 certificate in front of the same plain
// nginx backends. Full TLS 1.3 handshakes per second (a new connection per request; neither
// resumes: wrk keeps no session), and bulk 1 MiB responses over kept-alive TLS connections.
// Ratios to HAProxy's, and the CPU each spends per handshake (from /proc). With --profile, a CPU
// profile of fulcrum's worker during the handshake run: where the time goes, by function.
// Run alone: npm run bench:tls [-- --seconds 8 --profile]; `npm run bench` runs it too.

import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
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
  startNginx,
  stopAll,
  waitForPort,
  workDir,
} from './lib.ts';

/** The fulcrum run under --cpu-prof, stopped politely at the end so it writes its profiles. */
let profiled: ChildProcess | null = null;

/** CPU seconds a process has used (user + system), from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

interface Target {
  name: string;
  port: number;
  pid: number;
}

async function haproxy(dir: string, backends: number[]): Promise<Target> {
  const port = await freePort();
  const pem = join(dir, 'haproxy-tls.pem');
  writeFileSync(pem, readFileSync(CERT, 'utf8') + readFileSync(KEY, 'utf8'));
  const conf = join(dir, 'haproxy-tls.cfg');
  writeFileSync(
    conf,
    `global
  nbthread 1
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode tcp
  timeout connect 3s
  timeout client 5m
  timeout server 5m
frontend fe
  bind 127.0.0.1:${port} ssl crt ${pem}
  default_backend be
backend be
  balance leastconn
${backends.map((p, i) => `  server s${i} 127.0.0.1:${p}`).join('\n')}
`,
  );
  const child = launch('haproxy', ['-f', conf, '-db']);
  await waitForPort(port);
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
  const flags = profileDir === null ? [] : ['--cpu-prof', `--cpu-prof-dir=${profileDir}`];
  const child = launch(process.execPath, [...flags, ...args]);
  if (profileDir !== null) profiled = child;
  await waitForPort(port);
  return { name: `fulcrum x${workers}`, port, pid: child.pid as number };
}

/** The handshake and bulk runs against each target; returns the summary rows. */
export async function terminationRows(
  dir: string,
  backends: number[],
  seconds: number,
  profileDir: string | null = null,
): Promise<string[]> {
  if (!has('wrk') || !has('haproxy')) {
    console.error('bench: TLS termination needs wrk and haproxy (apt-get install -y wrk haproxy)');
    return [];
  }
  const targets = [
    await haproxy(dir, backends),
    await fulcrum(backends, 1, profileDir),
    await fulcrum(backends, 2, null),
  ];
  for (const target of targets) await load(`https://localhost:${target.port}/small`, 10, 2, true);
  const scenarios = [
    { name: 'TLS termination, full handshake per request', path: '/small', close: true, c: 50 },
    { name: 'TLS termination, bulk 1 MiB responses', path: '/bulk', close: false, c: 8 },
  ];
  console.log('\nTLS termination (ECDSA P-256, TLS 1.3) vs HAProxy bind ssl crt, nbthread 1:');
  const rows: string[] = [];
  for (const scenario of scenarios) {
    const results = new Map<string, { load: Load; cpu: number }>();
    for (const target of targets) {
      const before = cpuSeconds(target.pid);
      const url = `https://localhost:${target.port}${scenario.path}`;
      const result = await load(url, scenario.c, seconds, scenario.close);
      results.set(target.name, { load: result, cpu: cpuSeconds(target.pid) - before });
    }
    const value = (r: Load) => (scenario.close ? r.requestsPerSec : r.bytesPerSec);
    const reference = results.get('haproxy') as { load: Load; cpu: number };
    console.log(`${scenario.name} (${scenario.close ? 'handshakes/s' : 'throughput'}):`);
    for (const [name, r] of results) {
      const done = r.load.requestsPerSec * seconds;
      const perRequest = done > 0 ? (r.cpu / done) * 1e6 : 0;
      console.log(
        `  ${name.padEnd(11)} ${(value(r.load) / value(reference.load)).toFixed(2)}x   p99 ${r.load.p99Ms.toFixed(2)} ms   CPU ${perRequest.toFixed(0)} µs per ${scenario.close ? 'handshake' : 'response'}${r.load.errors ? `   errors ${r.load.errors}` : ''}`,
      );
    }
    const ratio = (name: string) =>
      (value((results.get(name) as { load: Load }).load) / value(reference.load)).toFixed(2);
    rows.push(
      `${scenario.name}: fulcrum/haproxy ${ratio('fulcrum x1')}x (one worker), ${ratio('fulcrum x2')}x (two workers)`,
    );
  }
  return rows;
}

/** The profile's self time by function, the top `n`, as percent of all samples. */
function topFunctions(file: string, n: number): string[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as {
    nodes: Array<{ id: number; callFrame: { functionName: string; url: string } }>;
    samples: number[];
  };
  const byId = new Map(profile.nodes.map((node) => [node.id, node.callFrame]));
  const counts = new Map<string, number>();
  for (const id of profile.samples) {
    const frame = byId.get(id);
    const where = frame?.url.split('/').slice(-2).join('/') ?? '';
    const key = `${frame?.functionName || '(anonymous)'} ${where}`.trim();
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .slice(0, n)
    .map(([name, count]) => `${((count / profile.samples.length) * 100).toFixed(1)}%  ${name}`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      seconds: { type: 'string', default: '8' },
      profile: { type: 'boolean', default: false },
    },
  });
  const dir = workDir();
  const backends = [await freePort(), await freePort()];
  await startNginx(dir, backends, {
    small: Buffer.from('ok\n'.padEnd(100, '.')),
    bulk: Buffer.alloc(1024 * 1024, 'x'),
  });
  const profileDir = values.profile ? join(dir, 'profile') : null;
  const rows = await terminationRows(dir, backends, Number(values.seconds), profileDir);
  console.log(`\nsummary\n  ${rows.join('\n  ')}`);
  // Assigned while the runs started it (TypeScript cannot see that).
  const child = profiled as ChildProcess | null;
  if (child !== null) {
    // Node writes each thread's profile as it exits: a drain and a clean exit, not a kill.
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
  stopAll();
  if (profileDir !== null) {
    const files = readdirSync(profileDir).map((f) => join(profileDir, f));
    const largest = files
      .map((f) => ({ f, size: readFileSync(f).length }))
      .sort((a, b) => b.size - a.size);
    for (const { f } of largest.slice(0, 2)) {
      console.log(`\nprofile ${f} (self time, top 12):\n  ${topFunctions(f, 12).join('\n  ')}`);
    }
  }
  process.exit(0);
}
