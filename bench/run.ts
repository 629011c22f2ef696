// End-to-end benchmark: the same two nginx backends reached directly, through HAProxy (nbthread 1,
// mode tcp, balance leastconn) and through fulcrum (--workers 1, least-conn), under the same load.
// Prints each figure as a ratio to HAProxy's: the machine is shared and noisy, absolute numbers
// are not comparable between runs. Usage: npm run bench [-- --seconds 8]

import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import type { Load } from './lib.ts';
import {
  freePort,
  has,
  load,
  median,
  startFulcrum,
  startFulcrumConfig,
  startHaproxy,
  startHaproxySni,
  startNginx,
  stopAll,
  workDir,
} from './lib.ts';
import { terminationRows } from './tls.ts';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    workers: { type: 'string', default: '1' },
    // Runs of each scenario, the targets interleaved (direct, haproxy, fulcrum, direct, ...):
    // each figure is the median, so one noisy moment of the machine moves no ratio.
    runs: { type: 'string', default: '1' },
  },
});
const seconds = Number(values.seconds);
const runs = Math.max(1, Number(values.runs));

/** The median of each figure over several runs. */
function medianLoad(all: Load[]): Load {
  return {
    requestsPerSec: median(all.map((r) => r.requestsPerSec)),
    bytesPerSec: median(all.map((r) => r.bytesPerSec)),
    p50Ms: median(all.map((r) => r.p50Ms)),
    p99Ms: median(all.map((r) => r.p99Ms)),
    errors: all.reduce((n, r) => n + r.errors, 0),
  };
}

if (!has('nginx')) {
  console.error('bench: nginx is needed for the backends: apt-get install -y nginx-light');
  process.exit(2);
}

const dir = workDir();
const backends = [await freePort(), await freePort()];
const tlsBackends = [await freePort(), await freePort()];
await startNginx(
  dir,
  backends,
  { small: Buffer.from('ok\n'.padEnd(100, '.')), bulk: randomBytes(1024 * 1024) },
  tlsBackends,
);

const targets: Array<{ name: string; port: number }> = [{ name: 'direct', port: backends[0] }];
if (has('haproxy')) {
  const port = await freePort();
  await startHaproxy(dir, port, backends);
  targets.push({ name: 'haproxy', port });
} else {
  console.error('bench: haproxy not installed (apt-get install -y haproxy): no comparison');
}
const fulcrumPort = await freePort();
await startFulcrum(fulcrumPort, backends, ['--workers', values.workers]);
targets.push({ name: `fulcrum`, port: fulcrumPort });

const scenarios = [
  { name: 'bulk 1 MiB responses', path: '/bulk', connections: 8, close: false, metric: 'bytes' },
  {
    name: 'small keep-alive requests, 4 connections',
    path: '/small',
    connections: 4,
    close: false,
    metric: 'rps',
  },
  {
    name: 'small keep-alive requests',
    path: '/small',
    connections: 50,
    close: false,
    metric: 'rps',
  },
  {
    name: 'new connection per request',
    path: '/small',
    connections: 50,
    close: true,
    metric: 'rps',
  },
] as const;

// Warm up every path (and fulcrum's JIT) before measuring.
for (const target of targets) {
  await load(`http://127.0.0.1:${target.port}/small`, 10, 2, false);
}

console.log(
  `load: ${has('wrk') ? 'wrk' : 'autocannon'}, ${seconds}s per run, ${runs} run(s) each (medians), fulcrum --workers ${values.workers}\n`,
);
const rows: string[] = [];
for (const scenario of scenarios) {
  const all = new Map<string, Load[]>(targets.map((t) => [t.name, []]));
  for (let run = 0; run < runs; run++) {
    for (const target of targets) {
      const url = `http://127.0.0.1:${target.port}${scenario.path}`;
      all.get(target.name)?.push(await load(url, scenario.connections, seconds, scenario.close));
    }
  }
  const results = new Map([...all].map(([name, loads]) => [name, medianLoad(loads)]));
  const value = (r: Load) => (scenario.metric === 'bytes' ? r.bytesPerSec : r.requestsPerSec);
  const reference = results.get('haproxy') ?? results.get('direct')!;
  const referenceName = results.has('haproxy') ? 'haproxy' : 'direct';
  console.log(
    `${scenario.name} (${scenario.metric === 'bytes' ? 'throughput' : 'requests/s'}, vs ${referenceName}):`,
  );
  for (const [name, r] of results) {
    const ratio = value(r) / value(reference);
    console.log(
      `  ${name.padEnd(8)} ${ratio.toFixed(2)}x   p50 ${r.p50Ms.toFixed(3)} ms (${(r.p50Ms / reference.p50Ms).toFixed(2)}x)   p99 ${r.p99Ms.toFixed(3)} ms (${(r.p99Ms / reference.p99Ms).toFixed(2)}x)${r.errors ? `   errors ${r.errors}` : ''}`,
    );
  }
  const f = results.get('fulcrum')!;
  // Latency as fulcrum's over the reference's: lower is better, 1.00x is even.
  const latency =
    scenario.metric === 'bytes'
      ? ''
      : `, p50 ${(f.p50Ms / reference.p50Ms).toFixed(2)}x, p99 ${(f.p99Ms / reference.p99Ms).toFixed(2)}x`;
  rows.push(
    `${scenario.name}: fulcrum/${referenceName} ${(value(f) / value(reference)).toFixed(2)}x${latency}`,
  );
}
rows.push(...(await serverNames()));
rows.push(...(await terminationRows(dir, backends, seconds, null, runs)));
console.log(`\nsummary\n  ${rows.join('\n  ')}`);
stopAll();
process.exit(0);

/**
 * What reading the ClientHello costs: TLS to nginx through a plain fulcrum frontend (bytes piped
 * from the first), through one listener shared by three frontends with serverNames (the hello
 * read, a name matched, the client handed to the frontend that is not the listener's door), and
 * through HAProxy doing the same with req.ssl_sni. wrk asks for `localhost` (its URL's host).
 */
async function serverNames(): Promise<string[]> {
  if (!has('wrk')) {
    console.error('bench: the TLS server-name runs need wrk (apt-get install -y wrk)');
    return [];
  }
  const plain = await freePort();
  await startFulcrum(plain, tlsBackends, ['--workers', values.workers]);
  const shared = await freePort();
  const tlsAddresses = tlsBackends.map((p) => `127.0.0.1:${p}`);
  await startFulcrumConfig(dir, shared, {
    workers: Number(values.workers),
    frontends: [
      { name: 'one', serverNames: ['one.example', '*.one.example'], backends: tlsAddresses },
      { name: 'two', serverNames: ['*.two.example'], backends: tlsAddresses },
      { name: 'local', serverNames: ['localhost'], backends: tlsAddresses },
    ].map((f) => ({ ...f, listen: [`127.0.0.1:${shared}`], health: false })),
  });
  const routes: Array<{ name: string; port: number }> = [
    { name: 'plain', port: plain },
    { name: 'by-name', port: shared },
  ];
  if (has('haproxy')) {
    const port = await freePort();
    await startHaproxySni(dir, port, tlsBackends);
    routes.push({ name: 'haproxy', port });
  }
  for (const route of routes) await load(`https://localhost:${route.port}/small`, 10, 2, true);
  const tlsScenarios = [
    { name: 'TLS, new connection per request', path: '/small', connections: 50, close: true },
    { name: 'TLS, bulk 1 MiB responses', path: '/bulk', connections: 8, close: false },
  ];
  const out: string[] = [];
  console.log(
    '\nTLS through a listener shared by three serverNames frontends (by-name) vs a plain frontend:',
  );
  for (const scenario of tlsScenarios) {
    const results = new Map<string, Load>();
    for (const route of routes) {
      const url = `https://localhost:${route.port}${scenario.path}`;
      results.set(route.name, await load(url, scenario.connections, seconds, scenario.close));
    }
    const value = (r: Load) => (scenario.close ? r.requestsPerSec : r.bytesPerSec);
    const byName = results.get('by-name') as Load;
    console.log(`${scenario.name} (${scenario.close ? 'requests/s' : 'throughput'}):`);
    for (const [name, r] of results) {
      console.log(
        `  ${name.padEnd(8)} ${(value(r) / value(results.get('plain') as Load)).toFixed(2)}x of plain   p99 ${r.p99Ms.toFixed(2)} ms${r.errors ? `   errors ${r.errors}` : ''}`,
      );
    }
    const haproxy = results.get('haproxy');
    out.push(
      `${scenario.name}: by-name/plain ${(value(byName) / value(results.get('plain') as Load)).toFixed(2)}x${haproxy === undefined ? '' : `, by-name/haproxy-sni ${(value(byName) / value(haproxy)).toFixed(2)}x`}`,
    );
  }
  return out;
}
