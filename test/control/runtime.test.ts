// Backends added and deleted at runtime over the stats socket, at once in every worker, with no
// connection disturbed; and the runtime state kept in --state-file across a reload and a restart.

import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import type { BackendStat } from '../../src/stats/view.ts';
import {
  connect,
  greet,
  greetThenEcho,
  readLine,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

/** The default frontend's backends, as `show stat json` gives them. */
async function stat(path: string): Promise<BackendStat[]> {
  return (await showStat(path))[0].backends;
}

/** Connects and reads which backend answered. */
async function whoAnswers(port: number): Promise<{ socket: net.Socket; backend: string }> {
  const socket = await connect(port);
  return { socket, backend: await readLine(socket) };
}

/** Sends `text` and waits for it to come back. */
async function roundTrip(socket: net.Socket, text: string): Promise<boolean> {
  let got = '';
  const done = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      got += chunk.toString();
      if (got.length >= text.length) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  socket.write(text);
  await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 3000))]);
  return got === text;
}

t.test(
  'add backend: new connections reach it within a second; 20 held ones are untouched',
  async (t) => {
    const pool = await Promise.all([0, 1, 2].map(() => startBackend(greetThenEcho)));
    t.teardown(() => Promise.all(pool.map((b) => b.close())));
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--stats-socket',
      stats,
      '--health-interval',
      '2s',
      '--backend',
      pool[0].address,
      '--backend',
      pool[1].address,
    ]);
    t.teardown(() => fulcrum.stop());
    const held = [];
    for (let i = 0; i < 20; i++) held.push(await whoAnswers(fulcrum.port));
    t.same(
      new Set(held.map((h) => h.backend)),
      new Set([String(pool[0].port), String(pool[1].port)]),
      '20 held connections on the two backends',
    );

    const added = Date.now();
    t.equal(
      await query(stats, `add backend default 127.0.0.1:${pool[2].port},weight=10`),
      `added default/127.0.0.1:${pool[2].port} (takes connections once its first probe succeeds)`,
    );
    let reached = -1;
    const extra: net.Socket[] = [];
    while (Date.now() - added < 1000) {
      const next = await whoAnswers(fulcrum.port);
      extra.push(next.socket);
      if (next.backend === String(pool[2].port)) {
        reached = Date.now() - added;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    t.ok(
      reached >= 0 && reached < 1000,
      `a new connection reached the new backend after ${reached} ms`,
    );
    const echoes = await Promise.all(held.map((h, i) => roundTrip(h.socket, `still here ${i}\n`)));
    t.equal(echoes.filter(Boolean).length, 20, 'none of the 20 held connections was disturbed');
    const rows = await stat(stats);
    const row = rows.find((r) => r.name === `127.0.0.1:${pool[2].port}`);
    t.equal(row?.weight, 10, 'listed in show stat with its weight');
    t.equal(row?.state, 'up');
    for (const h of held) h.socket.destroy();
    for (const s of extra) s.destroy();
  },
);

t.test(
  'del backend: 10 streams on it finish byte for byte; it takes no new one; then it is gone',
  async (t) => {
    const [a, b] = await Promise.all([startBackend(greetThenEcho), startBackend(greetThenEcho)]);
    t.teardown(() => Promise.all([a.close(), b.close()]));
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--stats-socket',
      stats,
      '--no-health-check',
      '--algorithm',
      'round-robin',
      '--backend',
      a.address,
      '--backend',
      b.address,
    ]);
    t.teardown(() => fulcrum.stop());
    const onA: net.Socket[] = [];
    const others: net.Socket[] = [];
    while (onA.length < 10) {
      const c = await whoAnswers(fulcrum.port);
      (c.backend === String(a.port) ? onA : others).push(c.socket);
    }
    const streams = onA.map((socket) => {
      const sent = createHash('sha256');
      const received = createHash('sha256');
      let bytes = 0;
      socket.on('data', (chunk: Buffer) => {
        received.update(chunk);
        bytes += chunk.length;
      });
      return { socket, sent, received, sentBytes: 0, bytes: () => bytes };
    });
    const round = () => {
      for (const s of streams) {
        const chunk = randomBytes(32 * 1024);
        s.sent.update(chunk);
        s.sentBytes += chunk.length;
        s.socket.write(chunk);
      }
    };
    for (let i = 0; i < 4; i++) round();
    t.equal(
      await query(stats, `del backend default/${a.address}`),
      `default/${a.address} draining (10 live), then deleted`,
    );
    for (let i = 0; i < 4; i++) round();
    const rows = await stat(stats);
    t.equal(rows.find((r) => r.name === a.address)?.state, 'draining', 'reported draining');
    for (let i = 0; i < 12; i++) {
      const c = await whoAnswers(fulcrum.port);
      t.equal(c.backend, String(b.port), 'a new connection goes to the other backend');
      c.socket.destroy();
    }
    await waitFor(() => streams.every((s) => s.bytes() === s.sentBytes), 10_000, 'the echoes');
    for (const s of streams) s.socket.end();
    await Promise.all(streams.map((s) => once(s.socket, 'close')));
    t.equal(
      streams.filter((s) => s.sent.digest('hex') === s.received.digest('hex')).length,
      10,
      'all 10 streams came back byte for byte',
    );
    await waitForLog(fulcrum, (l) => l.msg === 'backend removed', 5000, 'the backend to leave');
    t.same(
      (await stat(stats)).map((r) => r.name),
      [b.address],
      'gone from show stat after its last connection',
    );
    // Its slot is free again: a new backend there starts with zeroed counters.
    t.match(
      await query(stats, `add backend default ${a.address},name=again`),
      /^added default\/again/,
    );
    const again = (await stat(stats)).find((r) => r.name === 'again');
    t.same([again?.total, again?.active], [0, 0], 'counters start at zero');
    for (const s of others) s.destroy();
  },
);

t.test('del backend ... now resets its connections', async (t) => {
  const [a, b] = await Promise.all([startBackend(greetThenEcho), startBackend(greetThenEcho)]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    stats,
    '--no-health-check',
    '--backend',
    a.address,
    '--backend',
    b.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const onA: net.Socket[] = [];
  while (onA.length < 3) {
    const c = await whoAnswers(fulcrum.port);
    if (c.backend === String(a.port)) onA.push(c.socket);
    else c.socket.destroy();
  }
  const errors = onA.map((socket) =>
    once(socket, 'error').then(([err]) => (err as NodeJS.ErrnoException).code),
  );
  t.equal(
    await query(stats, `del backend default/${a.address} now`),
    `default/${a.address} deleted (3 connections reset)`,
  );
  t.same(await Promise.all(errors), ['ECONNRESET', 'ECONNRESET', 'ECONNRESET'], 'each was reset');
  await waitFor(() => a.open.size === 0, 5000, 'the backend side to close too');
  await waitForLog(fulcrum, (l) => l.msg === 'backend removed', 5000, 'the backend to leave');
});

t.test('bad commands change nothing and answer one error line', async (t) => {
  const [a, b] = await Promise.all([startBackend(greet), startBackend(greet)]);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const admin = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    admin,
    '--no-health-check',
    '--backend',
    a.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const before = await stat(admin);
  const cases: Array<[string, RegExp]> = [
    [`add backend nosuch ${b.address}`, /^error: no pool "nosuch"$/],
    [
      `add backend default ${a.address}`,
      new RegExp(`^error: ${a.address} is already in pool default`),
    ],
    [
      `add backend default ${b.address},name=${a.address}`,
      /^error: name .* is already in pool default/,
    ],
    // The same backend spelled other ways: IPv4-mapped IPv6, and the unspecified address.
    [
      `add backend default [::ffff:127.0.0.1]:${a.port}`,
      new RegExp(`^error: \\[::ffff:127\\.0\\.0\\.1\\]:${a.port} is already in pool default`),
    ],
    [
      `add backend default 0.0.0.0:${a.port}`,
      new RegExp(`^error: 0\\.0\\.0\\.0:${a.port} is already in pool default`),
    ],
    // fulcrum's own listener: every probe and client would loop back into fulcrum.
    [
      `add backend default 127.0.0.1:${fulcrum.port}`,
      /^error: 127\.0\.0\.1:\d+ is fulcrum's own listener 127\.0\.0\.1:\d+: a backend there would loop$/,
    ],
    [
      `add backend default [::ffff:127.0.0.1]:${fulcrum.port}`,
      /^error: .* is fulcrum's own listener/,
    ],
    [
      `add backend default ${b.address},weight=999`,
      /^error: add backend .*weight: 999 is out of range \(0\.\.256\)$/,
    ],
    [`add backend default nohost`, /^error: add backend: "nohost" is not HOST:PORT/],
    [
      `add backend default no-such-host.invalid:80`,
      /^error: add backend: cannot resolve no-such-host\.invalid/,
    ],
    [`add backend default ${b.address},turbo`, /^error: add backend: .*unknown option "turbo"/],
    ['add backend default', /^error: usage: add backend POOL/],
    [
      `del backend default/${b.address}`,
      new RegExp(`^error: no backend "${b.address}" in pool "default"`),
    ],
    [`del backend nosuch/${a.address}`, /^error: no pool "nosuch"$/],
    [`del backend default/${a.address} later`, /^error: usage: del backend POOL\/BACKEND \[now\]$/],
    [`set weight default/${a.address} 300`, /^error: weight "300" is out of range \(0\.\.256\)$/],
  ];
  for (const [command, expected] of cases) {
    const answer = await query(admin, command);
    t.match(answer, expected, command);
    t.notOk(answer.includes('\n'), 'one line');
  }
  t.same(await stat(admin), before, 'nothing changed');
  t.equal(fulcrum.logs.filter((l) => l.msg === 'backend added').length, 0);

  const readOnly = socketPath();
  const reader = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    readOnly,
    '--stats-level',
    'read',
    '--backend',
    a.address,
  ]);
  t.teardown(() => reader.stop());
  for (const command of [`add backend default ${b.address}`, `del backend default/${a.address}`]) {
    t.match(
      await query(readOnly, command),
      /^error: "(add|del)" needs the admin level; this socket is read-only$/,
    );
  }
  t.equal((await stat(readOnly)).length, 1, 'nothing changed');
});

t.test('the state file keeps runtime changes across a reload and a restart', async (t) => {
  const [a, b, c] = await Promise.all([
    startBackend(greet),
    startBackend(greet),
    startBackend(greet),
  ]);
  t.teardown(() => Promise.all([a.close(), b.close(), c.close()]));
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
  const stateFile = join(dir, 'state.json');
  const config = join(dir, 'fulcrum.yaml');
  const stats = join(dir, 'stats.sock');
  writeFileSync(
    config,
    `workers: 2\nstatsSocket: ${stats}\nstateFile: ${stateFile}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["${a.address}", "${b.address}"]\n`,
  );
  const first = await startFulcrum(['--config', config]);
  t.equal(
    await query(stats, `add backend default ${c.address},weight=7,name=spare`),
    'added default/spare',
  );
  t.equal(await query(stats, `set weight default/${a.address} 5`), `default/${a.address} weight 5`);
  t.equal(await query(stats, `disable default/${b.address}`), `default/${b.address} disabled`);
  const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
  t.same(JSON.parse(await query(stats, 'show state')), saved, 'show state prints what was written');
  t.same(saved.pools.default.added, [`${c.address},weight=7,name=spare`], 'kept as its spec');
  t.equal(saved.version, 3);

  first.proc.kill('SIGHUP');
  await waitForLog(first, (l) => l.msg === 'reloaded', 10_000, 'the reload');
  const afterReload = await stat(stats);
  t.same(
    afterReload.map((r) => [r.name, r.weight, r.state]),
    [
      [a.address, 5, 'up'],
      [b.address, 1, 'disabled'],
      ['spare', 7, 'up'],
    ],
    'after a reload: the added backend, the weight and the admin state stay',
  );
  t.equal(await first.stop(), 0);

  const second = await startFulcrum(['--config', config]);
  t.ok(second.logs.some((l) => l.msg === 'runtime state loaded'));
  t.same(
    (await stat(stats)).map((r) => [r.name, r.weight, r.state]),
    [
      [a.address, 5, 'up'],
      [b.address, 1, 'disabled'],
      ['spare', 7, 'up'],
    ],
    'after a restart: the same',
  );
  const answer = await whoAnswers(second.ports.default[0]);
  t.ok(
    [String(a.port), String(c.port)].includes(answer.backend),
    'the disabled backend gets nothing',
  );
  answer.socket.destroy();
  t.equal(await second.stop(), 0);

  writeFileSync(stateFile, '{"version": 1, "fronte');
  const third = await startFulcrum(['--config', config]);
  t.teardown(() => third.stop());
  const warned = third.logs.filter((l) => String(l.msg).startsWith('state file'));
  t.equal(warned.length, 1, 'one log line says so');
  t.match(
    warned[0].msg,
    /^state file is not valid state file|^state file is not a valid state file/,
  );
  t.equal(warned[0].stateFile, stateFile, 'naming the file');
  t.same(
    (await stat(stats)).map((r) => [r.name, r.weight, r.state]),
    [
      [a.address, 1, 'up'],
      [b.address, 1, 'up'],
    ],
    'started with the config alone',
  );
});

t.test(
  'regression: a backend added with send-proxy=v2 and slowstart keeps both across a reload and a restart',
  async (t) => {
    // Answers "v2" when the connection starts with a PROXY v2 signature, "plain" otherwise.
    const PROXY_V2 = Buffer.from('0d0a0d0a000d0a515549540a', 'hex');
    const check = (socket: net.Socket) => {
      socket.once('data', (chunk: Buffer) => {
        socket.end(chunk.subarray(0, 12).equals(PROXY_V2) ? 'v2\n' : 'plain\n');
      });
    };
    const checker = await startBackend(check);
    const spare = await startBackend(check);
    t.teardown(() => Promise.all([checker.close(), spare.close()]));
    const dir = mkdtempSync(join(tmpdir(), 'fulcrum-state-'));
    const stateFile = join(dir, 'state.json');
    const config = join(dir, 'fulcrum.yaml');
    const stats = join(dir, 'stats.sock');
    writeFileSync(
      config,
      `workers: 1\nstatsSocket: ${stats}\nstateFile: ${stateFile}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["${checker.address},name=first"]\n`,
    );
    const ask = async (port: number) => {
      const socket = await connect(port);
      socket.write('hello');
      const line = await readLine(socket);
      socket.destroy();
      return line;
    };
    const first = await startFulcrum(['--config', config]);
    t.teardown(() => first.stop());
    t.equal(await query(stats, 'disable default/first'), 'default/first disabled');
    t.equal(
      await query(
        stats,
        `add backend default ${spare.address},send-proxy=v2,slowstart=30s,name=added`,
      ),
      'added default/added',
    );
    t.equal(await ask(first.ports.default[0]), 'v2', 'added: the header is sent');
    t.equal(await query(stats, 'reload'), 'reloaded (default: +0 -0 ~0)');
    t.equal(await ask(first.ports.default[0]), 'v2', 'after a reload: still sent');
    t.equal(await first.stop(), 0);
    const second = await startFulcrum(['--config', config]);
    t.teardown(() => second.stop());
    t.equal(await ask(second.ports.default[0]), 'v2', 'after a restart: still sent');
    const added = JSON.parse(await query(stats, 'show state')).pools.default.added;
    t.equal(added.length, 1);
    t.match(JSON.stringify(added[0]), /30s|30000/, 'slowstart is kept in the state');
  },
);
