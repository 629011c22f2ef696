// A real DNS server behind a UDP frontend: two dnsmasq instances (Debian's dnsmasq-base; .ci/run
// installs it, elsewhere the test skips with one line when it is missing) answer a local name,
// queried through fulcrum with node's dns.Resolver pointed at it. Every answer is right, both
// instances answer (round-robin, each query a session of its own), and every session ends at its
// answer.

import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { Resolver } from 'node:dns/promises';
import { mkdtempSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import { eventually, showStat, socketPath, startFulcrum } from '../helpers.ts';
import { heldUdpSockets } from '../udp.ts';

const hasDnsmasq = spawnSync('dnsmasq', ['--version']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'fulcrum-dnsmasq-'));

/** A port free now for UDP and for TCP (dnsmasq binds both; it takes a number, not 0). */
async function freePort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(() => resolve()));
  const server = net.createServer();
  const free = await new Promise<boolean>((resolve) => {
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (free) await new Promise<void>((resolve) => server.close(() => resolve()));
  return free ? port : freePort();
}

/**
 * dnsmasq answering every name under fulcrum.test with `address`, and nothing else (no
 * upstream, no hosts file). Another process may take the port between the check and dnsmasq's
 * bind (the suite runs in parallel): then dnsmasq exits, and another port is tried.
 */
async function dnsmasq(t: { teardown(fn: () => unknown): void }, n: number, address: string) {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const server = spawn(
      'dnsmasq',
      [
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        `--port=${port}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        '--no-resolv',
        '--no-hosts',
        `--address=/fulcrum.test/${address}`,
        `--pid-file=${join(dir, `dnsmasq-${n}.pid`)}`,
        ...(process.getuid?.() === 0 ? ['--user=root'] : []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    server.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    t.teardown(() => server.kill('SIGKILL'));
    const direct = new Resolver({ timeout: 200, tries: 1 });
    direct.setServers([`127.0.0.1:${port}`]);
    const up = await eventually(
      async () =>
        server.exitCode !== null ||
        (await direct.resolve4('api.fulcrum.test').then(
          () => true,
          () => false,
        )),
      10_000,
      `dnsmasq ${n} to answer`,
    ).then(() => server.exitCode === null);
    if (up) return port;
    if (attempt >= 3) throw new Error(`dnsmasq ${n} exited: ${stderr.trim()}`);
  }
}

t.test(
  'dns.Resolver through fulcrum to two dnsmasq instances',
  // CI installs dnsmasq-base (.ci/run) and so always runs this; elsewhere it needs
  // `apt-get install dnsmasq-base`.
  { skip: hasDnsmasq || process.env.CI === 'true' ? false : 'dnsmasq is not installed' },
  async (t) => {
    const ports = [await dnsmasq(t, 1, '127.0.0.9'), await dnsmasq(t, 2, '127.0.0.9')];
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--listen',
      '127.0.0.1:0,udp',
      '--stats-socket',
      stats,
      // One answer per query, and each query a session of its own (c-ares sends them all from
      // one port): every query is balanced, and its session ends at its answer.
      '--udp-responses',
      '1',
      '--udp-requests',
      '1',
      '--algorithm',
      'round-robin',
      '--health-send',
      // A query for api.fulcrum.test, A record (id 0x4655), as the health probe's one datagram.
      '\\x46\\x55\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x03api\\x07fulcrum\\x04test\\x00\\x00\\x01\\x00\\x01',
      '--health-expect',
      '\\x7f\\x00\\x00\\x09',
      '--health-interval',
      '200ms',
      ...ports.flatMap((port) => ['--backend', `127.0.0.1:${port}`]),
    ]);
    t.teardown(() => fulcrum.stop());
    await eventually(
      async () => (await showStat(stats))[0].backends.every((b) => b.check?.result === 'expect ok'),
      5000,
      'both dnsmasq instances to pass the DNS health probe',
    );
    const resolver = new Resolver({ timeout: 1000, tries: 2 });
    resolver.setServers([`127.0.0.1:${fulcrum.port}`]);
    // Forty names: c-ares caches answers and merges equal queries, so each is asked once.
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, k) => resolver.resolve4(`n${k}.fulcrum.test`)),
    );
    t.ok(
      answers.every((a) => a.length === 1 && a[0] === '127.0.0.9'),
      'every answer is 127.0.0.9',
    );
    // A name they do not serve: their refusal comes back through fulcrum as it is.
    await t.rejects(resolver.resolve4('nothing.example'), { code: 'EREFUSED' });
    const [frontend] = await showStat(stats);
    for (const b of frontend.backends) t.ok(b.total >= 10, `${b.name} answered ${b.total}`);
    await eventually(
      async () => {
        const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
        return info.connections_now === 0 && heldUdpSockets(fulcrum.proc.pid as number) <= 2;
      },
      3000,
      'sessions back at zero',
    );
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    t.ok(info.ended_responded >= 41, `sessions ended at their answer (${info.ended_responded})`);
    t.equal(info.ended_timeout, 0, 'none waited for the idle timeout');
  },
);
