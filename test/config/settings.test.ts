// The settings table is the one definition of every setting: each flag goes through the real
// commander and lands where the table says, alone and next to --config (process-wide ones
// override the file, frontend ones are refused); each file key lands at the same place; the
// README's table is the generated one.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { loadConfigFile } from '../../src/config/file.ts';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { SETTINGS } from '../../src/config/settings.ts';
import { README, withTable } from '../fixtures/readme-settings.ts';
import { TestCa } from '../tls.ts';

// The TLS settings name files that are read when the config loads: real ones.
const ca = new TestCa();
t.teardown(() => ca.cleanup());
const served = ca.issue('a.test', { names: ['a.test'] });
const crl = ca.revoke(ca.issue('revoked', { client: true }));
const ticketKeys = join(ca.dir, 'ticket.keys');
writeFileSync(ticketKeys, `${'k'.repeat(64)}\n`);
const TLS = ['--tls-cert', served.cert, '--tls-key', served.key];

/** For every setting: a value that is not its default, and what it becomes in the Config (at
 *  `path` when that is not its target; from `file` when a file writes it otherwise). */
const SAMPLES: Record<
  string,
  { text: string | boolean; value: unknown; path?: string; file?: unknown }
> = {
  tlsCertificates: {
    text: served.cert,
    value: [{ certFile: served.cert, keyFile: served.key, serverNames: ['a.test'] }],
    file: { cert: served.cert, key: served.key },
  },
  tlsKeys: { text: served.key, value: served.key, path: 'tls.certificates.0.keyFile' },
  tlsCa: { text: ca.cert, value: ca.cert },
  tlsCrl: { text: crl, value: crl },
  tlsVerify: { text: 'optional', value: 'optional' },
  tlsAlpn: { text: 'h2', value: ['h2'] },
  tlsStrictSni: { text: true, value: true },
  tlsMinVersion: { text: 'TLSv1.3', value: 'TLSv1.3' },
  tlsHandshakeTimeout: { text: '4s', value: 4000 },
  tlsTicketKeys: { text: ticketKeys, value: ticketKeys },
  backendTls: { text: true, value: true },
  backendTlsVerify: { text: 'none', value: 'none' },
  backendTlsCa: { text: ca.cert, value: ca.cert },
  backendTlsSni: { text: 'client', value: 'client' },
  backendTlsCert: { text: served.cert, value: served.cert },
  backendTlsKey: { text: served.key, value: served.key },
  name: { text: 'web', value: 'web' },
  pool: { text: 'replicas', value: 'replicas' },
  priority: { text: '-5', value: -5 },
  readyMinUp: { text: '2', value: 2 },
  grace: { text: '3s', value: 3000 },
  share: { text: '30', value: 30 },
  listen: {
    text: '127.0.0.1:7001,accept-proxy',
    value: [
      { text: '127.0.0.1:7001', host: '127.0.0.1', port: 7001, acceptProxy: true, udp: false },
    ],
  },
  udpIdleTimeout: { text: '45s', value: 45_000 },
  udpResponses: { text: '1', value: 1 },
  udpRequests: { text: '3', value: 3 },
  udpMaxSessions: { text: '5000', value: 5000 },
  udpMaxDatagram: { text: '1500', value: 1500 },
  serverNames: { text: '*.Example.com', value: ['*.example.com'] },
  sources: { text: '10.8.0.0/16', value: ['10.8.0.0/16'] },
  backends: { text: '127.0.0.1:9001,weight=3', value: [{ name: '127.0.0.1:9001', weight: 3 }] },
  algorithm: { text: 'maglev', value: 'maglev' },
  hashKey: { text: 'source-ip-port', value: 'source-ip-port' },
  hashBalanceFactor: { text: '125', value: 125 },
  sendProxy: { text: 'v2', value: 2 },
  proxyTimeout: { text: '2s', value: 2000 },
  inspectTimeout: { text: '3s', value: 3000 },
  connectTimeout: { text: '750ms', value: 750 },
  idleTimeout: { text: '1m', value: 60_000 },
  queueTimeout: { text: '9s', value: 9000 },
  retries: { text: '5', value: 5 },
  allow: { text: '127.0.0.0/8', value: ['127.0.0.0/8'] },
  deny: { text: '10.0.0.0/8', value: ['10.0.0.0/8'] },
  acceptProxyFrom: { text: '127.0.0.0/8', value: ['127.0.0.0/8'] },
  maxConnsPerSource: { text: '12', value: 12 },
  connRatePerSource: { text: '30/s', value: 30 },
  healthCheck: { text: false, value: false },
  healthInterval: { text: '700ms', value: 700 },
  healthTimeout: { text: '300ms', value: 300 },
  rise: { text: '4', value: 4 },
  fall: { text: '6', value: 6 },
  healthHttp: { text: '/ready', value: '/ready' },
  healthHost: { text: 'api.internal', value: 'api.internal' },
  healthExpectStatus: {
    text: '200,204-206',
    value: [
      [200, 200],
      [204, 206],
    ],
  },
  healthSend: { text: 'PING\\r\\n', value: 'PING\r\n' },
  healthExpect: { text: '+PONG', value: '+PONG' },
  healthGrpc: { text: 'my.pkg.Service', value: 'my.pkg.Service' },
  healthPort: { text: '8081', value: 8081 },
  agentPort: { text: '9777', value: 9777 },
  agentInterval: { text: '3s', value: 3000 },
  agentSend: { text: 'hello\\n', value: 'hello\n' },
  loadMetric: {
    text: 'vllm:num_requests_waiting{model_name="m"}',
    value: { name: 'vllm:num_requests_waiting', labels: [['model_name', 'm']] },
  },
  loadMetricsPath: { text: '/stats/prometheus', value: '/stats/prometheus' },
  loadMetricsPort: { text: '9400', value: 9400 },
  loadInterval: { text: '2s', value: 2000 },
  loadTimeout: { text: '3s', value: 3000 },
  workers: { text: '3', value: 3 },
  maxConnections: { text: '1000', value: 1000 },
  drainTimeout: { text: '12s', value: 12_000 },
  backlog: { text: '128', value: 128 },
  accessLog: { text: true, value: true },
  logFormat: { text: 'pretty', value: 'pretty' },
  logLevel: { text: 'warn', value: 'warn' },
  statsSocket: { text: '/tmp/fulcrum-settings.sock', value: '/tmp/fulcrum-settings.sock' },
  statsSocketMode: { text: '0660', value: 0o660 },
  statsLevel: { text: 'read', value: 'read' },
  metrics: { text: '127.0.0.1:9100', value: { host: '127.0.0.1', port: 9100 } },
  resolvers: { text: '127.0.0.1:53', value: ['127.0.0.1:53'] },
  resolveInterval: { text: '10s', value: 10_000 },
  stateFile: { text: '/tmp/fulcrum-settings.json', value: '/tmp/fulcrum-settings.json' },
};

/** What a setting needs beside it to mean anything (`--health-host` is for `--health-http`). */
const COMPANIONS: Record<string, string[]> = {
  tlsCertificates: ['--tls-key', served.key],
  tlsKeys: ['--tls-cert', served.cert],
  tlsCa: TLS,
  tlsCrl: [...TLS, '--tls-ca', ca.cert, '--tls-verify', 'optional'],
  tlsVerify: [...TLS, '--tls-ca', ca.cert],
  tlsAlpn: TLS,
  tlsStrictSni: TLS,
  tlsMinVersion: TLS,
  tlsHandshakeTimeout: TLS,
  tlsTicketKeys: TLS,
  backendTlsCert: ['--backend-tls-key', served.key],
  backendTlsKey: ['--backend-tls-cert', served.cert],
  healthHost: ['--health-http', '/ready'],
  healthExpectStatus: ['--health-http', '/ready'],
  healthSend: ['--health-expect', '+PONG'],
  agentInterval: ['--agent-port', '9777'],
  agentSend: ['--agent-port', '9777'],
  loadMetricsPath: ['--load-metric', 'queue'],
  loadMetricsPort: ['--load-metric', 'queue'],
  loadInterval: ['--load-metric', 'queue'],
  loadTimeout: ['--load-metric', 'queue'],
};

/** One frontend has one kind of probe: the file test writes every key but these, then each
 *  group of these in turn. */
const PROBE_KINDS = [
  ['healthHttp', 'healthHost', 'healthExpectStatus'],
  ['healthGrpc'],
  ['healthSend', 'healthExpect'],
];

function at(object: unknown, path: string): unknown {
  let value = object;
  for (const key of path.split('.')) value = (value as Record<string, unknown>)[key];
  return value;
}

/** Where a setting's sample is read back in the Config. */
function targetOf(setting: (typeof SETTINGS)[number]): string {
  return SAMPLES[setting.key].path ?? setting.target;
}

function argv(key: string): string[] {
  const setting = SETTINGS.find((s) => s.key === key);
  const sample = SAMPLES[key];
  if (setting?.flag == null) return [];
  return typeof sample.text === 'boolean' ? [setting.flag] : [setting.flag, sample.text];
}

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-settings-'));
const FILE = join(dir, 'base.yaml');
writeFileSync(
  FILE,
  'workers: 1\nlog: { level: error }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n',
);
const MINIMAL = ['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1'];
/** Settings for UDP frontends only (a TCP frontend refuses them): tried on a UDP listener. */
const UDP_KEYS = new Set(SETTINGS.filter((s) => s.key.startsWith('udp')).map((s) => s.key));
const MINIMAL_UDP = ['--listen', '127.0.0.1:0,udp', '--backend', '127.0.0.1:1'];

t.test('every setting has a sample here: a new one must show where it lands', async (t) => {
  t.same(SETTINGS.map((s) => s.key).sort(), Object.keys(SAMPLES).sort());
});

for (const setting of SETTINGS) {
  if (setting.flag === null) continue;
  t.test(`${setting.flag} through commander lands at ${setting.target}`, async (t) => {
    const args = argv(setting.key);
    // The sample replaces the minimal value of the same flag.
    const base =
      setting.key === 'listen'
        ? ['--backend', '127.0.0.1:1']
        : setting.key === 'backends'
          ? ['--listen', '127.0.0.1:0']
          : UDP_KEYS.has(setting.key)
            ? MINIMAL_UDP
            : MINIMAL;
    const config = await loaderFromArgs([...base, ...(COMPANIONS[setting.key] ?? []), ...args])();
    const scope = setting.scope === 'process' ? config : config.frontends[0];
    t.match(at(scope, targetOf(setting)), SAMPLES[setting.key].value);

    if (setting.scope === 'process') {
      const file = await loaderFromArgs(['--config', FILE, ...args])();
      t.match(at(file, targetOf(setting)), SAMPLES[setting.key].value, 'next to --config: it wins');
    } else {
      t.throws(() => loaderFromArgs(['--config', FILE, ...args]), {
        message: `${setting.flag}: cannot be used with --config (set it in the file, per frontend)`,
      });
    }
  });
}

for (const kind of PROBE_KINDS) {
  const others = PROBE_KINDS.flat().filter((key) => !kind.includes(key));
  const settings = SETTINGS.filter((s) => !others.includes(s.key) && !UDP_KEYS.has(s.key));
  t.test(`every file key lands where its flag does (probe: ${kind[0]})`, async (t) => {
    // A pool's keys in the frontend (its own pool), then in a pool of pools: it names.
    await everyFileKey(t, settings, kind[0], false);
    await everyFileKey(t, settings, kind[0], true);
  });
}

async function everyFileKey(t: Test, all: typeof SETTINGS, variant: string, named: boolean) {
  const settings = named ? all : all.filter((s) => s.key !== 'pool');
  const top: Record<string, unknown> = {};
  const frontend: Record<string, unknown> = {};
  const pool: Record<string, unknown> = { name: SAMPLES.pool.text };
  for (const setting of settings) {
    // A flag whose file form is inside another key's items (--tls-key: a certificate's key).
    if (setting.file.includes('[]')) continue;
    const sample = SAMPLES[setting.key].file ?? SAMPLES[setting.key].text;
    const [first, second] = setting.file.split('.');
    const into =
      setting.scope === 'process' ? top : setting.scope === 'pool' && named ? pool : frontend;
    const value = setting.kind === 'list' ? [sample] : sample;
    if (second === undefined) into[first] = value;
    else into[first] = { ...(into[first] as object), [second]: value };
  }
  const path = join(dir, `every-${variant}-${named ? 'pool' : 'own'}.json`);
  const pools = named ? { pools: [pool] } : {};
  writeFileSync(path, JSON.stringify({ ...top, ...pools, frontends: [frontend] }));
  const config = await loadConfigFile(path);
  for (const setting of settings) {
    const scope = setting.scope === 'process' ? config : config.frontends[0];
    t.match(at(scope, targetOf(setting)), SAMPLES[setting.key].value, setting.file);
  }
}

t.test('every UDP file key lands where its flag does (udp: in a UDP frontend)', async (t) => {
  const udp: Record<string, unknown> = {};
  for (const setting of SETTINGS.filter((s) => UDP_KEYS.has(s.key))) {
    udp[setting.file.split('.')[1]] = SAMPLES[setting.key].text;
  }
  const path = join(dir, 'every-udp.json');
  writeFileSync(
    path,
    JSON.stringify({
      frontends: [{ name: 'dns', listen: ['127.0.0.1:0,udp'], udp, backends: ['127.0.0.1:1'] }],
    }),
  );
  const config = await loadConfigFile(path);
  for (const setting of SETTINGS.filter((s) => UDP_KEYS.has(s.key))) {
    t.match(at(config.frontends[0], setting.target), SAMPLES[setting.key].value, setting.file);
  }
});

t.test('the README table is the one the settings table makes (npm run docs)', async (t) => {
  const readme = readFileSync(README, 'utf8');
  t.equal(readme, withTable(readme));
});
