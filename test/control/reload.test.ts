// Reload without dropping a connection: SIGHUP (or `reload` on the stats socket) re-reads the
// config file. Streams in flight finish byte for byte; added backends take new connections;
// kept backends keep their counters; removed ones drain; listeners open and close; a config that
// fails to load changes nothing.

import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import type { Fulcrum } from '../helpers.ts';
import {
  connect,
  echo,
  greet,
  readLine,
  type Stream,
  send,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  stream,
  waitFor,
  waitForLog,
} from '../helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-reload-'));
let files = 0;

function configFile(): { path: string; write(text: string): void } {
  const path = join(dir, `c${files++}.yaml`);
  return { path, write: (text) => writeFileSync(path, text) };
}

/** Sends SIGHUP and waits for the reload's outcome in the log (the n-th one since start). */
async function sighup(fulcrum: Fulcrum): Promise<Record<string, unknown>> {
  const before = fulcrum.logs.filter(isReloadOutcome).length;
  fulcrum.proc.kill('SIGHUP');
  await waitFor(
    () => fulcrum.logs.filter(isReloadOutcome).length > before,
    10_000,
    'the reload outcome',
  );
  return fulcrum.logs.filter(isReloadOutcome)[before];
}

function isReloadOutcome(line: Record<string, unknown>): boolean {
  return line.msg === 'reloaded' || line.msg === 'reload failed: the running config stays';
}

t.test(
  'SIGHUP under load: 50 streams finish byte for byte; the added backend takes new clients',
  async (t) => {
    const a = await startBackend(echo);
    const b = await startBackend(echo);
    const c = await startBackend(greet);
    t.teardown(() => Promise.all([a.close(), b.close(), c.close()]));
    const stats = socketPath();
    const file = configFile();
    const base = (backends: string) =>
      `workers: 2\nstatsSocket: ${stats}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: { interval: 200ms }\n    backends:\n${backends}`;
    file.write(
      base(
        `      - { address: "${a.address}", name: a }\n      - { address: "${b.address}", name: b }\n`,
      ),
    );
    const fulcrum = await startFulcrum(['--config', file.path]);
    t.teardown(() => fulcrum.stop());

    const streams: Stream[] = [];
    for (let i = 0; i < 50; i++) streams.push(await stream(fulcrum.port));
    // Half the data before the reload, half after, so every stream is mid-flight across it.
    for (let round = 0; round < 5; round++) for (const s of streams) send(s, 16 * 1024);
    await waitFor(
      () => streams.every((s) => s.bytesReceived > 0),
      10_000,
      'every stream to be echoing',
    );
    const [before] = await showStat(stats);
    const totals = Object.fromEntries(before.backends.map((x) => [x.name, x.total]));
    t.equal(totals.a + totals.b, 50, 'the 50 streams are on a and b');

    file.write(
      base(
        `      - { address: "${a.address}", name: a, weight: 3 }\n      - { address: "${b.address}", name: b, weight: 2 }\n      - { address: "${c.address}", name: c, weight: 10 }\n`,
      ),
    );
    const outcome = await sighup(fulcrum);
    t.equal(outcome.msg, 'reloaded');
    t.same((outcome.pools as Record<string, unknown>).default, {
      added: ['c'],
      removed: [],
      changed: ['a', 'b'],
    });

    for (let round = 0; round < 5; round++) for (const s of streams) send(s, 16 * 1024);
    for (const s of streams) s.socket.end();
    await Promise.all(streams.map((s) => s.done));
    const intact = streams.filter(
      (s) => s.bytesReceived === s.bytesSent && s.received.digest('hex') === s.sent.digest('hex'),
    ).length;
    t.equal(intact, 50, 'all 50 streams came back byte for byte');

    // c waits for its first good probe, then least-conn sends it the new clients.
    await waitFor(
      () => fulcrum.logs.some((l) => l.msg === 'backend up' && l.backend === 'c'),
      5000,
      'c to pass its first probe',
    );
    const answers = new Set<string>();
    for (let i = 0; i < 5; i++) {
      // c greets with its port at once; a and b echo, so what comes back first says which.
      const socket = await connect(fulcrum.port);
      socket.write('echo\n');
      answers.add(await readLine(socket));
      socket.destroy();
    }
    t.ok(answers.has(String(c.port)), `new connections reach the new backend (${[...answers]})`);

    const [after] = await showStat(stats);
    const rows = Object.fromEntries(after.backends.map((x) => [x.name, x]));
    t.ok(rows.a.total >= totals.a && rows.b.total >= totals.b, 'kept backends kept their counters');
    t.same([rows.a.weight, rows.b.weight, rows.c.weight], [3, 2, 10], 'weights changed in place');
  },
);

t.test('a removed backend drains; a listener is added and one removed', async (t) => {
  const a = await startBackend(greet);
  const b = await startBackend(greet);
  t.teardown(() => Promise.all([a.close(), b.close()]));
  const stats = socketPath();
  const file = configFile();
  const frontend = (listen: string, backends: string) =>
    `workers: 2\nstatsSocket: ${stats}\nfrontends:\n  - name: default\n    listen: [${listen}]\n    health: false\n    backends: [${backends}]\n`;
  file.write(frontend('127.0.0.1:0', `"${a.address}", "${b.address}"`));
  const fulcrum = await startFulcrum(['--config', file.path]);
  t.teardown(() => fulcrum.stop());
  const oldPort = fulcrum.port;

  // Hold one connection on each backend.
  const held: net.Socket[] = [];
  const heldOn = new Map<string, net.Socket>();
  for (let i = 0; i < 2; i++) {
    const socket = await connect(oldPort);
    heldOn.set(await readLine(socket), socket);
    held.push(socket);
  }
  t.equal(heldOn.size, 2, 'one held connection on each backend');

  // Keep the old listener (same text, port 0 keeps its picked port) and add a second one; drop b.
  file.write(frontend('127.0.0.1:0, 127.0.0.1:0', `"${a.address}"`));
  const dup = await sighup(fulcrum);
  t.equal(dup.msg, 'reload failed: the running config stays', 'the same address twice is refused');

  const extra = await startBackend(greet); // only to learn a free port, then freed
  const newPort = extra.port;
  await extra.close();
  file.write(frontend(`127.0.0.1:0, 127.0.0.1:${newPort}`, `"${a.address}"`));
  const outcome = await sighup(fulcrum);
  t.equal(outcome.msg, 'reloaded', JSON.stringify(outcome));
  const [stat] = await showStat(stats);
  const bRow = stat.backends.find((x) => x.name === b.address);
  t.equal(bRow?.state, 'draining', 'b drains while its connection lives');

  for (const port of [oldPort, newPort]) {
    for (let i = 0; i < 4; i++) {
      const socket = await connect(port);
      t.equal(await readLine(socket), String(a.port), `port ${port} reaches only a`);
      socket.destroy();
    }
  }
  // The held connection on b still works end to end: b answers its FIN with its own.
  const onB = heldOn.get(String(b.port)) as net.Socket;
  onB.end();
  await once(onB, 'end');
  await waitForLog(fulcrum, (l) => l.msg === 'backend removed', 5000, 'b to leave');
  const [gone] = await showStat(stats);
  t.same(
    gone.backends.map((x) => x.name),
    [a.address],
    'b is gone after its last connection',
  );

  // Remove the first listener: it stops accepting; the held connection on a is untouched.
  file.write(frontend(`127.0.0.1:${newPort}`, `"${a.address}"`));
  t.equal((await sighup(fulcrum)).msg, 'reloaded');
  await t.rejects(connect(oldPort), { code: 'ECONNREFUSED' }, 'the removed listener is closed');
  const onA = heldOn.get(String(a.port)) as net.Socket;
  onA.end();
  await once(onA, 'end');
  t.pass('the connection accepted on the removed listener ran to its end');
  for (const s of held) s.destroy();
});

t.test(
  'a config that fails to load leaves the running one; reload over the stats socket',
  async (t) => {
    const a = await startBackend(greet);
    const b = await startBackend(greet);
    t.teardown(() => Promise.all([a.close(), b.close()]));
    const stats = socketPath();
    const file = configFile();
    const good = (backends: string) =>
      `statsSocket: ${stats}\nfrontends:\n  - { name: web, listen: [127.0.0.1:0], health: false, backends: [${backends}] }\n`;
    file.write(good(`"${a.address}"`));
    const fulcrum = await startFulcrum(['--config', file.path, '--workers', '2']);
    t.teardown(() => fulcrum.stop());

    file.write(
      'frontends:\n  - { name: web, listen: [127.0.0.1:0], backends: [{ address: "x" }] }\n',
    );
    const failed = await sighup(fulcrum);
    t.equal(failed.msg, 'reload failed: the running config stays');
    t.match(failed.error, /frontends\[0\]\.backends\[0\]\.address: "x" is not HOST:PORT/);
    const socket = await connect(fulcrum.port);
    t.equal(await readLine(socket), String(a.port), 'still serving with the old config');
    socket.destroy();
    t.match(await query(stats, 'reload'), /^error: .*is not HOST:PORT/);

    file.write(good(`"${b.address}"`));
    t.match(await query(stats, 'reload'), /^reloaded \(web: \+1 -1 ~0\)/);
    const after = await connect(fulcrum.port);
    t.equal(await readLine(after), String(b.port), 'the reloaded pool serves');
    after.destroy();
    t.equal(fulcrum.proc.exitCode, null, 'still running');
  },
);

t.test('reload is an admin command', async (t) => {
  const a = await startBackend(greet);
  t.teardown(() => a.close());
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--backend',
    a.address,
    '--stats-socket',
    stats,
    '--stats-level',
    'read',
    '--workers',
    '1',
  ]);
  t.teardown(() => fulcrum.stop());
  t.equal(
    await query(stats, 'reload'),
    'error: "reload" needs the admin level; this socket is read-only',
  );
});
