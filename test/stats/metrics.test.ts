// /metrics: Prometheus text format that a real parser reads, with per-frontend and per-backend
// series whose values agree with what was done, latency summaries from the HDR histograms, and
// series that follow a reload.

import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import parsePrometheusTextFormat, { type MetricFamily } from 'parse-prometheus-text-format';
import t from 'tap';
import { MAX_METRICS_CLIENTS } from '../../src/control/descriptors.ts';
import { query } from '../../src/stats/client.ts';
import { HEADERS_TIMEOUT_MS } from '../../src/stats/metrics.ts';
import {
  closedPort,
  connect,
  eventually,
  greet,
  heldConnections,
  readLine,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';

let lastText = '';

async function scrape(url: string): Promise<Map<string, MetricFamily>> {
  const response = await fetch(url);
  if (response.status !== 200) throw new Error(`${url}: ${response.status}`);
  t.match(response.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  lastText = await response.text();
  const families = parsePrometheusTextFormat(lastText);
  return new Map(families.map((f) => [f.name, f]));
}

function value(family: MetricFamily | undefined, labels: Record<string, string>): number {
  const sample = family?.metrics.find((m) =>
    Object.entries(labels).every(([k, v]) => m.labels?.[k] === v),
  );
  if (sample === undefined)
    throw new Error(`no ${family?.name} sample for ${JSON.stringify(labels)}`);
  return Number(sample.value ?? sample.count);
}

t.test('/metrics parses and carries per-backend series', async (t) => {
  const a = await startBackend(greet);
  const b = await startBackend(greet);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-metrics-'));
  const file = join(dir, 'm.yaml');
  const write = (extra: string) =>
    writeFileSync(
      file,
      `metrics: 127.0.0.1:0\nworkers: 2\nfrontends:\n  - name: web\n    listen: [127.0.0.1:0]\n    health: false\n    backends:\n      - { address: "${a.address}", name: a }\n      - { address: "${b.address}", name: b, weight: 2 }\n${extra}`,
    );
  write('');
  const fulcrum = await startFulcrum(['--config', file]);
  t.teardown(() => fulcrum.stop());
  const url = (await waitForLog(fulcrum, (l) => l.msg === 'metrics', 5000, 'the metrics url'))
    .url as string;

  // Six connections held together, so least-conn spreads them by weight (2 on a, 4 on b).
  const sockets = [];
  for (let i = 0; i < 6; i++) {
    const socket = await connect(fulcrum.port);
    await readLine(socket);
    sockets.push(socket);
  }
  for (const socket of sockets) {
    socket.end('bye');
    await new Promise((resolve) => socket.once('close', resolve));
  }
  const m = await scrape(url);
  t.equal(value(m.get('fulcrum_connections_total'), { frontend: 'web' }), 6);
  t.equal(m.get('fulcrum_connections_total')?.type, 'COUNTER');
  t.equal(value(m.get('fulcrum_connections_current'), { frontend: 'web' }), 0);
  const perBackend = ['a', 'b'].map((backend) =>
    value(m.get('fulcrum_backend_connections_total'), { pool: 'web', backend }),
  );
  t.equal(perBackend[0] + perBackend[1], 6, `six connections over a and b (${perBackend})`);
  t.ok(
    perBackend.every((n) => n > 0),
    'each backend has its own series',
  );
  t.equal(value(m.get('fulcrum_backend_weight'), { pool: 'web', backend: 'b' }), 2);
  t.equal(value(m.get('fulcrum_backend_up'), { pool: 'web', backend: 'a' }), 1);
  t.equal(value(m.get('fulcrum_backend_state'), { backend: 'a', state: 'up' }), 1);
  t.equal(value(m.get('fulcrum_backend_state'), { backend: 'a', state: 'down' }), 0);
  t.ok(
    value(m.get('fulcrum_backend_bytes_total'), { backend: 'a', direction: 'from_backend' }) > 0,
  );
  t.ok(value(m.get('fulcrum_backend_bytes_total'), { backend: 'a', direction: 'to_backend' }) > 0);
  t.equal(
    value(m.get('fulcrum_connections_ended_total'), { frontend: 'web', end: 'client-closed' }),
    6,
  );
  t.equal(value(m.get('fulcrum_backend_health_transitions_total'), { backend: 'a' }), 0);
  t.same(
    m.get('fulcrum_connections_refused_total')?.metrics.map((x) => x.labels?.reason),
    ['limit', 'no-backend', 'denied', 'source-limit', 'untrusted-proxy', 'no-frontend'],
    'every kind of refusal has its series',
  );
  t.equal(m.get('fulcrum_backend_connect_seconds')?.type, 'SUMMARY');
  // The parser folds a labelled summary into one sample (it was written for unlabelled ones), so
  // the per-backend summary lines are read here as text, after the parser accepted the whole.
  const text = lastText;
  const count = /^fulcrum_backend_connect_seconds_count\{frontend="web",backend="a"\} (\d+)$/m.exec(
    text,
  );
  t.equal(Number(count?.[1]), perBackend[0], 'the summary counts every connect to a');
  const p99 =
    /^fulcrum_backend_connect_seconds\{frontend="web",backend="a",quantile="0.99"\} (\S+)$/m.exec(
      text,
    );
  t.ok(Number(p99?.[1]) > 0 && Number(p99?.[1]) < 1, `p99 connect time in seconds (${p99?.[1]})`);

  // A reload that adds a backend adds its series; one that removes a backend removes them.
  const c = await closedPort();
  write(`      - { address: "127.0.0.1:${c}", name: c }\n`);
  fulcrum.proc.kill('SIGHUP');
  await waitForLog(fulcrum, (l) => l.msg === 'reloaded', 10_000, 'the reload');
  const after = await scrape(url);
  t.equal(value(after.get('fulcrum_backend_weight'), { pool: 'web', backend: 'c' }), 1);

  const missing = await fetch(url.replace('/metrics', '/other'));
  t.equal(missing.status, 404);
});

t.test('--metrics on a taken port is exit 2 with one line', async (t) => {
  const taken = await startBackend(greet);
  t.teardown(() => taken.close());
  await t.rejects(
    startFulcrum(['--backend', taken.address, '--metrics', taken.address]),
    new RegExp(`--metrics ${taken.address}: address in use by another process`),
  );
});

t.test('regression: fulcrum_backend_up is 0 for a backend that is disabled and down', async (t) => {
  const a = await startBackend(greet);
  t.teardown(() => a.close());
  const dead = await closedPort();
  const path = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--metrics',
    '127.0.0.1:0',
    '--stats-socket',
    path,
    '--health-interval',
    '100ms',
    '--fall',
    '1',
    '--backend',
    a.address,
    '--backend',
    `127.0.0.1:${dead},name=dead`,
  ]);
  t.teardown(() => fulcrum.stop());
  const url = (await waitForLog(fulcrum, (l) => l.msg === 'metrics', 5000, 'the metrics url'))
    .url as string;
  await eventually(
    async () => (await showStat(path))[0].backends[1].state === 'down',
    5000,
    'the dead backend to be down',
  );
  t.equal(await query(path, 'disable default/dead'), 'default/dead disabled');
  const m = await scrape(url);
  t.equal(
    value(m.get('fulcrum_backend_up'), { backend: 'dead' }),
    0,
    'down, whatever its admin state',
  );
  t.equal(value(m.get('fulcrum_backend_state'), { backend: 'dead', state: 'disabled' }), 1);
  t.equal(value(m.get('fulcrum_backend_up'), { backend: a.address }), 1);
  t.equal(await query(path, `disable default/${a.address}`), `default/${a.address} disabled`);
  t.equal(
    value((await scrape(url)).get('fulcrum_backend_up'), { backend: a.address }),
    1,
    'disabled but healthy: still up',
  );
});

t.test(
  'idle connections to the metrics port cannot take the descriptors of the data plane',
  async (t) => {
    const a = await startBackend(greet);
    t.teardown(() => a.close());
    const path = socketPath();
    // 256 descriptors, as in the report: 300 idle metrics clients used to take every one.
    const fulcrum = await startFulcrum(
      [
        '--workers',
        '1',
        '--metrics',
        '127.0.0.1:0',
        '--stats-socket',
        path,
        '--health-interval',
        '100ms',
        '--backend',
        a.address,
      ],
      {},
      256,
    );
    t.teardown(() => fulcrum.stop());
    const url = (await waitForLog(fulcrum, (l) => l.msg === 'metrics', 5000, 'the metrics url'))
      .url as string;
    const { port } = new URL(url);
    const idle: net.Socket[] = [];
    for (let i = 0; i < 300; i++) {
      const socket = net.connect({ port: Number(port), host: '127.0.0.1' });
      socket.on('error', () => {});
      idle.push(socket);
      await once(socket, 'connect');
    }
    t.teardown(() => {
      for (const socket of idle) socket.destroy();
    });
    await eventually(
      async () => heldConnections(fulcrum.proc.pid as number) <= MAX_METRICS_CLIENTS,
      5000,
      'fulcrum to hold no more than the cap',
    );
    const m = await scrape(url);
    t.equal(value(m.get('fulcrum_backend_up'), { backend: a.address }), 1, 'a scrape gets in');
    const clients = await Promise.all(Array.from({ length: 50 }, () => connect(fulcrum.port)));
    const lines = await Promise.all(clients.map((c) => readLine(c)));
    t.ok(
      lines.every((l) => l === String(a.port)),
      '50 data-plane clients are served',
    );
    for (const c of clients) c.destroy();
    t.match(await query(path, 'show info'), /^version: /, 'the stats socket answers');
    t.equal((await showStat(path))[0].backends[0].state, 'up', 'the backend stays up');
    // The idle ones are closed once they have said nothing for the headers timeout.
    await eventually(
      async () => heldConnections(fulcrum.proc.pid as number) === 0,
      HEADERS_TIMEOUT_MS + 5000,
      'the silent clients to be closed',
    );
  },
);
