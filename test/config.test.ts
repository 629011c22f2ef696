// Config parsing details the CLI tests do not reach: durations, IPv6 endpoints, backend options,
// and hostnames resolved once at start so the data path connects by address.

import { isIP } from 'node:net';
import t from 'tap';
import { parseBackend } from '../src/config/backend.ts';
import { loaderFromArgs } from '../src/config/flags.ts';
import { ConfigError, parseDuration, parseEndpoint } from '../src/config/parse.ts';
import { resolveConfig } from '../src/control/discovery.ts';

t.test('durations', async (t) => {
  t.equal(parseDuration('500ms', 'x'), 500);
  t.equal(parseDuration('3s', 'x'), 3000);
  t.equal(parseDuration('5m', 'x'), 300_000);
  t.equal(parseDuration('1h', 'x'), 3_600_000);
  t.equal(parseDuration('1.5s', 'x'), 1500);
  t.equal(parseDuration('250', 'x'), 250, 'a bare number is milliseconds');
  t.throws(() => parseDuration('-1s', '--idle-timeout'), ConfigError);
  t.throws(() => parseDuration('30 days', '--idle-timeout'), ConfigError);
  t.throws(() => parseDuration('30d', '--idle-timeout'), ConfigError);
});

t.test('endpoints and backends', async (t) => {
  t.same(parseEndpoint('[::]:80', 'x', false), { text: '[::]:80', host: '::', port: 80 });
  t.same(parseEndpoint('0.0.0.0:8080', 'x', false), {
    text: '0.0.0.0:8080',
    host: '0.0.0.0',
    port: 8080,
  });
  t.same(parseEndpoint('db.internal:5432', 'x', false).host, 'db.internal');
  t.throws(() => parseEndpoint('::1:80', 'x', false), ConfigError, 'IPv6 needs brackets');
  t.throws(() => parseEndpoint('host:', 'x', false), ConfigError);
  const b = parseBackend('10.0.0.1:5432,weight=0,backup', '--backend');
  t.same([b.name, b.weight, b.backup], ['10.0.0.1:5432', 0, true]);
  t.throws(() => parseBackend('10.0.0.1:5432,weight=', '--backend'), ConfigError);
  t.throws(() => parseBackend('10.0.0.1:5432,weight=1.5', '--backend'), ConfigError);
});

t.test('a config error names where it is', async (t) => {
  try {
    await loaderFromArgs([
      '--listen',
      '127.0.0.1:0',
      '--backend',
      '127.0.0.1:1',
      '--retries',
      'x',
    ])();
    t.fail('should throw');
  } catch (err) {
    t.ok(err instanceof ConfigError);
    t.equal((err as ConfigError).where, '--retries');
    t.equal((err as ConfigError).code, 'FULCRUM_BAD_CONFIG');
  }
});

t.test('a hostname backend becomes one backend per address, named NAME@ADDRESS', async (t) => {
  const config = await resolveConfig(
    await loaderFromArgs([
      '--listen',
      '127.0.0.1:0',
      '--backend',
      'localhost:6000',
      '--backend',
      '127.0.0.2:6001',
    ])(),
  );
  const backends = config.frontends[0].backends;
  const fromName = backends.filter((b) => b.name.startsWith('localhost:6000@'));
  t.ok(fromName.length >= 1, `localhost gave ${fromName.map((b) => b.name)}`);
  for (const b of fromName) {
    t.not(isIP(b.host), 0, `${b.name} connects by address`);
    t.equal(b.port, 6000);
  }
  const literal = backends.find((b) => b.name === '127.0.0.2:6001');
  t.equal(literal?.host, '127.0.0.2', 'an address stays as written');
});
