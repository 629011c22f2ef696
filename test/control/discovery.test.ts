// DNS discovery against a real (tiny) DNS server on loopback: a hostname backend follows its A
// records (addresses that appear join, those that vanish drain), resolution failures keep the
// last good set and are logged once, and an SRV name gives hosts, ports, weights and backups.

import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type dnsPacket from 'dns-packet';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import { a, dnsServer } from '../dns.ts';
import {
  connect,
  eventually,
  greet,
  readLine,
  showStat,
  socketPath,
  startFulcrum,
  waitFor,
} from '../helpers.ts';

/** Greeting servers on 127.0.0.2 and 127.0.0.3, on one port: what a name's two A records reach. */
async function loopbackPair(t: { teardown(fn: () => unknown): void }) {
  const two = await serveOn('127.0.0.2', 0);
  const port = (two.address() as net.AddressInfo).port;
  const three = await serveOn('127.0.0.3', port);
  t.teardown(() => {
    two.close();
    three.close();
  });
  return { two, three, port };
}

/** A greeting server on a given loopback address and port (0: any). */
async function serveOn(host: string, port: number): Promise<net.Server> {
  const server = net.createServer(greet);
  server.on('connection', (s) => s.on('error', () => {}));
  server.listen(port, host);
  await once(server, 'listening');
  return server;
}

/** A config file (and a stats socket path beside it) in a directory of its own; `yaml` is the
 *  file's text, given the socket's path. */
function writeConfig(yaml: (stats: string) => string): { config: string; stats: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-discovery-'));
  const config = join(dir, 'fulcrum.yaml');
  const stats = join(dir, 'stats.sock');
  writeFileSync(config, yaml(stats));
  return { config, stats };
}

t.test('a hostname backend follows its A records; failures keep the last good set', async (t) => {
  const dns = await dnsServer(t);
  const { two, three, port } = await loopbackPair(t);
  dns.state.zone.set('pool.test', a('pool.test', '127.0.0.2'));
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--no-health-check',
    '--stats-socket',
    stats,
    '--resolver',
    dns.address,
    '--resolve-interval',
    '500ms',
    '--backend',
    `pool.test:${port}`,
  ]);
  t.teardown(() => fulcrum.stop());
  const names = async () => (await showStat(stats))[0].backends.map((b) => `${b.name} ${b.state}`);
  t.same(await names(), [`pool.test:${port}@127.0.0.2 up`]);

  // Which address served: the backend tells its own address through the connection's peer.
  const served = async (n: number) => {
    const hosts = new Set<string>();
    for (let i = 0; i < n; i++) {
      const socket = await connect(fulcrum.port);
      await readLine(socket);
      socket.destroy();
    }
    for (const server of [two, three]) {
      // Count connections per server since the last call.
      const count = (server as net.Server & { served?: number }).served ?? 0;
      if (count > 0) hosts.add((server.address() as net.AddressInfo).address);
      (server as net.Server & { served?: number }).served = 0;
    }
    return hosts;
  };
  for (const server of [two, three]) {
    server.on('connection', () => {
      const s = server as net.Server & { served?: number };
      s.served = (s.served ?? 0) + 1;
    });
  }
  t.same([...(await served(6))], ['127.0.0.2']);

  const held = await connect(fulcrum.port);
  await readLine(held);
  dns.state.zone.set('pool.test', a('pool.test', '127.0.0.2', '127.0.0.3'));
  await waitFor(
    () => fulcrum.logs.some((l) => l.msg === 'discovery: backends changed'),
    5000,
    'the new address to join',
  );
  t.same(
    [...(await served(12))].sort(),
    ['127.0.0.2', '127.0.0.3'],
    'an address that appears joins',
  );

  dns.state.zone.set('pool.test', a('pool.test', '127.0.0.3'));
  await waitFor(
    () => fulcrum.logs.filter((l) => l.msg === 'discovery: backends changed').length >= 2,
    5000,
    'the vanished address to drain',
  );
  t.same([...(await served(8))], ['127.0.0.3'], 'new connections avoid the vanished address');
  t.ok(
    (await names()).includes(`pool.test:${port}@127.0.0.2 draining`),
    'the vanished address drains while a connection holds it',
  );
  held.write('still here\n');
  held.end();
  await once(held, 'end');

  dns.state.failing = true;
  // Two rounds at least: each asks A and AAAA, and the resolver tries each question twice.
  const asked = dns.state.asked;
  await waitFor(() => dns.state.asked >= asked + 8, 10_000, 'several failed rounds');
  const warnings = fulcrum.logs.filter(
    (l) => l.msg === 'name does not resolve: keeping its last good addresses',
  );
  t.equal(warnings.length, 1, 'several failed rounds, one log line');
  t.same(warnings[0].kept, ['127.0.0.3'], 'it keeps the last good addresses');
  t.same([...(await served(4))], ['127.0.0.3'], 'and keeps serving');
  dns.state.failing = false;
  await waitFor(() => fulcrum.logs.some((l) => l.msg === 'name resolves again'), 5000, 'recovery');
});

t.test('an SRV name gives hosts, ports and weights; a worse priority is a backup', async (t) => {
  const dns = await dnsServer(t);
  const servers = await Promise.all([0, 1, 2].map(() => serveOn('127.0.0.1', 0)));
  t.teardown(() => {
    for (const s of servers) s.close();
  });
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  const srv = '_pg._tcp.svc.test';
  dns.state.zone.set(srv, [
    {
      type: 'SRV',
      name: srv,
      ttl: 30,
      data: { priority: 10, weight: 5, port: ports[0], target: 'a.svc.test' },
    },
    {
      type: 'SRV',
      name: srv,
      ttl: 30,
      data: { priority: 10, weight: 1, port: ports[1], target: 'b.svc.test' },
    },
    {
      type: 'SRV',
      name: srv,
      ttl: 30,
      data: { priority: 20, weight: 1, port: ports[2], target: 'c.svc.test' },
    },
  ] as dnsPacket.Answer[]);
  for (const host of ['a', 'b', 'c']) {
    dns.state.zone.set(`${host}.svc.test`, a(`${host}.svc.test`, '127.0.0.1'));
  }
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--stats-socket',
    stats,
    '--resolver',
    dns.address,
    '--backend',
    `srv+${srv}`,
  ]);
  t.teardown(() => fulcrum.stop());
  const [stat] = await showStat(stats);
  t.same(
    stat.backends.map((b) => [b.name, b.weight]),
    [
      [`srv+${srv}@127.0.0.1:${ports[0]}`, 5],
      [`srv+${srv}@127.0.0.1:${ports[1]}`, 1],
      [`srv+${srv}@127.0.0.1:${ports[2]}`, 1],
    ],
  );
  const answers = new Set<string>();
  for (let i = 0; i < 12; i++) {
    const socket = await connect(fulcrum.port);
    answers.add(await readLine(socket));
    socket.destroy();
  }
  t.notOk(
    answers.has(String(ports[2])),
    'the priority-20 target is a backup, unused while others are up',
  );
  t.ok(answers.has(String(ports[0])), 'the priority-10 targets take the traffic');
});

t.test(
  'a discovered backend an operator deleted stays deleted while DNS still lists it',
  async (t) => {
    const dns = await dnsServer(t);
    const { port } = await loopbackPair(t);
    dns.state.zone.set('pair.test', a('pair.test', '127.0.0.2', '127.0.0.3'));
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--stats-socket',
      stats,
      '--resolver',
      dns.address,
      '--resolve-interval',
      '300ms',
      '--backend',
      `pair.test:${port}`,
    ]);
    t.teardown(() => fulcrum.stop());
    const names = async () => (await showStat(stats))[0].backends.map((b) => b.name);
    t.same(await names(), [`pair.test:${port}@127.0.0.2`, `pair.test:${port}@127.0.0.3`]);
    t.match(await query(stats, `del backend default/pair.test:${port}@127.0.0.2`), /deleted/);
    // Several DNS rounds later (each asks A and AAAA), it has not come back.
    const asked = dns.state.asked;
    await waitFor(() => dns.state.asked >= asked + 6, 10_000, 'three more DNS rounds');
    t.same(await names(), [`pair.test:${port}@127.0.0.3`]);
    t.same(JSON.parse(await query(stats, 'show state')).pools.default.deleted, [
      `pair.test:${port}@127.0.0.2`,
    ]);
  },
);

t.test(
  'regression: --resolver next to --config is applied (it was neither applied nor refused)',
  async (t) => {
    const dns = await dnsServer(t);
    const { port } = await loopbackPair(t);
    dns.state.zone.set('only-here.test', a('only-here.test', '127.0.0.2'));
    const { config, stats } = writeConfig(
      (stats) =>
        `workers: 1\nstatsSocket: ${stats}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["only-here.test:${port}"]\n`,
    );
    // Only the test's DNS server knows the name: the system resolver would fail the start.
    const fulcrum = await startFulcrum(['--config', config, '--resolver', dns.address]);
    t.teardown(() => fulcrum.stop());
    t.same(
      (await showStat(stats))[0].backends.map((b) => b.name),
      [`only-here.test:${port}@127.0.0.2`],
    );
  },
);

t.test(
  'regression: add backend with a hostname expands and follows DNS like a configured one; a reload of the unchanged config changes nothing',
  async (t) => {
    const dns = await dnsServer(t);
    const { port } = await loopbackPair(t);
    dns.state.zone.set('added.test', a('added.test', '127.0.0.2'));
    const other = await serveOn('127.0.0.1', 0);
    t.teardown(() => other.close());
    const otherAddress = `127.0.0.1:${(other.address() as net.AddressInfo).port}`;
    const { config, stats } = writeConfig(
      (stats) =>
        `workers: 2\nstatsSocket: ${stats}\nresolvers: ["${dns.address}"]\nresolveInterval: 300ms\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["${otherAddress}"]\n`,
    );
    const fulcrum = await startFulcrum(['--config', config]);
    t.teardown(() => fulcrum.stop());
    const names = async () => (await showStat(stats))[0].backends.map((b) => b.name);
    t.equal(
      await query(stats, `add backend default added.test:${port}`),
      `added default/added.test:${port}`,
    );
    t.same(await names(), [otherAddress, `added.test:${port}@127.0.0.2`], 'named NAME@ADDRESS');

    // It follows DNS: a second address joins.
    dns.state.zone.set('added.test', a('added.test', '127.0.0.2', '127.0.0.3'));
    await waitFor(
      () => fulcrum.logs.some((l) => l.msg === 'discovery: backends changed'),
      5000,
      'the new address to join',
    );
    t.same(await names(), [
      otherAddress,
      `added.test:${port}@127.0.0.2`,
      `added.test:${port}@127.0.0.3`,
    ]);
    for (let i = 0; i < 4; i++) {
      const socket = await connect(fulcrum.port);
      await readLine(socket);
      socket.destroy();
    }
    const before = (await showStat(stats))[0].backends.map((b) => [b.name, b.total]);

    // A reload of the unchanged config keeps every backend, its name and its counters.
    t.equal(await query(stats, 'reload'), 'reloaded (default: +0 -0 ~0)');
    t.same(
      (await showStat(stats))[0].backends.map((b) => [b.name, b.total]),
      before,
      'same names, counters kept',
    );

    // The name as it was added deletes all it expanded to.
    t.match(await query(stats, `del backend default/added.test:${port}`), /deleted/);
    await eventually(
      async () => (await names()).join() === otherAddress,
      5000,
      'the deleted addresses to leave',
    );
    t.same(JSON.parse(await query(stats, 'show state')).pools.default.added, []);
  },
);

t.test(
  'regression: add backend srv+NAME works (it passed the parser, then failed in dns.lookup)',
  async (t) => {
    const dns = await dnsServer(t);
    const server = await serveOn('127.0.0.1', 0);
    t.teardown(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    const srv = '_x._tcp.added.test';
    dns.state.zone.set(srv, [
      {
        type: 'SRV',
        name: srv,
        ttl: 30,
        data: { priority: 1, weight: 3, port, target: 't.added.test' },
      },
    ] as dnsPacket.Answer[]);
    dns.state.zone.set('t.added.test', a('t.added.test', '127.0.0.1'));
    const stats = socketPath();
    const first = await serveOn('127.0.0.1', 0);
    t.teardown(() => first.close());
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--stats-socket',
      stats,
      '--resolver',
      dns.address,
      '--backend',
      `127.0.0.1:${(first.address() as net.AddressInfo).port}`,
    ]);
    t.teardown(() => fulcrum.stop());
    t.equal(await query(stats, `add backend default srv+${srv}`), `added default/srv+${srv}`);
    const added = (await showStat(stats))[0].backends[1];
    t.same([added.name, added.weight], [`srv+${srv}@127.0.0.1:${port}`, 3]);
  },
);
