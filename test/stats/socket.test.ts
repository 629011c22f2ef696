// The stats socket as operators and scripts use it: mode 0600, `fulcrum stats --json` with live
// counts, `fulcrum ctl` steering traffic, levels, and bad input of every kind leaving the balancer
// and the socket working.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { existsSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  BIN,
  connect,
  eventually,
  greet,
  readLine,
  socketPath,
  startBackend,
  startFulcrum,
  startWithStats,
} from '../helpers.ts';

function cli(args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 20_000 });
}

/** Sends raw text (or bytes) and reads until the socket closes or `answers` answers arrived. */
async function raw(path: string, data: string | Buffer, answers: number): Promise<string> {
  const socket = net.connect(path);
  let text = '';
  socket.setEncoding('latin1');
  socket.on('data', (chunk: string) => {
    text += chunk;
    if (text.split('\n\n').length > answers) socket.destroy();
  });
  // A connect the kernel refuses (a full listen queue: EAGAIN) ends as '' with no answer.
  socket.on('error', () => {});
  socket.once('connect', () => socket.write(data));
  await once(socket, 'close');
  return text;
}

async function ask(port: number): Promise<string> {
  const socket = await connect(port);
  const line = await readLine(socket);
  socket.destroy();
  return line;
}

t.test('mode 0600; stats --json has the documented shape and live counts', async (t) => {
  const { backends, path, fulcrum } = await startWithStats(t);
  t.equal(statSync(path).mode & 0o777, 0o600, 'the socket file is mode 0600');
  for (let k = 0; k < 10; k++) await ask(fulcrum.port);
  // The last clients may still be closing: read until every connection has been counted out.
  let run = cli(['stats', '--socket', path, '--json']);
  await eventually(
    async () => {
      run = cli(['stats', '--socket', path, '--json']);
      return !/"(active|held)":[1-9]/.test(run.stdout);
    },
    5000,
    'every connection to be counted out',
  );
  t.equal(run.status, 0, run.stderr);
  const stat = JSON.parse(run.stdout);
  t.equal(stat.frontends.length, 1);
  const [frontend] = stat.frontends;
  t.match(frontend, { name: 'default', listen: [fulcrum.address], algorithm: 'least-conn' });
  t.same(
    frontend.backends.map((b: { name: string }) => b.name),
    backends.map((b) => b.address),
  );
  for (const b of frontend.backends) {
    t.match(b, {
      state: 'up',
      up: true,
      weight: 1,
      active: 0,
      failures: 0,
      total: Number,
      bytesIn: Number,
      bytesOut: Number,
      address: String,
    });
  }
  const total = frontend.backends.reduce((n: number, b: { total: number }) => n + b.total, 0);
  t.equal(total, 10, 'totals add up to the connections made');
  for (const b of frontend.backends) {
    t.match(b.connectMs, { p50: Number, p90: Number, p99: Number, p999: Number, max: Number });
    t.ok(b.connectMs.p99 > 0, `connectMs.p99 > 0 (${b.connectMs.p99} ms)`);
    t.ok(b.connectMs.p50 <= b.connectMs.p99 && b.connectMs.p99 <= b.connectMs.max);
  }
  const latency = JSON.parse(cli(['ctl', '--socket', path, 'show', 'latency', 'json']).stdout);
  const fl = latency.frontends[0];
  t.equal(fl.connectMs.total.count, 10, 'every connect was timed, over both workers');
  t.equal(fl.connectMs.lastMinute.count, 10, 'and all of them fall in the last minute');
  t.equal(fl.firstByteMs.total.count, 10, "every backend's first byte was timed");
  t.equal(fl.durationMs.total.count, 10, 'every finished connection was timed');
  t.ok(
    fl.durationMs.total.p50 >= fl.connectMs.total.p50,
    'a connection lasts longer than its connect',
  );
  t.equal(
    fl.backends.reduce(
      (n: number, b: { connectMs: { total: { count: number } } }) => n + b.connectMs.total.count,
      0,
    ),
    10,
  );
  const text = cli(['ctl', '--socket', path, 'show', 'latency']).stdout;
  t.match(text, /connect time\nNAME\s+WINDOW\s+COUNT\s+P50/);
  t.match(text, /time to the backend's first byte\n/);
  t.match(text, /connection duration\n/);
  t.notMatch(text.trimEnd(), /\n\n/, 'no empty line inside the answer');
  const table = cli(['stats', '--socket', path]);
  t.match(table.stdout, /NAME\s+STATE\s+WEIGHT\s+ACTIVE/);
  t.match(table.stdout, new RegExp(`default/${backends[0].address}\\s+up`));
});

t.test(
  'ctl disable sends every new connection to the other backend; enable undoes it',
  async (t) => {
    const { backends, path, fulcrum } = await startWithStats(t);
    const name = `default/${backends[0].address}`;
    const run = cli(['ctl', '--socket', path, 'disable', name]);
    t.equal(run.status, 0);
    t.equal(run.stdout, `${name} disabled\n`);
    for (let k = 0; k < 8; k++) t.equal(await ask(fulcrum.port), String(backends[1].port));
    const stat = JSON.parse(cli(['stats', '--socket', path, '--json']).stdout);
    t.equal(stat.frontends[0].backends[0].state, 'disabled');
    t.equal(cli(['ctl', '--socket', path, 'enable', name]).status, 0);
    const seen = new Set<string>();
    for (let k = 0; k < 8; k++) seen.add(await ask(fulcrum.port));
    t.ok(seen.has(String(backends[0].port)), 'the re-enabled backend takes connections again');
  },
);

t.test('drain: draining while a connection lives, then disabled', async (t) => {
  const { backends, path, fulcrum } = await startWithStats(t, ['--algorithm', 'round-robin']);
  const held = await connect(fulcrum.port);
  const port = Number(await readLine(held));
  const name = `default/127.0.0.1:${port}`;
  t.equal(cli(['ctl', '--socket', path, 'drain', name]).stdout, `${name} draining\n`);
  const state = () =>
    JSON.parse(cli(['stats', '--socket', path, '--json']).stdout).frontends[0].backends.find(
      (b: { name: string }) => b.name === `127.0.0.1:${port}`,
    ).state;
  t.equal(state(), 'draining');
  const other = backends.find((b) => b.port !== port)!;
  for (let k = 0; k < 4; k++) t.equal(await ask(fulcrum.port), String(other.port));
  held.destroy();
  await eventually(async () => state() === 'disabled', 5000, 'its last connection to end');
  t.equal(state(), 'disabled', 'once its last connection ended');
});

t.test('set weight, reset counters, and errors that change nothing', async (t) => {
  const { backends, path, fulcrum } = await startWithStats(t);
  const name = `default/${backends[1].address}`;
  t.equal(cli(['ctl', '--socket', path, 'set', 'weight', name, '7']).stdout, `${name} weight 7\n`);
  for (const [words, pattern] of [
    [['set', 'weight', name, '300'], /out of range/],
    [['set', 'weight', 'default/10.9.9.9:1', '3'], /no backend/],
    [['disable', 'nope/x:1'], /no pool/],
    [['frobnicate'], /unknown command/],
    [['show', 'stat', 'yaml'], /usage/],
  ] as const) {
    const run = cli(['ctl', '--socket', path, ...words]);
    t.equal(run.status, 1, `${words.join(' ')}: exit 1`);
    t.match(run.stdout, /^error: /);
    t.match(run.stdout, pattern);
  }
  const stat = JSON.parse(cli(['stats', '--socket', path, '--json']).stdout);
  t.same(
    stat.frontends[0].backends.map((b: { weight: number; state: string }) => [b.weight, b.state]),
    [
      [1, 'up'],
      [7, 'up'],
    ],
    'only the valid command changed anything',
  );
  for (let k = 0; k < 4; k++) await ask(fulcrum.port);
  t.equal(cli(['ctl', '--socket', path, 'reset', 'counters']).stdout, 'counters reset\n');
  const after = JSON.parse(cli(['stats', '--socket', path, '--json']).stdout);
  t.same(
    after.frontends[0].backends.map((b: { total: number }) => b.total),
    [0, 0],
  );
});

t.test('read level: control commands refused, nothing changes', async (t) => {
  const { backends, path } = await startWithStats(t, ['--stats-level', 'read']);
  const run = cli(['ctl', '--socket', path, 'disable', `default/${backends[0].address}`]);
  t.equal(run.status, 1);
  t.match(run.stdout, /^error: .*admin level/);
  const stat = JSON.parse(cli(['stats', '--socket', path, '--json']).stdout);
  t.equal(stat.frontends[0].backends[0].state, 'up');
});

t.test(
  'bad input: garbage, long lines, silence and a crowd leave everything working',
  async (t) => {
    const { path, fulcrum } = await startWithStats(t);
    const garbage = await raw(path, randomBytes(1024 * 1024), 1);
    t.match(garbage, /^error: /, 'a megabyte of random bytes gets an error line');
    const long = await raw(path, `show ${'x'.repeat(10_000)}`, 1);
    t.match(long, /line longer than 4096 bytes/);
    // Two hundred clients at once (three times MAX_CLIENTS): each is answered or told there are too many; none hangs.
    const crowd = await Promise.all(Array.from({ length: 200 }, () => raw(path, 'show info\n', 1)));
    t.ok(
      crowd.every((x) => x.startsWith('version: ') || x.startsWith('error: too many clients')),
      'every client got an answer or a clear refusal',
    );
    // A client that never speaks does not block others.
    const silent = net.connect(path);
    silent.on('error', () => {});
    t.teardown(() => silent.destroy());
    const after = cli(['ctl', '--socket', path, 'show', 'info']);
    t.equal(after.status, 0);
    t.match(after.stdout, /connections_total: /);
    t.match(await ask(fulcrum.port), /^\d+$/, 'the balancer still balances');
  },
);

t.test('the socket: a stale file is replaced, a live one refused, removed on exit', async (t) => {
  const path = socketPath();
  // A stale socket file, as a crashed run leaves it: a process listening there, killed hard.
  const crashed = spawn(
    process.execPath,
    [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  await once(crashed.stdout!, 'data');
  crashed.kill('SIGKILL');
  await once(crashed, 'exit');
  t.ok(existsSync(path), 'a stale socket file is there');
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    path,
    '--backend',
    backend.address,
  ]);
  t.teardown(() => backend.close());
  t.equal(cli(['ctl', '--socket', path, 'help']).status, 0, 'the stale file was replaced');
  const second = cli([
    '--listen',
    '127.0.0.1:0',
    '--stats-socket',
    path,
    '--backend',
    backend.address,
  ]);
  t.equal(second.status, 2);
  t.equal(second.stderr, `fulcrum: --stats-socket ${path}: in use by a running process\n`);
  t.equal(await fulcrum.stop(), 0);
  t.notOk(existsSync(path), 'removed on exit');
  const gone = cli(['stats', '--socket', path]);
  t.equal(gone.status, 2);
  t.match(gone.stderr, /^fulcrum: --socket .*no such socket/);
  const notSocket = join(mkdtempSync(join(tmpdir(), 'fulcrum-stats-')), 'file');
  writeFileSync(notSocket, 'x');
  const refused = cli([
    '--listen',
    '127.0.0.1:0',
    '--stats-socket',
    notSocket,
    '--backend',
    backend.address,
  ]);
  t.equal(refused.status, 2);
  t.match(refused.stderr, /exists and is not a socket/);
});

t.test(
  'regression: the table counts clients that never reached a backend, as show info does',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const stats = socketPath();
    // Denied clients are closed as they come, before any backend (as those closed at the
    // inspect timeout of a serverNames frontend are).
    const fulcrum = await startFulcrum([
      '--stats-socket',
      stats,
      '--deny',
      '127.0.0.0/8',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => fulcrum.stop());
    const sockets: net.Socket[] = [];
    for (let i = 0; i < 3; i++) sockets.push(await connect(fulcrum.port));
    t.teardown(() => {
      for (const socket of sockets) socket.destroy();
    });
    await eventually(
      async () => {
        const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
        return info.connections_total === 3 && info.connections_now === 0;
      },
      5000,
      'show info to count the three, closed',
    );
    const row = (await query(stats, 'show stat')).split('\n')[1].trim().split(/\s+/);
    // NAME (LISTEN, ALGORITHM) ACTIVE TOTAL: the frontend row's last two columns.
    t.same(row.slice(-2), ['0', '3'], 'and so does the table');
  },
);
