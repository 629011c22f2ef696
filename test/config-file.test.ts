// The config file: every key reaches the Config, and every mistake names the file, the key path
// and what was expected. Also: top-level flags override the file; frontend flags are refused.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { OPTIONS } from '../src/config/backend.ts';
import { loadConfigFile } from '../src/config/file.ts';
import { loaderFromArgs } from '../src/config/flags.ts';
import { ConfigError } from '../src/config/parse.ts';
import { settingsOf } from '../src/config/settings.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-config-'));
let files = 0;

function file(text: string, ext = 'yaml'): string {
  const path = join(dir, `c${files++}.${ext}`);
  writeFileSync(path, text);
  return path;
}

async function failure(path: string): Promise<string> {
  try {
    await loadConfigFile(path);
  } catch (err) {
    if (err instanceof ConfigError) return err.message;
    throw err;
  }
  throw new Error(`${path} was accepted`);
}

const FULL = `
workers: 3
maxConnections: 1000
drainTimeout: 10s
backlog: 128
statsSocket: { path: /tmp/x.sock, mode: "0660", level: read }
metrics: 127.0.0.1:9100
log: { level: warn, format: pretty, access: true }
frontends:
  - name: interactive
    listen: [127.0.0.1:7001, "[::1]:7001"]
    algorithm: least-conn
    connectTimeout: 500ms
    idleTimeout: 1m
    retries: 1
    health: { enabled: true, interval: 1s, timeout: 300, rise: 1, fall: 2 }
    backends:
      - { address: 10.0.0.1:5432, name: primary, weight: 3 }
      - 10.0.0.2:5432,weight=2,backup
  - name: batch
    listen: 127.0.0.1:7002
    health: false
    backends: [{ address: 10.0.0.3:5432 }]
`;

t.test('every key of a full file reaches the config', async (t) => {
  const config = await loadConfigFile(file(FULL));
  t.equal(config.workers, 3);
  t.equal(config.maxConnections, 1000);
  t.equal(config.drainTimeoutMs, 10_000);
  t.equal(config.backlog, 128);
  t.same(config.stats, { socket: '/tmp/x.sock', mode: 0o660, level: 'read' });
  t.equal(config.metrics?.port, 9100);
  t.same([config.logLevel, config.logFormat, config.accessLog], ['warn', 'pretty', true]);
  const [a, b] = config.frontends;
  t.same(
    a.listen.map((l) => l.text),
    ['127.0.0.1:7001', '[::1]:7001'],
  );
  t.same([a.connectTimeoutMs, a.idleTimeoutMs, a.retries], [500, 60_000, 1]);
  t.match(a.health, { enabled: true, intervalMs: 1000, timeoutMs: 300, rise: 1, fall: 2 });
  t.same(
    a.backends.map((x) => [x.name, x.host, x.weight, x.backup]),
    [
      ['primary', '10.0.0.1', 3, false],
      ['10.0.0.2:5432', '10.0.0.2', 2, true],
    ],
  );
  t.equal(b.name, 'batch');
  t.equal(b.algorithm, 'least-conn', 'the default algorithm');
  t.equal(b.health.enabled, false, '`health: false` turns probes off');
  t.same(
    b.listen.map((l) => l.port),
    [7002],
    'a single listen address may be a plain string',
  );
});

t.test(
  'the examples/ config is valid, covers every key, and is the README reference',
  async (t) => {
    const path = new URL('../examples/fulcrum.yaml', import.meta.url).pathname;
    const config = await loadConfigFile(path);
    t.ok(config.frontends.length >= 2, 'at least two frontends');
    t.ok(config.metrics !== null && config.stats.socket !== null);
    const text = readFileSync(path, 'utf8');
    const seen = new Set<string>();
    const walk = (value: unknown, at: string) => {
      if (Array.isArray(value)) for (const item of value) walk(item, `${at}[]`);
      else if (value !== null && typeof value === 'object') {
        for (const [key, inner] of Object.entries(value)) {
          seen.add(`${at}${at === '' ? '' : '.'}${key}`.replace(/^\./, ''));
          walk(inner, `${at}${at === '' ? '' : '.'}${key}`);
        }
      }
    };
    walk(parse(text), '');
    // Every key the settings table and the backend options give a file, derived, not listed.
    const every = [
      ...settingsOf('process').map((s) => s.file),
      ...settingsOf('frontend').map((s) => `frontends[].${s.file}`),
      ...settingsOf('pool').map((s) => `frontends[].${s.file}`),
      'pools[].name',
      'frontends[].backends[].address',
      ...OPTIONS.map((o) => `frontends[].backends[].${o.fileKey}`),
    ];
    t.same(
      // A pool's key may be shown in a pool of pools: as well as in a frontend.
      every.filter((key) => !seen.has(key) && !seen.has(key.replace(/^frontends/, 'pools'))),
      [],
      'every key appears in the example',
    );
    const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
    t.ok(readme.includes(`\`\`\`yaml\n${text}\`\`\``), 'the README shows the example as it is');
  },
);

t.test("a frontend with pool: NAME gets that pool's backends and settings", async (t) => {
  const config = await loadConfigFile(
    file(
      [
        'pools:',
        '  - name: replicas',
        '    algorithm: maglev',
        '    hashBalanceFactor: 125',
        '    health: { interval: 3s, http: /health }',
        '    retries: 1',
        '    backends: [127.0.0.1:7001, { address: 127.0.0.1:7002, maxconn: 10 }]',
        '  - { name: spare, backends: [127.0.0.1:7003] }',
        'frontends:',
        '  - { name: chat, listen: 127.0.0.1:0, pool: replicas, queueTimeout: 2s }',
        '  - { name: own, listen: 127.0.0.1:0, backends: [127.0.0.1:7004] }',
        '',
      ].join('\n'),
    ),
  );
  const [chat, own] = config.frontends;
  t.equal(chat.pool, 'replicas');
  t.same(
    chat.backends.map((b) => [b.text, b.maxconn]),
    [
      ['127.0.0.1:7001', 0],
      ['127.0.0.1:7002', 10],
    ],
  );
  t.match(chat, {
    algorithm: 'maglev',
    hashBalanceFactor: 125,
    retries: 1,
    queueTimeoutMs: 2000,
    health: { intervalMs: 3000, http: '/health' },
  });
  t.equal(own.pool, 'own', 'a frontend that lists its backends has a pool of its own, its name');
  t.equal(own.algorithm, 'least-conn');
  t.equal(config.warnings.length, 1, 'one warning: the pool nobody uses');
  t.match(config.warnings[0], /: pools\[1\]\.name: pool spare is used by no frontend$/);
});

t.test(
  'frontends share a pool, each with its class; a share without maxconn is warned of',
  async (t) => {
    const config = await loadConfigFile(
      file(
        [
          'pools:',
          '  - { name: replicas, backends: ["127.0.0.1:7001,maxconn=10", "127.0.0.1:7002,maxconn=10"] }',
          '  - { name: open, backends: [127.0.0.1:7003] }',
          'frontends:',
          '  - { name: chat, listen: 127.0.0.1:0, pool: replicas }',
          '  - { name: batch, listen: 127.0.0.1:0, pool: replicas, priority: 10, share: 30, queueTimeout: 10m }',
          '  - { name: other, listen: 127.0.0.1:0, pool: open, share: 50 }',
          '',
        ].join('\n'),
      ),
    );
    const [chat, batch] = config.frontends;
    t.same(
      config.frontends.map((f) => [f.name, f.pool, f.priority, f.share]),
      [
        ['chat', 'replicas', 0, 100],
        ['batch', 'replicas', 10, 30],
        ['other', 'open', 0, 50],
      ],
    );
    t.same(batch.backends, chat.backends, 'one pool: the same backends');
    t.equal(batch.queueTimeoutMs, 600_000, 'a queue timeout of its own');
    t.equal(config.warnings.length, 1);
    t.match(
      config.warnings[0],
      /: frontends\[2\]\.share: share 50 means nothing here: no backend of pool open has a maxconn to take a share of$/,
    );
  },
);

t.test('frontends on one address told apart by sources, alone or on one server name', async (t) => {
  const config = await loadConfigFile(
    file(
      [
        'frontends:',
        '  - { name: a, listen: 127.0.0.1:7000, backends: [127.0.0.1:1] }',
        '  - { name: b, listen: 127.0.0.1:7000, sources: [10.8.0.0/16, "2001:db8::/32"], backends: [127.0.0.1:2] }',
        '  - { name: c, listen: 127.0.0.1:7000, sources: [10.8.3.0/24], backends: [127.0.0.1:3] }',
        '  - { name: d, listen: 127.0.0.1:7000, serverNames: [api.example.com], backends: [127.0.0.1:4] }',
        '  - { name: e, listen: 127.0.0.1:7000, serverNames: [api.example.com], sources: [10.8.0.0/16], backends: [127.0.0.1:5] }',
        '',
      ].join('\n'),
    ),
  );
  t.same(
    config.frontends.map((f) => f.sources),
    [[], ['10.8.0.0/16', '2001:db8::/32'], ['10.8.3.0/24'], [], ['10.8.0.0/16']],
  );
});

t.test('JSON is accepted too', async (t) => {
  const config = await loadConfigFile(
    file(
      JSON.stringify({
        frontends: [{ name: 'j', listen: ['127.0.0.1:0'], backends: ['127.0.0.1:1'] }],
      }),
      'json',
    ),
  );
  t.equal(config.frontends[0].name, 'j');
});

const ONE = (backend: string) =>
  `frontends:\n  - name: a\n    listen: [127.0.0.1:0]\n    backends: [${backend}]\n`;

const mistakes: Array<[string, string, RegExp]> = [
  ['an unknown top-level key', `wrkers: 2\n${ONE('127.0.0.1:1')}`, /: Unrecognized key: "wrkers"/],
  [
    'a frontend without backends',
    `frontends:\n  - name: a\n    listen: [127.0.0.1:0]\n  - name: b\n    listen: [127.0.0.1:0]\n    backends: [{ address: "nohost" }]\n`,
    /: frontends\[0\]\.backends: /,
  ],
  [
    'a bad address in the second frontend',
    `frontends:\n  - name: a\n    listen: [127.0.0.1:0]\n    backends: [127.0.0.1:1]\n  - name: b\n    listen: [127.0.0.1:0]\n    backends: [{ address: "nohost" }]\n`,
    /: frontends\[1\]\.backends\[0\]\.address: "nohost" is not HOST:PORT/,
  ],
  ['an address that is not a string', ONE('{ address: 5 }'), /backends\[0\]\.address: .*string/],
  ['a weight out of range', ONE('{ address: "127.0.0.1:1", weight: 999 }'), /weight: 999 is out/],
  [
    'a misspelt backend key',
    ONE('{ address: "127.0.0.1:1", wieght: 2 }'),
    /backends\[0\]: Unrecognized key: "wieght"/,
  ],
  ['no frontends', 'workers: 2\n', /: frontends: .*array/],
  [
    'a health path without /',
    `frontends:\n  - { name: a, health: { http: ready }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.health\.http: "ready" is not a request path/,
  ],
  [
    'health.host without health.http',
    `frontends:\n  - { name: a, health: { host: api }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.health\.host: needs health\.http$/,
  ],
  [
    'two kinds of probe',
    `frontends:\n  - { name: a, health: { http: /r, grpc: true }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.health\.grpc: cannot be used with .*health\.http/,
  ],
  [
    'least-load without load.metric',
    `frontends:\n  - { name: a, algorithm: least-load, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.algorithm: least-load needs load\.metric/,
  ],
  [
    'a bad label matcher',
    `frontends:\n  - { name: a, load: { metric: 'q{a=b}' }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.load\.metric: "q\{a=b\}" is not a metric selector/,
  ],
  [
    'a backend agent port out of range',
    ONE('{ address: "127.0.0.1:1", agent: 0 }'),
    /backends\[0\]\.agent: 0 is out of range/,
  ],
  [
    'a frontend name used twice',
    `frontends:\n  - { name: a, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n  - { name: a, listen: [127.0.0.1:0], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.name: "a" is used twice/,
  ],
  [
    'a listener shared by two frontends',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.listen\[0\]: 127\.0\.0\.1:7000 is already a listener of a/,
  ],
  [
    'two frontends on one address without serverNames',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [a.example.com], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], backends: [127.0.0.1:2] }\n  - { name: c, listen: [127.0.0.1:7000], backends: [127.0.0.1:3] }\n`,
    /frontends\[2\]\.listen\[0\]: 127\.0\.0\.1:7000 is already a listener of b, and neither b nor c has serverNames or sources; .*at most one of them has none/,
  ],
  [
    'one exact server name in two frontends on one address',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [api.example.com], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], serverNames: ["*.example.com", API.example.com], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.serverNames\[1\]: "api\.example\.com" is a server name of both a and b, which share 127\.0\.0\.1:7000$/,
  ],
  [
    'one source network in two frontends on one address',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], sources: [10.8.0.0/16], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], sources: [10.9.0.0/16, 10.8.3.0/16], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.sources\[1\]: "10\.8\.3\.0\/16" is the network of a's source "10\.8\.0\.0\/16" too \(a and b share 127\.0\.0\.1:7000, without serverNames\); the same clients cannot go to both$/,
  ],
  [
    'one source network in two frontends on one server name',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [api.example.com], sources: ["2001:db8::/32"], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], serverNames: [api.example.com], sources: ["2001:DB8::/32"], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.sources\[0\]: .* \(a and b share 127\.0\.0\.1:7000, on the name api\.example\.com\)/,
  ],
  [
    'too many source networks',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], sources: [${Array.from({ length: 257 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`).join(', ')}], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.sources: 257 networks; a frontend has at most 256$/,
  ],
  [
    'a source that is no network',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], sources: [10.8.0.0/33], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.sources\[0\]: "10\.8\.0\.0\/33": the prefix must be 0\.\.32$/,
  ],
  [
    'one wildcard in two frontends on one address',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: ["*.example.com"], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], serverNames: ["*.example.com"], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.serverNames\[0\]: "\*\.example\.com" is a server name of both a and b/,
  ],
  [
    'a server name with a space',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [api example.com], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.serverNames\[0\]: "api example\.com" is not a server name/,
  ],
  [
    'a wildcard over two labels',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: ["*.*.example.com"], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.serverNames\[0\]: "\*\.\*\.example\.com" is not a server name/,
  ],
  [
    'a server name given twice in one frontend',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [x.example, X.example], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.serverNames\[1\]: "x\.example" is given twice/,
  ],
  [
    'frontends on one address that admit clients differently',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [a.example], backends: [127.0.0.1:1] }\n  - { name: b, listen: [127.0.0.1:7000], allow: [127.0.0.0/8], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.allow: must be the same in a and b: they share 127\.0\.0\.1:7000, and it is checked before the server name is known/,
  ],
  [
    'frontends on one address, one with accept-proxy',
    `frontends:\n  - { name: a, listen: [127.0.0.1:7000], serverNames: [a.example], backends: [127.0.0.1:1] }\n  - { name: b, listen: ["127.0.0.1:7000,accept-proxy"], backends: [127.0.0.1:2] }\n`,
    /frontends\[1\]\.listen\[0\]: 127\.0\.0\.1:7000 is a listener of a too: accept-proxy must be the same/,
  ],
  [
    'a bad duration',
    `frontends:\n  - { name: a, connectTimeout: soon, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.connectTimeout: "soon" is not a duration/,
  ],
  [
    'a bad health setting',
    `frontends:\n  - { name: a, health: { rise: 0 }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.health\.rise: 0 is out of range/,
  ],
  [
    'a name with a slash',
    `frontends:\n  - { name: a/b, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n`,
    /frontends\[0\]\.name: "a\/b" is not a name/,
  ],
  ['a bad log level', `log: { level: loud }\n${ONE('127.0.0.1:1')}`, /: log\.level: unknown level/],
  [
    'a world-writable stats socket',
    `statsSocket: { path: /tmp/s, mode: "0666" }\n${ONE('127.0.0.1:1')}`,
    /: statsSocket\.mode: 0666 would let every user in/,
  ],
  ['broken YAML', 'frontends:\n  - name: a\n   bad', /not valid YAML: .* at line 3/],
  [
    'a frontend with both pool: and backends:',
    `pools:\n  - { name: p, algorithm: maglev, backends: [127.0.0.1:1] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p, backends: [127.0.0.1:2] }\n`,
    /: frontends\[0\]\.backends: cannot be given beside pool: p; a pool's settings are given in the pool$/,
  ],
  [
    "a frontend with pool: and a pool's setting",
    `pools:\n  - { name: p, algorithm: maglev, backends: [127.0.0.1:1] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p, health: { interval: 3s } }\n`,
    /: frontends\[0\]\.health\.interval: cannot be given beside pool: p/,
  ],
  [
    'a pool: that names no pool',
    `pools:\n  - { name: p, algorithm: maglev, backends: [127.0.0.1:1] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: q }\n`,
    /: frontends\[0\]\.pool: "q" names no pool \(pools: p\)$/,
  ],
  [
    'a pool: and no pools: section',
    `frontends:\n  - { name: a, listen: [127.0.0.1:0], pool: q }\n`,
    /: frontends\[0\]\.pool: "q" names no pool \(there is no pools: section\)$/,
  ],
  [
    'a pool with no backends',
    `pools:\n  - { name: p }\nframe`.replace(
      'frame',
      `frontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p }\n`,
    ),
    /: pools\[0\]\.backends: at least one is required$/,
  ],
  [
    'a bad value in a pool no frontend uses',
    `pools:\n  - { name: p, algorithm: fastest, backends: [127.0.0.1:1] }\n${ONE('127.0.0.1:1')}`,
    /: pools\[0\]\.algorithm: /,
  ],
  [
    'two pools of one name',
    `pools:\n  - { name: p, algorithm: maglev, backends: [127.0.0.1:1] }\n  - { name: p, backends: [127.0.0.1:3] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p }\n`,
    /: pools\[1\]\.name: "p" is used twice$/,
  ],
  [
    "a pool named as a frontend's own pool",
    `pools:\n  - { name: a, backends: [127.0.0.1:3] }\n${ONE('127.0.0.1:1')}`,
    /: pools\[0\]\.name: "a" is the name of frontend a's own pool/,
  ],
  [
    'a share of 0',
    `pools:\n  - { name: p, backends: ["127.0.0.1:1,maxconn=10"] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p, share: 0 }\n`,
    /: frontends\[0\]\.share: 0 is out of range \(1\.\.100\)$/,
  ],
  [
    'a share of 150',
    `pools:\n  - { name: p, backends: ["127.0.0.1:1,maxconn=10"] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p, share: 150 }\n`,
    /: frontends\[0\]\.share: 150 is out of range \(1\.\.100\)$/,
  ],
  [
    'a priority out of range',
    `pools:\n  - { name: p, backends: [127.0.0.1:1] }\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], pool: p, priority: -1001 }\n`,
    /: frontends\[0\]\.priority: -1001 is out of range \(-1000\.\.1000\)$/,
  ],
  [
    'an unknown key in a pool',
    `pools:\n  - { name: p, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n${ONE('127.0.0.1:1')}`,
    /: pools\[0\]: Unrecognized key: "listen"/,
  ],
  ['a duplicate key', 'workers: 1\nworkers: 2\n', /not valid YAML: Map keys must be unique/],
];

for (const [what, text, expected] of mistakes) {
  t.test(`refused: ${what}`, async (t) => {
    const path = file(text);
    const message = await failure(path);
    t.ok(message.startsWith(path), `names the file: ${message}`);
    t.match(message, expected);
    t.notOk(message.includes('\n'), 'one line');
  });
}

t.test('a missing file is named', async (t) => {
  t.match(
    await failure(join(dir, 'nope.yaml')),
    /nope\.yaml: cannot read the config file \(ENOENT\)/,
  );
});

t.test(
  'process-wide flags override the file, and take the blame for their own values',
  async (t) => {
    const path = file(`workers: 3\n${ONE('127.0.0.1:1')}`);
    const config = await loaderFromArgs([
      '--config',
      path,
      '--workers',
      '1',
      '--log-level',
      'debug',
    ])();
    t.equal(config.workers, 1);
    t.equal(config.logLevel, 'debug');
    await t.rejects(
      loaderFromArgs(['--config', path, '--workers', 'many'])(),
      /^--workers: "many"/,
    );
  },
);

t.test('frontend flags cannot be combined with --config', async (t) => {
  const path = file(ONE('127.0.0.1:1'));
  t.throws(() => loaderFromArgs(['--config', path, '--listen', '127.0.0.1:1']), {
    message: /^--listen: cannot be used with --config/,
  });
  t.throws(() => loaderFromArgs(['--config', path, '--no-health-check']), {
    message: /^--no-health-check: cannot/,
  });
});

t.test('health.grpc: true asks about the whole server, as the bare flag does', async (t) => {
  const config = await loadConfigFile(
    file(
      'frontends:\n  - { name: a, health: { grpc: true }, listen: [127.0.0.1:0], backends: [127.0.0.1:1] }\n',
    ),
  );
  t.equal(config.frontends[0].health.grpc, '');
  const flags = await loaderFromArgs([
    '--listen',
    '127.0.0.1:0',
    '--backend',
    '127.0.0.1:1',
    '--health-grpc',
  ])();
  t.equal(flags.frontends[0].health.grpc, '');
});
