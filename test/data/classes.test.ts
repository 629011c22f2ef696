// Frontends sharing one pool, end to end with two workers: the pool's counts are one (least-conn
// sees both frontends' clients, one health probe per backend per interval), a frontend's share
// bounds what it holds on each backend, and a freed slot goes to the waiting client of the lowest
// priority number, whichever frontend and worker it waits in. Real backends that greet and hold
// each client; every scenario ends with live, queued and per-frontend counts at zero.

import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { query } from '../../src/stats/client.ts';
import type { PoolStat } from '../../src/stats/view.ts';
import {
  type Backend,
  ended,
  eventually,
  greetThenEcho,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitFor,
} from '../helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-classes-'));

/** Backends that greet each client with their port and hold it until it ends its side; each
 *  notes when a connection came (health probes are connections too). */
async function holders(t: Test, count: number) {
  const arrivals: number[][] = [];
  const backends: Backend[] = [];
  for (let i = 0; i < count; i++) {
    const times: number[] = [];
    arrivals.push(times);
    backends.push(
      await startBackend((socket) => {
        times.push(performance.now());
        socket.write(`${socket.localPort}\n`);
        socket.resume();
        socket.on('end', () => socket.end());
      }),
    );
  }
  t.teardown(() => Promise.all(backends.map((b) => b.close())));
  return { backends, arrivals };
}

/** fulcrum with a pool of `backends` and the given frontends on it (two workers unless told:
 *  a worker thread costs a quarter of a CPU-second to start). */
async function startPool(
  t: Test,
  name: string,
  pool: Record<string, unknown>,
  frontends: Array<Record<string, unknown>>,
  workers = 2,
  extra: Record<string, unknown> = {},
) {
  const stats = socketPath();
  const path = join(dir, `${name}.json`);
  writeFileSync(
    path,
    JSON.stringify({
      workers,
      statsSocket: stats,
      ...extra,
      pools: [{ name: 'replicas', ...pool }],
      frontends: frontends.map((f) => ({ listen: ['127.0.0.1:0'], pool: 'replicas', ...f })),
    }),
  );
  const fulcrum = await startFulcrum(['--config', path]);
  t.teardown(() => fulcrum.stop());
  const port = (frontend: string) => fulcrum.ports[frontend][0];
  const metrics = () => fulcrum.logs.find((l) => l.msg === 'metrics')?.url as string | undefined;
  return { fulcrum, stats, port, metrics };
}

/** A client that connects and waits for its greeting; `greeted` resolves with the backend's
 *  port, or rejects when fulcrum closes it first. */
function client(port: number) {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  socket.on('error', () => {});
  const greeted = readLine(socket);
  greeted.catch(() => {});
  let served = false;
  void greeted.then(
    () => {
      served = true;
    },
    () => {},
  );
  return {
    socket,
    greeted,
    served: () => served,
    close: () => socket.destroy(),
  };
}
type Client = ReturnType<typeof client>;

async function poolsOf(stats: string): Promise<PoolStat[]> {
  return (JSON.parse(await query(stats, 'show stat json')) as { pools: PoolStat[] }).pools;
}

/** The number of clients a frontend has waiting, over every worker. */
async function queued(stats: string, frontend: string): Promise<number> {
  return (await showStat(stats)).find((f) => f.name === frontend)?.queued ?? -1;
}

t.test(
  'two frontends on one pool: one health probe per backend per interval, and least-conn counts both',
  async (t) => {
    const { backends, arrivals } = await holders(t, 3);
    const { stats, port } = await startPool(
      t,
      'shared',
      {
        algorithm: 'least-conn',
        health: { interval: '200ms', timeout: '150ms' },
        backends: backends.map((b) => b.address),
      },
      [{ name: 'a' }, { name: 'b' }],
      1,
    );
    // Probes only, for a while: each backend is asked once per interval, not once per frontend.
    const from = performance.now();
    const since = (times: number[]) => times.filter((at) => at >= from);
    await waitFor(
      () => arrivals.every((times) => since(times).length >= 5),
      10_000,
      'five probes of each backend',
    );
    const elapsed = performance.now() - from;
    for (const [i, times] of arrivals.entries()) {
      const probes = since(times);
      const gaps = probes.slice(1).map((at, k) => at - probes[k]);
      t.ok(
        probes.length <= elapsed / 200 + 2,
        `backend ${i}: at most one probe per 200 ms (${probes.length} in ${Math.round(elapsed)} ms)`,
      );
      t.ok(
        Math.min(...gaps) >= 100,
        `backend ${i}: no two probes at once (closest ${Math.round(Math.min(...gaps))} ms)`,
      );
    }

    // Two clients of a take two backends; b's first client goes to the third, which is free.
    const held: Client[] = [];
    const ports: string[] = [];
    for (const frontend of ['a', 'a', 'b']) {
      const c = client(port(frontend));
      held.push(c);
      ports.push(await c.greeted);
    }
    t.equal(new Set(ports).size, 3, `one client per backend, whichever frontend (${ports})`);
    // Three more of b: least-conn over both frontends' clients spreads them one per backend.
    for (let i = 0; i < 3; i++) {
      const c = client(port('b'));
      held.push(c);
      await c.greeted;
    }
    const [pool] = await poolsOf(stats);
    t.same(
      pool.backends.map((b) => b.active),
      [2, 2, 2],
      'two on each backend, both frontends counted together',
    );
    t.same(
      pool.backends.map((b) => b.held.a + b.held.b),
      [2, 2, 2],
      'each frontend counted on the backend it holds',
    );
    t.same(
      pool.backends.reduce((n, b) => n + b.held.a, 0),
      2,
    );
    for (const c of held) c.close();
    await settled(stats);
  },
);

t.test(
  'batch holds at most its share of each backend; interactive clients are served meanwhile; batch waits past its timeout are refused and counted',
  async (t) => {
    const { backends } = await holders(t, 3);
    const { stats, port } = await startPool(
      t,
      'share',
      { health: false, backends: backends.map((b) => `${b.address},maxconn=10`) },
      [{ name: 'interactive' }, { name: 'batch', share: 30, priority: 10, queueTimeout: '3s' }],
    );
    const clients: Client[] = [];
    for (let i = 0; i < 50; i++) clients.push(client(port('batch')));
    await eventually(
      async () => (await queued(stats, 'batch')) === 41,
      5000,
      '9 batch clients connected and 41 waiting',
    );
    let worstBatch = 0;
    let worstTotal = 0;
    const interactive: Client[] = [];
    const started = performance.now();
    while (performance.now() - started < 5000) {
      const [pool] = await poolsOf(stats);
      for (const b of pool.backends) {
        worstBatch = Math.max(worstBatch, b.held.batch);
        worstTotal = Math.max(worstTotal, b.active);
      }
      // One interactive client every 250 ms: 20 over the 5 s, next to batch's 9.
      if (interactive.length < (performance.now() - started) / 250) {
        interactive.push(client(port('interactive')));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    t.ok(worstBatch <= 3, `batch never held more than 3 on a backend (most: ${worstBatch})`);
    t.equal(worstBatch, 3, 'and did hold its share');
    t.ok(worstTotal <= 10, `no backend held more than 10 (most: ${worstTotal})`);
    const served = await Promise.allSettled(interactive.map((c) => c.greeted));
    t.equal(
      served.filter((s) => s.status === 'fulfilled').length,
      interactive.length,
      `every interactive client served (${interactive.length})`,
    );
    t.equal(await ended(stats, 'queue-timeout', 41), 41, 'the 41 batch clients that waited 3 s');
    t.equal(clients.filter((c) => c.served()).length, 9, 'nine batch clients were served');
    const stat = await showStat(stats);
    t.equal(stat.find((f) => f.name === 'interactive')?.accepted, interactive.length);
    for (const c of [...clients, ...interactive]) c.close();
    await settled(stats);
  },
);

t.test(
  'a freed slot goes to a waiting interactive client before any batch client that waited longer',
  async (t) => {
    const { backends } = await holders(t, 3);
    const { stats, port, metrics } = await startPool(
      t,
      'priority',
      { health: false, backends: backends.map((b) => `${b.address},maxconn=10`) },
      [
        { name: 'interactive', queueTimeout: '20s' },
        { name: 'batch', share: 30, priority: 10, queueTimeout: '20s' },
      ],
      2,
      { metrics: '127.0.0.1:0' },
    );
    // Interactive fills every slot.
    const holding: Client[] = [];
    for (let i = 0; i < 30; i++) holding.push(client(port('interactive')));
    await Promise.all(holding.map((c) => c.greeted));
    // Batch clients wait first; then, ten times over, an interactive client waits too and one
    // slot is freed. The slot and the waiters may be in either worker (the kernel spreads the
    // connections), so some of the ten free a slot in a worker where only batch clients wait.
    const batch: Client[] = [];
    for (let i = 0; i < 4; i++) batch.push(client(port('batch')));
    await eventually(async () => (await queued(stats, 'batch')) === 4, 5000, '4 batch waiting');
    // Who holds what and who waits, as show stat json and /metrics say it.
    const [pool] = await poolsOf(stats);
    t.same(pool.waiting, { '0': 0, '10': 4 }, 'waiting by priority');
    t.same(
      pool.backends.map((b) => b.held.interactive + b.held.batch),
      [10, 10, 10],
      'every slot held by interactive',
    );
    const page = await (await fetch(`${metrics()}`)).text();
    t.match(page, /^fulcrum_pool_queued\{pool="replicas",priority="10"\} 4$/m);
    t.match(page, /^fulcrum_pool_queued\{pool="replicas",priority="0"\} 0$/m);
    const held = [
      ...page.matchAll(
        /^fulcrum_backend_frontend_connections_current\{pool="replicas",backend="[^"]+",frontend="interactive"\} (\d+)$/gm,
      ),
    ];
    t.same(
      held.map((m) => Number(m[1])),
      [10, 10, 10],
      "each backend's interactive count on /metrics",
    );
    const waiting: Client[] = [];
    for (let i = 0; i < 10; i++) {
      waiting.push(client(port('interactive')));
      await eventually(
        async () => (await queued(stats, 'interactive')) === 1,
        5000,
        'an interactive client waiting',
      );
      holding[i].close();
      await waitFor(
        () => waiting.filter((c) => c.served()).length === i + 1,
        5000,
        `interactive client ${i + 1} served`,
      );
      t.equal(batch.filter((c) => c.served()).length, 0, `no batch client served (slot ${i + 1})`);
    }
    t.equal(await queued(stats, 'batch'), 4, 'the batch clients still wait');
    // With no interactive client waiting, freed slots go to batch.
    for (const c of holding) c.close();
    await waitFor(() => batch.every((c) => c.served()), 5000, 'the batch clients served');
    for (const c of [...holding, ...waiting, ...batch]) c.close();
    await settled(stats);
  },
);

t.test(
  'a reload moves frontends between pools, changes a share, drops a pool: established connections go on, counted on the pool that holds them',
  async (t) => {
    const a = await startBackend(greetThenEcho);
    const b = await startBackend(greetThenEcho);
    t.teardown(async () => {
      await a.close();
      await b.close();
    });
    const stats = socketPath();
    const path = join(dir, 'moves.json');
    const write = (
      pools: Array<Record<string, unknown>>,
      frontends: Array<Record<string, unknown>>,
    ) =>
      writeFileSync(
        path,
        JSON.stringify({
          workers: 1,
          statsSocket: stats,
          pools,
          frontends: frontends.map((f) => ({ listen: ['127.0.0.1:0'], ...f })),
        }),
      );
    const p1 = { name: 'p1', health: false, backends: [`${a.address},name=a,maxconn=10`] };
    const p2 = { name: 'p2', health: false, backends: [`${b.address},name=b,maxconn=10`] };
    write(
      [p1, p2],
      [
        { name: 'web', pool: 'p1' },
        { name: 'batch', pool: 'p1', share: 30 },
      ],
    );
    const fulcrum = await startFulcrum(['--config', path]);
    t.teardown(() => fulcrum.stop());
    // Ports are fixed at start: a reload keeps each frontend's listener.
    const web = fulcrum.ports.web[0];
    const bulk = fulcrum.ports.batch[0];
    const reload = async () => {
      const answer = await query(stats, 'reload');
      t.match(answer, /^reloaded/, answer);
    };
    const echoes = async (c: Client, text: string) => {
      c.socket.write(text);
      const got = await new Promise<string>((resolve) =>
        c.socket.once('data', (d: Buffer) => resolve(d.toString())),
      );
      return got === text;
    };
    const c1 = client(web);
    const c2 = client(bulk);
    t.equal(await c1.greeted, String(a.port));
    t.equal(await c2.greeted, String(a.port));

    // web moves to p2; batch's share changes from 30 to 50 (1 of 10 -> 5 of 10).
    write(
      [p1, p2],
      [
        { name: 'web', listen: [`127.0.0.1:${web}`], pool: 'p2' },
        { name: 'batch', listen: [`127.0.0.1:${bulk}`], pool: 'p1', share: 50 },
      ],
    );
    await reload();
    t.ok(await echoes(c1, 'still here'), 'the connection web made on p1 goes on');
    const c3 = client(web);
    t.equal(await c3.greeted, String(b.port), "web's new clients go to p2");
    const more = [client(bulk), client(bulk)];
    for (const c of more) t.equal(await c.greeted, String(a.port), 'batch takes its larger share');
    let pools = Object.fromEntries((await poolsOf(stats)).map((p) => [p.name, p]));
    t.equal(pools.p1.backends[0].active, 4, "p1 still counts web's old connection (and batch's 3)");
    t.same(pools.p1.frontends, ['batch']);
    t.equal(pools.p1.backends[0].held.batch, 3);
    t.equal(pools.p2.backends[0].held.web, 1);
    c1.close();
    await eventually(
      async () => (await poolsOf(stats)).find((p) => p.name === 'p1')?.backends[0].active === 3,
      5000,
      "web's old connection to leave p1",
    );

    // p1 goes: batch moves to p2; its connections on p1 go on.
    write(
      [p2],
      [
        { name: 'web', listen: [`127.0.0.1:${web}`], pool: 'p2' },
        { name: 'batch', listen: [`127.0.0.1:${bulk}`], pool: 'p2', share: 50 },
      ],
    );
    await reload();
    t.ok(await echoes(c2, 'and here'), "batch's connection on the dropped pool goes on");
    const c4 = client(bulk);
    t.equal(await c4.greeted, String(b.port), "batch's new clients go to p2");
    pools = Object.fromEntries((await poolsOf(stats)).map((p) => [p.name, p]));
    t.same(Object.keys(pools), ['p2', 'p1'], 'p1 is shown while it holds connections');
    t.same(pools.p1.frontends, [], 'by no frontend');
    t.equal(pools.p1.backends[0].active, 3, "batch's three connections on it");
    t.same(pools.p2.backends[0].held, { web: 1, batch: 1 });
    for (const c of [c2, c3, c4, ...more]) c.close();
    await settled(stats, fulcrum);
    await eventually(
      async () => (await poolsOf(stats)).length === 1,
      5000,
      'p1 to leave show stat after its last connection',
    );
    await waitFor(() => a.open.size === 0, 5000, 'every connection to the dropped pool to end');
  },
);

t.test(
  'admin commands name a shared pool (POOL/BACKEND), and the state file keeps its changes by pool',
  async (t) => {
    const { backends } = await holders(t, 2);
    const stats = socketPath();
    const stateFile = join(dir, 'admin-state.json');
    const path = join(dir, 'admin.json');
    writeFileSync(
      path,
      JSON.stringify({
        workers: 1,
        statsSocket: stats,
        stateFile,
        pools: [
          {
            name: 'replicas',
            health: false,
            backends: backends.map((b, i) => `${b.address},name=r${i}`),
          },
        ],
        frontends: [
          { name: 'chat', listen: ['127.0.0.1:0'], pool: 'replicas' },
          { name: 'bulk', listen: ['127.0.0.1:0'], pool: 'replicas', priority: 5 },
        ],
      }),
    );
    let fulcrum = await startFulcrum(['--config', path]);
    t.teardown(() => fulcrum.stop());
    t.equal(
      await query(stats, 'disable chat/r0'),
      'error: frontend chat uses pool replicas: name the pool',
    );
    t.equal(await query(stats, 'disable replicas/r0'), 'replicas/r0 disabled');
    for (const frontend of ['chat', 'bulk']) {
      const c = client(fulcrum.ports[frontend][0]);
      t.equal(
        await c.greeted,
        String(backends[1].port),
        `${frontend}: the disabled backend is skipped`,
      );
      c.close();
    }
    // The table names the pool's backends as admin commands do, under each frontend.
    const table = await query(stats, 'show stat');
    t.match(table, /^NAME\s+STATE\s+WEIGHT\s+ACTIVE\s+HELD\s+QUEUED/);
    t.match(table, /^chat \(127\.0\.0\.1:\d+, pool replicas, least-conn\)/m);
    t.match(table, /^bulk \(127\.0\.0\.1:\d+, pool replicas, priority 5, least-conn\)/m);
    t.equal(table.match(/^ {2}replicas\/r0\s+disabled/gm)?.length, 2, 'r0 under both frontends');
    const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
    t.equal(saved.version, 3);
    t.same(Object.keys(saved.pools), ['replicas'], 'kept by pool');
    t.same(saved.pools.replicas.admin, { r0: 'disabled' });
    await settled(stats);

    // After a restart, the pool's backend is still disabled, for both frontends.
    await fulcrum.stop();
    fulcrum = await startFulcrum(['--config', path]);
    const stat = await showStat(stats);
    t.same(
      stat.map((f) => [f.name, f.backends.map((b) => b.state)]),
      [
        ['chat', ['disabled', 'up']],
        ['bulk', ['disabled', 'up']],
      ],
    );
  },
);
