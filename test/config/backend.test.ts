// The one backend codec: spec string <-> BackendConfig <-> state record, over every field.

import t from 'tap';
import { formatBackend, OPTIONS, parseBackend } from '../../src/config/backend.ts';
import { ConfigError, parseEscaped } from '../../src/config/parse.ts';

/** A value other than the default for every option, as a spec writes it. */
const SAMPLES: Record<string, string> = {
  weight: 'weight=7',
  backup: 'backup',
  maxconn: 'maxconn=40',
  slowstart: 'slowstart=30s',
  'send-proxy': 'send-proxy=v2',
  agent: 'agent=9777',
  tls: 'tls',
  sni: 'sni=api.internal',
  name: 'name=spare',
};

t.test('every option has a sample here: a new option must join the round trip', async (t) => {
  t.same(OPTIONS.map((o) => o.key).sort(), Object.keys(SAMPLES).sort());
});

t.test(
  'spec -> config -> spec -> config is the identity, one option at a time and all',
  async (t) => {
    const specs = [
      '10.0.0.1:5432',
      'db.internal:5432',
      'srv+_pg._tcp.db.internal',
      '[::1]:6379',
      ...Object.values(SAMPLES).map((s) => `10.0.0.1:5432,${s}`),
      `10.0.0.1:5432,${Object.values(SAMPLES).join(',')}`,
      '10.0.0.1:5432,send-proxy=none',
    ];
    for (const spec of specs) {
      const config = parseBackend(spec, 'x');
      const again = parseBackend(formatBackend(config), 'x');
      t.same(again, config, `${spec} -> ${formatBackend(config)}`);
    }
    const all = parseBackend(`10.0.0.1:5432,${Object.values(SAMPLES).join(',')}`, 'x');
    t.match(all, {
      host: '10.0.0.1',
      port: 5432,
      name: 'spare',
      weight: 7,
      backup: true,
      maxconn: 40,
      slowstartMs: 30_000,
      sendProxy: 2,
      agentPort: 9777,
      srv: false,
    });
    t.equal(
      formatBackend(parseBackend('10.0.0.1:5432', 'x')),
      '10.0.0.1:5432',
      'defaults are left out',
    );
  },
);

t.test('bad options are one ConfigError naming the option', async (t) => {
  t.throws(() => parseBackend('10.0.0.1:5432,weight=', 'x'), ConfigError);
  t.throws(() => parseBackend('10.0.0.1:5432,weight=1.5', 'x'), ConfigError);
  t.throws(() => parseBackend('10.0.0.1:5432,backup=yes', 'x'), {
    message: /unknown option "backup=yes"/,
  });
  t.throws(() => parseBackend('10.0.0.1:5432,send-proxy=v3', 'x'), { message: /send-proxy/ });
  t.throws(() => parseBackend('srv+nodots', 'x'), { message: /srv\+NAME/ });
});

t.test(
  'regression: --health-send ending in a backslash names the backslash, not \\x00',
  async (t) => {
    t.throws(() => parseEscaped('trail\\', '--health-send'), {
      message:
        '--health-send: "trail\\": a trailing backslash escapes nothing (write \\\\ for a backslash)',
    });
    t.equal(
      parseEscaped('a\\\\', '--health-send'),
      'a\\',
      'an escaped backslash at the end is fine',
    );
  },
);
