// Protection at the edge: a denied CIDR (or one outside --allow) is closed before any backend is
// contacted, and counted; per-source limits hold under a burst of 1000 connections from one
// address. All on loopback: 127.0.0.1 is the one source.

import net from 'node:net';
import t from 'tap';
import { fnv1a } from '../../src/core/hash.ts';
import { Guard, REFUSED } from '../../src/data/guard.ts';
import { allocateSources, FIELDS, KEY, SECOND, SOURCE_SLOTS } from '../../src/shared/sources.ts';
import { query } from '../../src/stats/client.ts';
import { greet, socketPath, startBackend, startFulcrum, waitFor } from '../helpers.ts';

/** Connects and resolves with what happened: the backend's line, or 'closed'. */
function attempt(port: number, from?: string): Promise<{ socket: net.Socket; answer: string }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: from });
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      if (text.includes('\n')) resolve({ socket, answer: text.trim() });
    });
    socket.on('error', () => resolve({ socket, answer: 'closed' }));
    socket.on('close', () => resolve({ socket, answer: 'closed' }));
  });
}

/** The per-source table keys an address by its 32-bit hash: half of all addresses hash to 2^31
 *  or more, which a signed 32-bit table cell holds as a negative number. The first such loopback
 *  address, for the tests to come from. */
const HIGH_HASH = (() => {
  for (let i = 2; i < 65536; i++) {
    const address = `127.0.${i >> 8}.${i & 255}`;
    if (fnv1a(address) >= 2 ** 31) return address;
  }
  throw new Error('no loopback address hashes high');
})();

async function info(stats: string): Promise<Record<string, number>> {
  const text = await query(stats, 'show info json');
  return JSON.parse(text) as Record<string, number>;
}

t.test('a denied client is closed before any backend is contacted, and counted', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const denied = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    stats,
    '--no-health-check',
    '--backend',
    backend.address,
    '--deny',
    '127.0.0.0/8',
  ]);
  t.teardown(() => denied.stop());
  for (let i = 0; i < 5; i++) t.equal((await attempt(denied.port)).answer, 'closed');
  t.equal(backend.accepted, 0, 'the backend never heard of them');
  t.equal((await info(stats))['ended_denied'], 5, 'counted as denied');

  const stats2 = socketPath();
  const allowOther = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    stats2,
    '--no-health-check',
    '--backend',
    backend.address,
    '--allow',
    '10.0.0.0/8',
    '--allow',
    '::1',
  ]);
  t.teardown(() => allowOther.stop());
  t.equal((await attempt(allowOther.port)).answer, 'closed', 'not in --allow: refused');
  t.equal(backend.accepted, 0);

  const allowed = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--backend',
    backend.address,
    '--allow',
    '127.0.0.1/32',
    '--deny',
    '10.0.0.0/8',
  ]);
  t.teardown(() => allowed.stop());
  const ok = await attempt(allowed.port);
  t.equal(ok.answer, String(backend.port), 'in --allow and not denied: served');
  ok.socket.destroy();
});

t.test(
  '--max-conns-per-source holds under a burst of 1000 connections from one address (a high hash)',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--stats-socket',
      stats,
      '--no-health-check',
      '--backend',
      backend.address,
      '--max-conns-per-source',
      '10',
    ]);
    t.teardown(() => fulcrum.stop());
    const results = await Promise.all(
      Array.from({ length: 1000 }, () => attempt(fulcrum.port, HIGH_HASH)),
    );
    const served = results.filter((r) => r.answer !== 'closed');
    t.equal(served.length, 10, `exactly 10 held connections from ${HIGH_HASH} got through`);
    t.ok(backend.accepted <= 10, `the backend saw ${backend.accepted}`);
    t.equal((await info(stats))['ended_source-limit'], 990, 'the rest were closed and counted');
    for (const r of served) r.socket.destroy();
    // Released: once they are gone the address may connect again.
    await waitFor(() => backend.open.size === 0, 5000, 'the held ones to close');
    let again = { answer: 'closed', socket: new net.Socket() };
    const until = Date.now() + 3000;
    while (again.answer === 'closed' && Date.now() < until) {
      again = await attempt(fulcrum.port, HIGH_HASH);
    }
    t.equal(again.answer, String(backend.port), 'the limit counts live connections only');
    again.socket.destroy();
    for (const r of results) r.socket.destroy();
  },
);

t.test(
  '--conn-rate-per-source holds under a burst of 1000 connections from one address',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--no-health-check',
      '--backend',
      backend.address,
      '--conn-rate-per-source',
      '50/s',
    ]);
    t.teardown(() => fulcrum.stop());
    const started = Date.now();
    const results = await Promise.all(Array.from({ length: 1000 }, () => attempt(fulcrum.port)));
    const seconds = (Date.now() - started) / 1000;
    const served = results.filter((r) => r.answer !== 'closed').length;
    // A sliding one-second window: at most 50 in any second of the burst (and a few in flight
    // between the two workers' reads of the shared count).
    t.ok(
      served >= 40 && served <= 50 * Math.ceil(seconds + 1),
      `${served} served in ${seconds.toFixed(2)} s`,
    );
    t.ok(served <= 60, `at most about the rate: ${served}`);
    for (const r of results) r.socket.destroy();
  },
);

t.test('an idle entry taken by another address starts that address afresh', async (t) => {
  // Two guards over one table, as two workers have; two addresses with the same home entry,
  // both hashing high.
  const sources = allocateSources();
  const config = { allow: [], deny: [], proxyFrom: [], maxConnsPerSource: 0, connRatePerSource: 5 };
  const one = new Guard(config, sources);
  const two = new Guard(config, sources);
  const home = (address: string) => (fnv1a(address) || 1) & (SOURCE_SLOTS - 1);
  const seen = new Map<number, string>();
  let pair: [string, string] | null = null;
  for (let i = 1; pair === null && i < 65536; i++) {
    const address = `127.0.${i >> 8}.${i & 255}`;
    if (fnv1a(address) < 2 ** 31) continue; // the hashes a signed cell holds as negative
    const other = seen.get(home(address));
    if (other === undefined) seen.set(home(address), address);
    else pair = [other, address];
  }
  if (pair === null) throw new Error('no two addresses share an entry');
  const [a, b] = pair;
  for (let k = 0; k < 5; k++) t.not(one.admit(a, 'IPv4'), REFUSED, `${a}: connection ${k + 1}`);
  t.equal(one.admit(a, 'IPv4'), REFUSED, `${a}: the sixth within a second is refused`);
  // a goes quiet: its entry's second is three seconds old, as if they had passed.
  const table = new Int32Array(sources);
  const base = home(a) * FIELDS;
  table[base + SECOND] -= 3;
  for (let k = 0; k < 5; k++) t.not(two.admit(b, 'IPv4'), REFUSED, `${b}: connection ${k + 1}`);
  t.equal(two.admit(b, 'IPv4'), REFUSED, `${b}: its sixth is refused`);
  t.equal(table[base + KEY], fnv1a(b) | 0 || 1, `${b} took the entry ${a} left idle`);
});
