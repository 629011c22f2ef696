// More than one fulcrum, on test hosts in network namespaces made by the test (test/netns.ts):
// active-active behind a router's ECMP route, with Maglev so that a client reaches the same
// backend through either balancer; and active-passive with keepalived moving a virtual IP when
// `fulcrum ready` fails (a crash) or goes not ready (a planned stop with --grace). Every address
// is in 10.250.17.0/24, which exists only inside the namespaces. Skips with one line without
// root, iproute2 or keepalived, except under CI.

import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import { BIN, eventually } from '../helpers.ts';
import { Lab, onLines, skipUnlessAble } from '../netns.ts';

const BACKEND = fileURLToPath(new URL('../fixtures/ns-backend.ts', import.meta.url));
const CLIENT = fileURLToPath(new URL('../fixtures/ns-client.ts', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'fulcrum-ha-'));
const NET = '10.250.17';
const VIP = `${NET}.200`;
const PORT = 8000;
const BACKEND_PORT = 9000;

/** Backends be1..beN on the balancers' segment, each greeting with its name. */
async function startBackends(lab: Lab, hosts: string[]): Promise<void> {
  await Promise.all(
    hosts.map(
      (host) =>
        new Promise<void>((resolve, reject) => {
          const child = lab.spawn(host, process.execPath, [BACKEND, String(BACKEND_PORT), host]);
          onLines(child, (line) => {
            if (line === 'listening') resolve();
          });
          child.once('exit', (code) => reject(new Error(`backend ${host} exited ${code}`)));
        }),
    ),
  );
}

/** fulcrum in `host`'s namespace with `config` (workers 1, a stats socket): ready when it says so. */
async function startBalancer(
  lab: Lab,
  host: string,
  config: Record<string, unknown>,
): Promise<{ proc: ChildProcess; stats: string; logs: string[] }> {
  const stats = join(dir, `${lab.prefix}-${host}.sock`);
  const path = join(dir, `${lab.prefix}-${host}.json`);
  writeFileSync(path, JSON.stringify({ workers: 1, statsSocket: stats, ...config }));
  const proc = lab.spawn(host, process.execPath, [BIN, '--config', path]);
  const logs: string[] = [];
  onLines(proc, (line) => logs.push(line));
  proc.stderr?.on('data', (chunk: Buffer) => logs.push(chunk.toString()));
  await eventually(
    async () => {
      if (proc.exitCode !== null) throw new Error(`fulcrum in ${host} exited: ${logs.join('')}`);
      const info = await query(stats, 'show info json').catch(() => null);
      return info !== null && (JSON.parse(info) as { ready: string }).ready === 'yes';
    },
    15_000,
    `fulcrum in ${host} to be ready`,
  );
  return { proc, stats, logs };
}

/** The client's JSON lines, collected; `next` waits for one that `match` accepts. */
function collect(child: ChildProcess) {
  const lines: Array<Record<string, unknown>> = [];
  const waiters: Array<() => void> = [];
  onLines(child, (line) => {
    lines.push(JSON.parse(line) as Record<string, unknown>);
    for (const wake of waiters.splice(0)) wake();
  });
  return {
    lines,
    async next(match: (l: Record<string, unknown>) => boolean, ms: number, what: string) {
      const until = Date.now() + ms;
      for (;;) {
        const found = lines.find(match);
        if (found !== undefined) return found;
        if (Date.now() > until || child.exitCode !== null) throw new Error(`no ${what}`);
        await new Promise<void>((resolve) => {
          waiters.push(resolve);
          setTimeout(resolve, 100);
        });
      }
    },
  };
}

/** A connection from each of `from`, in turn, through `lab`'s client: the greeting of each. */
async function flows(lab: Lab, from: string[]): Promise<Map<string, string | null>> {
  const child = lab.spawn('cl', process.execPath, [CLIENT, 'flows', VIP, String(PORT), ...from]);
  const out = collect(child);
  await out.next((l) => l.done === true, 20_000, 'end of the flows');
  return new Map(
    out.lines.filter((l) => 'from' in l).map((l) => [l.from as string, l.name as string | null]),
  );
}

async function accepted(stats: string): Promise<number> {
  return (JSON.parse(await query(stats, 'show info json')) as { connections_total: number })
    .connections_total;
}

t.test(
  'ECMP, active-active: both balancers take flows, and a client meets the same backend through either',
  async (t) => {
    if (skipUnlessAble(t)) return;
    const lab = new Lab();
    t.teardown(() => lab.remove());
    // Clients 10.250.17.0/26 | router | balancers and backends 10.250.17.64/26.
    for (const host of ['s1', 's2', 'cl', 'rt', 'lb1', 'lb2', 'be1', 'be2', 'be3']) {
      lab.addHost(host);
    }
    lab.addBridge('s1');
    lab.addBridge('s2');
    lab.plug('cl', 'eth0', `${NET}.10/26`, 's1');
    const sources = Array.from({ length: 50 }, (_, i) => `${NET}.${11 + i}`);
    for (const address of sources)
      lab.run(lab.ns('cl'), 'ip', 'addr', 'add', `${address}/26`, 'dev', 'eth0');
    lab.run(lab.ns('cl'), 'ip', 'route', 'add', 'default', 'via', `${NET}.1`);
    lab.plug('rt', 'eth0', `${NET}.1/26`, 's1');
    lab.plug('rt', 'eth1', `${NET}.65/26`, 's2');
    lab.sysctl('rt', 'net.ipv4.ip_forward=1');
    lab.sysctl('rt', 'net.ipv4.fib_multipath_hash_policy=1');
    const lbs = { lb1: `${NET}.66`, lb2: `${NET}.67` };
    for (const [host, address] of Object.entries(lbs)) {
      lab.plug(host, 'eth0', `${address}/26`, 's2');
      lab.run(lab.ns(host), 'ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
      lab.run(lab.ns(host), 'ip', 'route', 'add', 'default', 'via', `${NET}.65`);
    }
    const backends = ['be1', 'be2', 'be3'];
    for (const [i, host] of backends.entries()) {
      lab.plug(host, 'eth0', `${NET}.${70 + i}/26`, 's2');
    }
    await startBackends(lab, backends);
    // The same config on both: Maglev over the same names gives the same table.
    const config = {
      frontends: [
        {
          name: 'vip',
          listen: [`${VIP}:${PORT}`],
          algorithm: 'maglev',
          hashKey: 'source-ip',
          health: { interval: '200ms' },
          backends: backends.map((host, i) => `${NET}.${70 + i}:${BACKEND_PORT},name=${host}`),
        },
      ],
    };
    const [one, two] = await Promise.all([
      startBalancer(lab, 'lb1', config),
      startBalancer(lab, 'lb2', config),
    ]);
    const route = (...via: string[]) =>
      lab.run(
        lab.ns('rt'),
        'ip',
        'route',
        'replace',
        `${VIP}/32`,
        ...via.flatMap((v) => (via.length === 1 ? ['via', v] : ['nexthop', 'via', v])),
      );

    // Each balancer alone, in turn: the same backend for every client address.
    route(lbs.lb1);
    const through1 = await flows(lab, sources);
    route(lbs.lb2);
    const through2 = await flows(lab, sources);
    t.equal(
      [...through1.values()].filter((n) => n !== null).length,
      50,
      'every flow served by lb1',
    );
    t.same(
      through2,
      through1,
      'through lb2, each client address meets the same backend as through lb1',
    );
    t.equal(new Set(through1.values()).size, 3, 'the clients spread over the three backends');

    // Both at once, ECMP: 200 flows (each address four times) share out, same backends.
    route(lbs.lb1, lbs.lb2);
    const before = [await accepted(one.stats), await accepted(two.stats)];
    const all = Array.from({ length: 4 }, () => sources).flat();
    const child = lab.spawn('cl', process.execPath, [CLIENT, 'flows', VIP, String(PORT), ...all]);
    const out = collect(child);
    await out.next((l) => l.done === true, 30_000, 'end of the 200 flows');
    const served = out.lines.filter((l) => 'from' in l);
    t.equal(served.length, 200);
    t.equal(
      served.filter((l) => l.name === through1.get(l.from as string)).length,
      200,
      'every ECMP flow meets the backend its address meets through either balancer',
    );
    const shares = [
      (await accepted(one.stats)) - before[0],
      (await accepted(two.stats)) - before[1],
    ];
    t.ok(shares[0] > 0 && shares[1] > 0, `both balancers take flows (${shares.join(' + ')})`);
    t.equal(shares[0] + shares[1], 200);
    t.comment(`ECMP over two fulcrums: ${shares[0]} and ${shares[1]} of 200 flows`);

    // lb1's route goes away: its clients go through lb2, to the same backends.
    route(lbs.lb2);
    t.same(
      await flows(lab, sources),
      through1,
      'with lb1 gone, each client meets its backend still',
    );
  },
);

/** Polls `check` (which runs a process: `ip addr`) every 100 ms until it holds; rejects after
 *  `ms`. */
async function waitUntil(check: () => boolean, ms: number, what: string): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** keepalived for `host` (VRRP over unicast to `peer`), moving VIP on eth0 and following
 *  `fulcrum ready` every second: the config of examples/ha/keepalived.conf, filled in. */
function keepalivedConfig(
  host: string,
  self: string,
  peer: string,
  priority: number,
  stats: string,
): string {
  return `global_defs {
  router_id ${host}
  script_user root
  # VRRPv3: adverts every 200 ms, so a takeover without a FAULT (the first election, a preempt)
  # takes 0.6 s, not 3.
  vrrp_version 3
}
vrrp_script fulcrum_ready {
  script "${process.execPath} ${BIN} ready --socket ${stats}"
  interval 1
  timeout 2
  fall 1
  rise 1
}
vrrp_instance fulcrum {
  state ${priority === 254 ? 'MASTER' : 'BACKUP'}
  interface eth0
  virtual_router_id 51
  priority ${priority}
  advert_int 0.2
  unicast_src_ip ${self}
  unicast_peer {
    ${peer}
  }
  virtual_ipaddress {
    ${VIP}/24 dev eth0
  }
  track_script {
    fulcrum_ready
  }
}
`;
}

t.test(
  'VRRP, active-passive: keepalived moves the address when the active fulcrum dies, and a planned stop with --grace loses none but one caught mid-handshake as it moves',
  async (t) => {
    if (skipUnlessAble(t, ['keepalived'])) return;
    const lab = new Lab();
    t.teardown(() => lab.remove());
    for (const host of ['sw', 'cl', 'lb1', 'lb2', 'be1', 'be2']) lab.addHost(host);
    lab.addBridge('sw');
    lab.plug('cl', 'eth0', `${NET}.10/24`, 'sw');
    const lbs: Record<string, string> = { lb1: `${NET}.2`, lb2: `${NET}.3` };
    for (const [host, address] of Object.entries(lbs)) {
      lab.plug(host, 'eth0', `${address}/24`, 'sw');
      // The address is local on both (on lo), so each listens on it and can still answer on
      // it while the address moves; only the one keepalived gives it to (on eth0) answers ARP
      // for it (arp_ignore 1: only for addresses of the interface asked on).
      lab.run(lab.ns(host), 'ip', 'addr', 'add', `${VIP}/32`, 'dev', 'lo');
      lab.sysctl(host, 'net.ipv4.conf.all.arp_ignore=1');
      lab.sysctl(host, 'net.ipv4.conf.all.arp_announce=2');
    }
    lab.plug('be1', 'eth0', `${NET}.21/24`, 'sw');
    lab.plug('be2', 'eth0', `${NET}.22/24`, 'sw');
    await startBackends(lab, ['be1', 'be2']);
    const configFor = (host: string) => ({
      grace: '3s',
      // A connection whose client's next packets go to the other balancer once the address
      // has moved is never closed here: the drain ends it.
      drainTimeout: '2s',
      frontends: [
        {
          name: 'vip',
          // The virtual address, and the balancer's own (to show its connections are its own).
          listen: [`${VIP}:${PORT}`, `${lbs[host]}:${PORT}`],
          health: { interval: '200ms' },
          backends: [`${NET}.21:${BACKEND_PORT},name=be1`, `${NET}.22:${BACKEND_PORT},name=be2`],
        },
      ],
    });
    const balancers: Record<string, { proc: ChildProcess; stats: string }> = {};
    const vrrpLog: string[] = [];
    /** When each balancer's keepalived said it became master, by when its line arrived here. */
    const masterAt: Record<string, number[]> = { lb1: [], lb2: [] };
    for (const host of ['lb1', 'lb2'])
      balancers[host] = await startBalancer(lab, host, configFor(host));
    // Not ready (or dead): the script fails and the master goes FAULT, telling the backup with a
    // priority 0 advert; the backup takes over after its skew time, (256 - priority) / 256 s:
    // 23 ms at 250.
    for (const [host, priority] of [
      ['lb1', 254],
      ['lb2', 250],
    ] as const) {
      const peer = host === 'lb1' ? lbs.lb2 : lbs.lb1;
      const conf = join(dir, `${lab.prefix}-${host}-keepalived.conf`);
      writeFileSync(conf, keepalivedConfig(host, lbs[host], peer, priority, balancers[host].stats));
      const run = join(dir, `${lab.prefix}-${host}`);
      const keepalived = lab.spawn(host, 'keepalived', [
        '--dont-fork',
        '--log-console',
        '--vrrp',
        '--use-file',
        conf,
        '--pid',
        `${run}.pid`,
        '--vrrp_pid',
        `${run}-vrrp.pid`,
      ]);
      for (const stream of [keepalived.stdout, keepalived.stderr]) {
        stream?.on('data', (chunk: Buffer) => {
          const text = chunk.toString();
          if (text.includes('Entering MASTER STATE')) masterAt[host].push(Date.now());
          vrrpLog.push(`${host}: ${text.trim()}`);
        });
      }
    }
    t.teardown(() => {
      if (t.passing()) return;
      t.comment(vrrpLog.join('\n'));
    });
    const holds = (host: string) =>
      lab.run(lab.ns(host), 'ip', 'addr', 'show', 'eth0').includes(`${VIP}/24`);
    await waitUntil(() => holds('lb1'), 15_000, 'lb1 to hold the virtual address');

    // Connections held on lb2's own address, and new ones through the virtual address every 20 ms.
    const held = lab.spawn('cl', process.execPath, [CLIENT, 'hold', lbs.lb2, String(PORT), '5']);
    const hold = collect(held);
    await hold.next((l) => l.held === 5, 10_000, '5 connections held on lb2');
    // Each connect may take 3 s, a usual connect timeout: a SYN lost while the address moves is
    // sent again by TCP after 1 s, and that is a slow connect, not a failed one.
    const probe = lab.spawn('cl', process.execPath, [
      CLIENT,
      'probe',
      VIP,
      String(PORT),
      '20',
      '3000',
    ]);
    const probes = collect(probe);
    await probes.next(
      (l) => l.ok === true,
      10_000,
      'a first connection through the virtual address',
    );

    // The active fulcrum dies.
    const killedAt = Date.now();
    await lab.kill(balancers.lb1.proc, 'SIGKILL');
    // A connection that starts once lb1's fulcrum is gone and works went through lb2.
    const deadAt = Date.now();
    const back = await probes.next(
      (l) => (l.at as number) > deadAt && l.ok === true,
      10_000,
      'a connection through lb2 after the kill',
    );
    t.ok(holds('lb2'), 'lb2 holds the address');
    const takeover = (back.at as number) - killedAt;
    const failed = probes.lines.filter(
      (l) => (l.at as number) >= killedAt && l.ok === false,
    ).length;
    t.ok(takeover <= 4000, `new connections work again through lb2 within 4 s (${takeover} ms)`);
    t.comment(
      `VRRP takeover after kill -9 of the active fulcrum: ${takeover} ms, ${failed} connects failed meanwhile`,
    );
    held.stdin?.write('check\n');
    t.same(
      await hold.next((l) => 'echoed' in l, 5000, 'the held connections checked'),
      { held: 5, echoed: 5 },
      "lb2's established connections are untouched",
    );

    // lb1's fulcrum comes back; the address comes back to it (priority 254); then a planned stop.
    balancers.lb1 = await startBalancer(lab, 'lb1', configFor('lb1'));
    await waitUntil(() => holds('lb1'), 15_000, 'lb1 to take the address back');
    const lb1 = balancers.lb1.stats;
    await eventually(async () => (await accepted(lb1)) >= 5, 10_000, 'traffic through lb1 again');
    const stopAt = Date.now();
    const exited = new Promise((resolve) => balancers.lb1.proc.once('exit', resolve));
    process.kill(balancers.lb1.proc.pid as number, 'SIGTERM');
    t.equal(await exited, 0, 'lb1 stops after its grace period and drain');
    await waitUntil(() => holds('lb2') && !holds('lb1'), 5000, 'lb2 to hold the address');
    // Every attempt made so far is counted once it has ended, however long it took.
    probe.stdin?.write('stop\n');
    await probes.next((l) => l.stopped === true, 5000, 'the last attempts to end');
    const attempts = probes.lines.filter((l) => 'ok' in l && (l.at as number) >= stopAt);
    const lost = attempts.filter((l) => l.ok === false);
    const slowest = Math.max(...attempts.map((l) => l.ms as number));
    // The one loss a planned stop cannot prevent: a connection mid-handshake when the address
    // moves. Its next packet (the client's ACK) reaches lb2, whose kernel knows no such
    // connection and resets it; only connection-state sync (conntrackd) would save it. Any other
    // failure (refused, timed out, or reset away from the switch) is the balancer's fault.
    const switched = masterAt.lb2.find((at) => at >= stopAt);
    t.ok(switched !== undefined, 'lb2 said it became master after the stop');
    const atSwitch = (l: Record<string, unknown>) =>
      l.name === 'ECONNRESET' &&
      (l.at as number) <= (switched as number) + 250 &&
      (l.at as number) + (l.ms as number) >= (switched as number) - 250;
    const inFlight = lost.filter(atSwitch);
    t.comment(
      `VRRP planned stop (SIGTERM, --grace 3s): ${attempts.length} new connections, ${lost.length} failed (${inFlight.length} mid-handshake as the address moved), slowest ${slowest} ms`,
    );
    t.same(
      lost.filter((l) => !atSwitch(l)),
      [],
      `a planned stop with --grace 3s: of ${attempts.length} new connections, none failed but one caught mid-handshake by the address moving`,
    );
    t.ok(inFlight.length <= 2, `at most a couple caught by the move (${inFlight.length})`);
  },
);
