// UDP frontends end to end, with real datagram sockets on 127.0.0.1 and ::1: a client
// address:port keeps its backend, many spread, replies leave from the address the client sent
// to, sessions end at the idle timeout, after their replies (--udp-responses) and per datagram
// (--udp-requests), the session cap and oversize datagrams are dropped and counted, a killed
// backend (ICMP port unreachable) is left and its sessions move, and two workers share the
// clients. Every scenario ends with the live counts, and the session sockets the kernel sees, at
// zero.

import { spawnSync } from 'node:child_process';
import type dgram from 'node:dgram';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  BIN,
  eventually,
  type Fulcrum,
  showStat,
  socketPath,
  startFulcrum,
  waitFor,
} from '../helpers.ts';
import {
  answeredBy,
  ask,
  askUntilAnswered,
  heldUdpSockets,
  listeningUdpSockets,
  type UdpBackend,
  udpBackend,
  udpClient,
} from '../udp.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-udp-'));
let files = 0;

function writeConfig(text: string): string {
  const path = join(dir, `c${files++}.yaml`);
  writeFileSync(path, text);
  return path;
}

/** Sessions, live counts and held places at zero, and no session socket left in the kernel. */
async function settledUdp(stats: string, fulcrum: Fulcrum): Promise<void> {
  await eventually(
    async () => {
      const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
      const frontends = await showStat(stats);
      return (
        info.connections_now === 0 &&
        frontends.every((f) => f.live === 0 && f.backends.every((b) => b.active === 0)) &&
        heldUdpSockets(fulcrum.proc.pid as number) === 0
      );
    },
    5000,
    'sessions back at zero',
  );
}

async function closeAll(sockets: dgram.Socket[]): Promise<void> {
  await Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
}

t.test(
  'sessions: pinning, spreading, replies, timeouts, responses, requests, limits',
  async (t) => {
    const b1 = await udpBackend('b1');
    const b2 = await udpBackend('b2');
    const b3 = await udpBackend('b3', { host: '::1' });
    const slow = await udpBackend('slow', { delayMs: 100 });
    const stats = socketPath();
    const config = writeConfig(`
workers: 1
statsSocket: ${stats}
metrics: 127.0.0.1:0
log: { access: true }
frontends:
  - name: main
    listen: ["127.0.0.1:0,udp", "[::1]:0,udp"]
    udp: { idleTimeout: 600ms }
    health: false
    backends: [${b1.address}, ${b2.address}, "${b3.address}"]
  - name: dns
    listen: ["127.0.0.1:0,udp"]
    udp: { responses: 1 }
    health: false
    backends: [${slow.address}]
  - name: spread
    listen: ["127.0.0.1:0,udp"]
    udp: { requests: 1, responses: 1 }
    algorithm: round-robin
    health: false
    backends: [${b1.address}, ${b2.address}]
  - name: by-address
    listen: ["127.0.0.1:0,udp"]
    algorithm: maglev
    udp: { responses: 1 }
    health: false
    backends: [${b1.address}, ${b2.address}]
  - name: by-port
    listen: ["127.0.0.1:0,udp"]
    algorithm: maglev
    hashKey: source-ip-port
    udp: { responses: 1 }
    health: false
    backends: [${b1.address}, ${b2.address}]
  - name: limits
    listen: ["127.0.0.1:0,udp"]
    udp: { maxSessions: 3, maxDatagram: 100, idleTimeout: 10s }
    health: false
    backends: [${b1.address}]
`);
    const fulcrum = await startFulcrum(['--config', config]);
    t.teardown(async () => {
      await fulcrum.stop();
      for (const b of [b1, b2, b3, slow]) await b.close();
    });
    const [v4, v6] = fulcrum.ports.main;
    t.match(
      fulcrum.logs.find((l) => l.msg === 'listening' && l.frontend === 'main')?.listen,
      [`127.0.0.1:${v4},udp`, `[::1]:${v6},udp`],
      'the listening line says udp',
    );

    t.test('a client port keeps its backend for 100 datagrams, on IPv4 and IPv6', async (t) => {
      for (const [host, port] of [
        ['127.0.0.1', v4],
        ['::1', v6],
      ] as const) {
        const client = await udpClient(host);
        const names = new Set<string>();
        for (let k = 0; k < 100; k++) {
          const answer = await ask(client, port, `q${k}`);
          t.equal(answer.text.slice(answer.text.indexOf(':') + 1), `q${k}`, 'the answer to it');
          // From the very address and port the client sent to, not a session's own socket.
          if (answer.from.address !== host || answer.from.port !== port) {
            t.fail(`answer from ${answer.from.address}:${answer.from.port}`);
          }
          names.add(answeredBy(answer));
        }
        t.equal(names.size, 1, `${host}: one backend for all 100 (${[...names]})`);
        await closeAll([client]);
      }
    });

    t.test('1,000 client ports spread over the backends', async (t) => {
      const clients = await Promise.all(Array.from({ length: 1000 }, () => udpClient()));
      // Asked again after a second without an answer, as a resolver does: a thousand datagrams at
      // once can overflow a socket's receive queue on a loaded machine, and UDP drops them.
      const answers = await Promise.all(
        clients.map((c, k) => askUntilAnswered(c, v4, `c${k}`, 5, 1000)),
      );
      const by = new Map<string, number>();
      for (const answer of answers)
        by.set(answeredBy(answer), (by.get(answeredBy(answer)) ?? 0) + 1);
      // Least-connections over live sessions: a third each, give or take the ones from before.
      for (const name of ['b1', 'b2', 'b3']) {
        t.ok((by.get(name) ?? 0) >= 300, `${name} took ${by.get(name)} of 1000`);
      }
      const [main] = (await showStat(stats)).filter((f) => f.name === 'main');
      t.ok(main.live >= 1000, `1000 sessions live (${main.live})`);
      t.equal(main.protocol, 'udp');
      t.ok((main.udp?.datagramsIn ?? 0) >= 1000, 'datagrams in counted');
      await closeAll(clients);
    });

    t.test('sessions end at the idle timeout; the gauge returns to zero', async (t) => {
      await settledUdp(stats, fulcrum);
      // The access log is written by the worker as the sessions end: its lines may trail the
      // counters by a moment.
      // As many sessions as the counter says started: a client of the spreading test may draw
      // the port a closed client of the test before had while its session still lived, and so
      // join that session rather than start one.
      const [{ accepted }] = (await showStat(stats)).filter((f) => f.name === 'main');
      t.ok(accepted >= 1001, `sessions started (${accepted})`);
      const main = () => fulcrum.logs.filter((l) => l.msg === 'session' && l.frontend === 'main');
      await waitFor(
        () => main().length >= accepted,
        3000,
        () => `a line for every session (${main().length} of ${accepted})`,
      );
      const ends = new Map<unknown, number>();
      for (const l of main()) {
        ends.set(l.end, (ends.get(l.end) ?? 0) + 1);
      }
      t.same(Object.fromEntries(ends), { timeout: accepted }, 'every session ended by the timeout');
      const line = main()[0];
      t.match(line, { protocol: 'udp', frontend: 'main', datagramsIn: Number, bytesOut: Number });
      t.ok(Number(line.durationMs) >= 600, `ended after the idle timeout (${line.durationMs} ms)`);
      const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
      t.ok(info.ended_timeout >= accepted, 'ended_timeout in show info');
    });

    t.test('--udp-responses 1: the session ends at its reply, both of two in flight', async (t) => {
      const [port] = fulcrum.ports.dns;
      const client = await udpClient();
      const started = performance.now();
      const answer = await ask(client, port, 'one');
      const took = performance.now() - started;
      t.equal(answer.text, 'slow:one');
      const line = fulcrum.logs.find((l) => l.msg === 'session' && l.frontend === 'dns');
      await waitFor(
        () => fulcrum.logs.some((l) => l.msg === 'session' && l.frontend === 'dns'),
        2000,
        'the session line',
      );
      const ended = line ?? fulcrum.logs.find((l) => l.msg === 'session' && l.frontend === 'dns');
      t.equal(ended?.end, 'responded');
      // The session lasted as long as the answer took, not a moment more: freed at the reply.
      t.ok(
        Number(ended?.durationMs) <= took + 50,
        `ended ${ended?.durationMs} ms after it began; the answer took ${took.toFixed(1)} ms`,
      );
      // Two queries in flight from one port: both answered, then the session ends.
      const got: string[] = [];
      const both = new Promise<void>((resolve) => {
        client.on('message', (m) => {
          got.push(m.toString());
          if (got.length === 2) resolve();
        });
      });
      client.send('two', port, '127.0.0.1');
      client.send('three', port, '127.0.0.1');
      await both;
      t.same(got.sort(), ['slow:three', 'slow:two']);
      await waitFor(
        () =>
          fulcrum.logs.some(
            (l) => l.msg === 'session' && l.frontend === 'dns' && l.datagramsIn === 2,
          ),
        2000,
        'the two-query session to end',
      );
      await closeAll([client]);
      await settledUdp(stats, fulcrum);
    });

    t.test("--udp-requests 1: one client's datagrams are balanced one by one", async (t) => {
      const [port] = fulcrum.ports.spread;
      const client = await udpClient();
      const by = new Map<string, number>();
      for (let k = 0; k < 20; k++) {
        const name = answeredBy(await ask(client, port, `d${k}`));
        by.set(name, (by.get(name) ?? 0) + 1);
      }
      t.same(Object.fromEntries(by), { b1: 10, b2: 10 }, 'round-robin per datagram');
      await closeAll([client]);
      await settledUdp(stats, fulcrum);
    });

    t.test('Maglev hashes the client address, or its address and port', async (t) => {
      const clients = await Promise.all(Array.from({ length: 40 }, () => udpClient()));
      const spread = async (frontend: string) => {
        const [port] = fulcrum.ports[frontend];
        const first: string[] = [];
        for (const client of clients) first.push(answeredBy(await ask(client, port, 'h')));
        // Again: each client meets the backend it met, though every session ended at its reply.
        for (const [k, client] of clients.slice(0, 10).entries()) {
          const again = answeredBy(await ask(client, port, 'h'));
          if (again !== first[k]) t.fail(`${frontend}: client ${k} met ${first[k]}, then ${again}`);
        }
        return new Set(first);
      };
      t.equal((await spread('by-address')).size, 1, 'one address: one backend for every port');
      t.equal((await spread('by-port')).size, 2, 'address and port: both backends');
      await closeAll(clients);
      await settledUdp(stats, fulcrum);
    });

    t.test('drain keeps its sessions; disable moves them', async (t) => {
      const pinned = await udpClient();
      const first = answeredBy(await ask(pinned, v4, 'a'));
      const backend = [b1, b2, b3].find((b) => b.name === first) as UdpBackend;
      t.match(await query(stats, `drain main/${backend.address}`), /draining/);
      for (let k = 0; k < 5; k++) {
        t.equal(answeredBy(await ask(pinned, v4, `d${k}`)), first, 'a drained backend keeps it');
      }
      const fresh = await Promise.all(Array.from({ length: 6 }, () => udpClient()));
      for (const client of fresh) {
        t.not(answeredBy(await ask(client, v4, 'n')), first, 'new sessions go elsewhere');
      }
      t.match(await query(stats, `disable main/${backend.address}`), /disabled/);
      t.not(answeredBy(await ask(pinned, v4, 'moved')), first, 'disabled: the session moves');
      t.match(await query(stats, `enable main/${backend.address}`), /enabled/);
      await closeAll([pinned, ...fresh]);
      await settledUdp(stats, fulcrum);
    });

    t.test('the session cap and oversize datagrams are dropped and counted', async (t) => {
      const [port] = fulcrum.ports.limits;
      const clients = await Promise.all(Array.from({ length: 5 }, () => udpClient()));
      const results = await Promise.allSettled(clients.map((c) => ask(c, port, 'x', 500)));
      t.equal(results.filter((r) => r.status === 'fulfilled').length, 3, 'three sessions served');
      // A datagram over --udp-max-datagram, from a client with a session: dropped, not cut short.
      await t.rejects(ask(clients[0], port, Buffer.alloc(101, 'y'), 300), /no answer/);
      t.equal(
        (await ask(clients[0], port, Buffer.alloc(100, 'z'))).text.length,
        103,
        '100 is fine',
      );
      const [limits] = (await showStat(stats)).filter((f) => f.name === 'limits');
      t.match(limits.udp?.dropped, { 'session-limit': 2, 'too-large': 1 });
      const text = await query(stats, 'show stat');
      t.match(text, /DGRAMS_IN/, 'show stat has a UDP table');
      t.match(text, /session-limit=2 too-large=1/, 'with the drops by reason');
      const info = await query(stats, 'show info json');
      t.equal(JSON.parse(info)['datagrams_dropped_session-limit'], 2);
      const url = String(fulcrum.logs.find((l) => l.msg === 'metrics')?.url);
      const metrics = (await (await fetch(url)).text()).split('\n');
      for (const line of [
        'fulcrum_udp_dropped_total{frontend="limits",reason="session-limit"} 2',
        'fulcrum_udp_dropped_total{frontend="limits",reason="too-large"} 1',
        'fulcrum_udp_sessions_current{frontend="limits"} 3',
        `fulcrum_backend_udp_datagrams_total{pool="limits",backend="${b1.address}",direction="in"} 4`,
      ]) {
        t.ok(metrics.includes(line), line);
      }
      const top = spawnSync(
        process.execPath,
        [BIN, 'top', '--socket', stats, '-n', '2', '-d', '200ms'],
        { encoding: 'utf8', timeout: 20_000 },
      );
      t.match(top.stdout, /limits 127\.0\.0\.1:\d+,udp .* 3 .* 3 dropped\s+\d+ dg\/s\s+\d+ dg\/s/);
      await closeAll(clients);
      // Their sessions end at the idle timeout (10 s): end them now by removing the backend's
      // sessions (del backend ... now).
      t.match(await query(stats, `del backend limits/${b1.address} now`), /deleted/);
      await settledUdp(stats, fulcrum);
    });
  },
);

t.test('a killed backend is left within fall x interval and its sessions move', async (t) => {
  const alive = await udpBackend('alive');
  let doomed: UdpBackend | null = await udpBackend('doomed');
  const stats = socketPath();
  const stateFile = join(dir, 'udp-state.json');
  const fulcrum = await startFulcrum([
    '--listen',
    '127.0.0.1:0,udp',
    '--stats-socket',
    stats,
    '--state-file',
    stateFile,
    '--algorithm',
    'round-robin',
    '--health-interval',
    '100ms',
    '--health-timeout',
    '300ms',
    '--fall',
    '2',
    '--backend',
    alive.address,
    '--backend',
    doomed.address,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await alive.close();
    await doomed?.close();
  });
  const clients = await Promise.all(Array.from({ length: 10 }, () => udpClient()));
  const first = await Promise.all(clients.map((c) => ask(c, fulcrum.port, 'before')));
  const pinned = clients.filter((_, k) => answeredBy(first[k]) === 'doomed');
  t.ok(pinned.length >= 4, `${pinned.length} clients pinned to the doomed backend`);
  await doomed.close();
  doomed = null;
  const killedAt = performance.now();
  const down = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no backend down line')), 3000);
    const check = setInterval(() => {
      if (fulcrum.logs.some((l) => l.msg === 'backend down')) {
        clearInterval(check);
        clearTimeout(timer);
        resolve(performance.now() - killedAt);
      }
    }, 5);
  });
  // fall x interval, plus one interval for where in its round the kill fell, and slack for a
  // loaded machine.
  t.ok(down <= 2 * 100 + 100 + 300, `down after ${down.toFixed(0)} ms`);
  t.match(
    fulcrum.logs.find((l) => l.msg === 'backend down'),
    { reason: 'udp refused' },
  );
  // Sessions pinned to it move on their next datagram; new clients go to the one left.
  for (const client of pinned) {
    t.equal(answeredBy(await askUntilAnswered(client, fulcrum.port, 'after', 3)), 'alive');
  }
  const fresh = await Promise.all(Array.from({ length: 6 }, () => udpClient()));
  for (const client of fresh) {
    t.equal(answeredBy(await ask(client, fulcrum.port, 'new')), 'alive', 'a new session');
  }
  const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
  t.ok(info['ended_backend-gone'] + info['ended_backend-refused'] >= pinned.length, 'moved');
  // A backend added at runtime takes new sessions (round-robin: every other one).
  const added = await udpBackend('added');
  t.teardown(() => added.close());
  t.match(await query(stats, `add backend default ${added.address}`), /added/);
  await eventually(
    async () =>
      (await showStat(stats))[0].backends.some((b) => b.name === added.address && b.state === 'up'),
    3000,
    'the added backend up',
  );
  const later = await Promise.all(Array.from({ length: 6 }, () => udpClient()));
  const names = await Promise.all(
    later.map(async (c) => answeredBy(await ask(c, fulcrum.port, 'x'))),
  );
  t.ok(names.includes('added'), `the added backend takes sessions (${names})`);
  // Kept in the state file like any pool's change.
  t.match(
    JSON.parse(readFileSync(stateFile, 'utf8')),
    { version: 3, pools: { default: { added: [added.address] } } },
    'the state file keeps it',
  );
  await closeAll([...clients, ...fresh, ...later]);
  t.match(await query(stats, `del backend default/${alive.address} now`), /deleted/);
  t.match(await query(stats, `del backend default/${added.address} now`), /deleted/);
  await settledUdp(stats, fulcrum);
});

t.test('two workers share the clients; reload and upgrade keep serving', async (t) => {
  const b1 = await udpBackend('b1');
  const b2 = await udpBackend('b2');
  const stats = socketPath();
  const frontend = (backends: string) => `
workers: 2
statsSocket: ${stats}
log: { access: true }
frontends:
  - name: dns
    listen: ["127.0.0.1:0,udp"]
    udp: { responses: 1 }
    health: false
    backends: [${backends}]
`;
  const config = writeConfig(frontend(b1.address));
  const fulcrum = await startFulcrum(['--config', config]);
  t.teardown(async () => {
    const serving = JSON.parse(await query(stats, 'show info json').catch(() => '{}')) as {
      pid?: number;
    };
    if (serving.pid !== undefined && serving.pid !== fulcrum.proc.pid) {
      process.kill(serving.pid, 'SIGTERM');
    }
    await fulcrum.stop();
    await b1.close();
    await b2.close();
  });
  const port = fulcrum.port;
  const clients = await Promise.all(Array.from({ length: 100 }, () => udpClient()));
  const round = async (tag: string) => {
    const answers = await Promise.all(clients.map((c) => askUntilAnswered(c, port, tag, 3, 1000)));
    return answers.map(answeredBy);
  };
  await round('one');
  await waitFor(
    () => fulcrum.logs.filter((l) => l.msg === 'session').length >= 100,
    3000,
    'session lines',
  );
  const workers = new Set(fulcrum.logs.filter((l) => l.msg === 'session').map((l) => l.worker));
  t.same([...workers].sort(), [0, 1], 'both workers had sessions');

  // Reload: a second backend joins; the same UDP sockets keep serving.
  writeFileSync(config, frontend(`${b1.address}, ${b2.address}`));
  fulcrum.proc.kill('SIGHUP');
  await eventually(
    async () => (await showStat(stats))[0].backends.length === 2,
    5000,
    'the reload',
  );
  const after = await round('two');
  t.ok(after.includes('b2'), 'the new backend takes sessions after the reload');

  // Upgrade: the successor takes the UDP sockets (same port) and answers.
  fulcrum.proc.kill('SIGUSR2');
  await waitFor(
    () => fulcrum.logs.some((l) => l.msg === 'upgrade: took over'),
    30_000,
    'the takeover',
  );
  const upgraded = await round('three');
  t.equal(upgraded.length, 100, 'every client answered through the successor');
  const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
  t.not(info.pid, fulcrum.proc.pid, 'the successor answers the stats socket');
  // The sockets were handed over, one per worker, not opened again beside them.
  t.equal(listeningUdpSockets(info.pid, port), 2, 'the successor holds two UDP sockets');
  await closeAll(clients);
  await eventually(
    async () => {
      const now = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
      return now.connections_now === 0 && heldUdpSockets(now.pid) === 0;
    },
    5000,
    'sessions back at zero in the successor',
  );
});
