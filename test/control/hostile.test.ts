// Inputs that used to crash a running balancer, or every later start: backend names that are
// also the names of Object's own properties, a YAML alias bomb, more backends than a table holds,
// a DNS answer that grows past it, and a SIGHUP before the config is loaded. Each is refused or
// handled with one clear line, and the balancer goes on serving.

import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { readBounded } from '../../src/config/file.ts';
import { ConfigError } from '../../src/config/parse.ts';
import { MAX_BACKENDS } from '../../src/shared/table.ts';
import { query } from '../../src/stats/client.ts';
import { a, dnsServer } from '../dns.ts';
import {
  BIN,
  connect,
  eventually,
  greet,
  readLine,
  showStat,
  startBackend,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

function workdir(): { dir: string; config: string; stats: string; stateFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-hostile-'));
  return {
    dir,
    config: join(dir, 'fulcrum.yaml'),
    stats: join(dir, 'stats.sock'),
    stateFile: join(dir, 'state.json'),
  };
}

/** A frontend's name that is also Object's own (typed as a string, as fulcrum sees it). */
const OTHER: string = 'constructor';
const OBJECT_NAMES = ['constructor', 'toString', 'hasOwnProperty', '__proto__', 'valueOf'];

t.test(
  "backends named after Object's own properties survive runtime changes, a reload and a restart",
  async (t) => {
    const backends = await Promise.all(OBJECT_NAMES.map(() => startBackend(greet)));
    t.teardown(() => Promise.all(backends.map((b) => b.close())));
    const { config, stats, stateFile } = workdir();
    const specs = backends.map((b, i) => `"${b.address},name=${OBJECT_NAMES[i]}"`);
    writeFileSync(
      config,
      `workers: 2\nstatsSocket: ${stats}\nstateFile: ${stateFile}\nfrontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: [${specs.join(', ')}]\n  - name: constructor\n    listen: [127.0.0.1:0]\n    health: false\n    backends: ["${backends[0].address},name=__proto__"]\n`,
    );
    const first = await startFulcrum(['--config', config]);
    t.teardown(() => first.stop());
    t.equal(await query(stats, 'set weight default/constructor 5'), 'default/constructor weight 5');
    t.equal(await query(stats, 'disable default/__proto__'), 'default/__proto__ disabled');
    t.equal(await query(stats, 'drain default/toString'), 'default/toString draining');
    t.equal(
      await query(stats, 'set weight default/hasOwnProperty 0'),
      'default/hasOwnProperty weight 0',
    );
    const expected = [
      ['constructor', 5, 'up'],
      ['toString', 1, 'disabled'], // draining, with nothing left to drain
      ['hasOwnProperty', 0, 'up'],
      ['__proto__', 1, 'disabled'],
      ['valueOf', 1, 'up'],
    ];
    const rows = async () =>
      (await showStat(stats))[0].backends.map((b) => [b.name, b.weight, b.state]);
    t.same(await rows(), expected, 'the changes are live');
    const saved = JSON.parse(readFileSync(stateFile, 'utf8'));
    t.same(Object.keys(saved.pools.default.weights).sort(), ['constructor', 'hasOwnProperty']);
    t.same(Object.keys(saved.pools.default.admin).sort(), ['__proto__', 'toString']);

    first.proc.kill('SIGHUP');
    await waitForLog(first, (l) => l.msg === 'reloaded', 10_000, 'the reload');
    t.same(await rows(), expected, 'after a reload');
    t.equal(await first.stop(), 0);

    const second = await startFulcrum(['--config', config]);
    t.teardown(() => second.stop());
    t.same(await rows(), expected, 'after a restart with the state file');
    const other = await connect(second.ports[OTHER][0]);
    t.equal(await readLine(other), String(backends[0].port), 'a frontend named constructor serves');
    other.destroy();
    const latency = JSON.parse(await query(stats, 'show latency json')) as {
      frontends: Array<{ name: string; backends: Array<{ name: string }> }>;
    };
    t.same(
      latency.frontends.map((f) => [f.name, f.backends.map((b) => b.name)]),
      [
        ['default', OBJECT_NAMES],
        ['constructor', ['__proto__']],
      ],
      'show latency names every frontend and backend',
    );
    const socket = await connect(second.ports.default[0]);
    t.ok(
      [backends[0], backends[4]].map((b) => String(b.port)).includes(await readLine(socket)),
      'served by a backend that takes new connections',
    );
    socket.destroy();
    t.equal(await second.stop(), 0);
  },
);

/** `fulcrum check --config FILE`, as a process: its status and its output. */
function check(config: string) {
  const ran = spawnSync(process.execPath, [BIN, 'check', '--config', config], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  return { status: ran.status, stdout: ran.stdout, stderr: ran.stderr };
}

/** Runs node with `args` until it exits; its status and stderr. */
async function runToExit(args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const [status] = (await once(child, 'exit')) as [number | null];
  return { status, stderr };
}

/** A config file with one frontend and `backends` (specs), health checks off. */
function configWith(config: string, stats: string, backends: string[], extra = ''): void {
  writeFileSync(
    config,
    `workers: 1\nstatsSocket: ${stats}\n${extra}frontends:\n  - name: default\n    listen: [127.0.0.1:0]\n    health: false\n    backends: [${backends.map((b) => `"${b}"`).join(', ')}]\n`,
  );
}

/** `n` backend specs on loopback ports nothing needs to serve (health checks are off). */
function many(n: number, from = 20_000): string[] {
  return Array.from({ length: n }, (_, i) => `127.0.0.1:${from + i}`);
}

/** Asks for a reload over the stats socket and returns the answer. */
async function reload(stats: string): Promise<string> {
  return query(stats, 'reload');
}

t.test(
  'a YAML alias bomb is one error line: check exits 2, a reload fails and changes nothing',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const { config, stats } = workdir();
    configWith(config, stats, [backend.address]);
    const running = await startFulcrum(['--config', config]);
    t.teardown(() => running.stop());
    const rows = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 12; i++) {
      const previous = String.fromCharCode(96 + i);
      const name = String.fromCharCode(97 + i);
      rows.push(`${name}: &${name} [${Array(9).fill(`*${previous}`).join(',')}]`);
    }
    writeFileSync(config, `${rows.join('\n')}\n`);
    const checked = check(config);
    t.equal(checked.status, 2, 'check exits 2');
    t.equal(checked.stderr.trim().split('\n').length, 1, 'one line');
    t.match(checked.stderr, /^fulcrum: .*fulcrum\.yaml: .*alias/);

    running.proc.kill('SIGHUP');
    const failed = await waitForLog(
      running,
      (l) => l.msg === 'reload failed: the running config stays',
      10_000,
      'the reload to fail',
    );
    t.match(failed.error, /alias/);
    t.match(await reload(stats), /^error: .*alias/, 'the stats socket says the same');
    const socket = await connect(running.port);
    t.equal(await readLine(socket), String(backend.port), 'still serving');
    socket.destroy();
    t.equal(await running.stop(), 0);
  },
);

t.test('a config path that is a FIFO is refused at once: check, and a reload', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const { dir, config, stats } = workdir();
  configWith(config, stats, [backend.address]);
  const running = await startFulcrum(['--config', config]);
  t.teardown(() => running.stop());
  const fifo = join(dir, 'fifo.yaml');
  spawnSync('mkfifo', [fifo]);
  const checked = check(fifo);
  t.equal(checked.status, 2, 'check exits 2');
  t.match(
    checked.stderr,
    /^fulcrum: .*fifo\.yaml: cannot read the config file \(not a regular file\)\n$/,
  );
  // The running balancer's config becomes the FIFO: its reload fails, and it still stops at once.
  rmSync(config);
  symlinkSync(fifo, config);
  t.match(await reload(stats), /^error: .*not a regular file/);
  t.equal(
    await query(stats, `disable default/${backend.address}`),
    `default/${backend.address} disabled`,
  );
  const started = Date.now();
  t.equal(await running.stop(), 0);
  t.ok(Date.now() - started < 5000, 'SIGTERM exits at once');
});

t.test('a read of the config that hangs is given up after a timeout', async (t) => {
  // A hung network filesystem, as a read that never completes. (The timeout does not keep a
  // process alive; a running balancer has its listeners for that, this test an interval.)
  const alive = setInterval(() => {}, 1000);
  t.teardown(() => clearInterval(alive));
  await t.rejects(
    readBounded(new Promise<string>(() => {}), 'fulcrum.yaml', 50),
    new ConfigError('fulcrum.yaml', 'cannot read the config file (no answer in 50ms)'),
  );
});

t.test(
  'more backends than a frontend holds: one error line at check, at start and at reload',
  async (t) => {
    const { config, stats } = workdir();
    configWith(config, stats, many(MAX_BACKENDS + 1));
    const checked = check(config);
    t.equal(checked.status, 2);
    t.match(checked.stderr, `${MAX_BACKENDS + 1} backends; a frontend has at most ${MAX_BACKENDS}`);
    const run = spawnSync(process.execPath, [BIN, '--config', config], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    t.equal(run.status, 2, 'run exits 2');
    t.equal(run.stderr.trim().split('\n').length, 1, 'with one line');

    configWith(config, stats, many(MAX_BACKENDS));
    const running = await startFulcrum(['--config', config]);
    t.teardown(() => running.stop());
    t.equal((await showStat(stats))[0].backends.length, MAX_BACKENDS, 'the most it holds');
    configWith(config, stats, many(MAX_BACKENDS + 1));
    t.match(await reload(stats), /^error: .*at most 256/);
    t.equal((await showStat(stats))[0].backends.length, MAX_BACKENDS, 'nothing changed');
    // Every backend replaced at once: the leaving ones hold their slots while the new ones join.
    configWith(config, stats, many(MAX_BACKENDS, 30_000));
    t.match(await reload(stats), /^reloaded/);
    running.proc.kill('SIGHUP');
    await waitForLog(
      running,
      (l) => l.msg === 'reloaded' && l.source === 'SIGHUP',
      10_000,
      'SIGHUP',
    );
    // The replaced set leaves on the supervisor's sweep (every 100 ms) once nothing holds it:
    // waited for, bounded. Were it never removed (phantoms), this would time out; each old
    // backend is logged as removed exactly once.
    const stale = async () =>
      (await showStat(stats))[0].backends.filter((b) => !b.name.startsWith('127.0.0.1:3'));
    await eventually(async () => (await stale()).length === 0, 5000, 'only the new set left');
    t.equal(
      running.logs.filter((l) => l.msg === 'backend removed').length,
      MAX_BACKENDS,
      'every replaced backend removed, once',
    );
    t.equal((await showStat(stats))[0].backends.length, MAX_BACKENDS, 'only the new set is left');
    // At the limit an added backend is refused; one deleted makes room (it no longer counts).
    t.match(
      await query(stats, 'add backend default 127.0.0.2:9'),
      /^error: pool default has 256 backends already/,
    );
    t.match(await query(stats, 'del backend default/127.0.0.1:30000'), /deleted/);
    t.match(
      await query(stats, 'add backend default 127.0.0.2:9'),
      /^added default\/127\.0\.0\.2:9/,
    );
    t.equal(await running.stop(), 0);
  },
);

t.test(
  'a DNS answer beyond the limit: refused at start; at a refresh the last good set stays',
  async (t) => {
    const dns = await dnsServer(t);
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const addresses = (n: number) =>
      Array.from({ length: n }, (_, i) => `127.0.${1 + (i >> 8)}.${1 + (i & 255)}`);
    dns.state.zone.set('big.test', a('big.test', ...addresses(MAX_BACKENDS + 1)));
    const { config, stats } = workdir();
    configWith(
      config,
      stats,
      [`big.test:${backend.port}`],
      `resolvers: ["${dns.address}"]\nresolveInterval: 1s\n`,
    );
    // Not spawnSync: the DNS server answering it runs in this process.
    const run = await runToExit([BIN, '--config', config]);
    t.equal(run.status, 2, 'exits 2 at start');
    t.match(
      run.stderr,
      /^fulcrum: .*big\.test.* 257 addresses; a frontend has at most 256 backends\n$/,
    );

    dns.state.zone.set('big.test', a('big.test', '127.0.0.1'));
    const running = await startFulcrum(['--config', config]);
    t.teardown(() => running.stop());
    dns.state.zone.set('big.test', a('big.test', ...addresses(MAX_BACKENDS + 44)));
    const tooMany = (l: Record<string, unknown>) => String(l.msg).startsWith('discovery: too many');
    // The warning is written once the round that saw the answer is done; later rounds add none.
    await waitForLog(running, tooMany, 10_000, 'the warning');
    const asked = dns.state.asked;
    await waitFor(() => dns.state.asked >= asked + 4, 10_000, 'two more DNS rounds');
    const warned = running.logs.filter(tooMany);
    t.equal(warned.length, 1, 'logged once');
    t.match(warned[0].msg, /keeping the last good set/);
    const socket = await connect(running.port);
    t.equal(await readLine(socket), String(backend.port), 'the last good set serves');
    socket.destroy();
    t.equal((await showStat(stats))[0].backends.length, 1);
    t.equal(await running.stop(), 0);
  },
);

/** Whether process `pid` catches `signal` (its bit in /proc/PID/status's SigCgt). */
function catches(pid: number, signal: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const mask = BigInt(`0x${/^SigCgt:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? '0'}`);
    return (mask & (1n << BigInt(signal - 1))) !== 0n;
  } catch {
    return false;
  }
}

t.test('a SIGHUP as soon as the process can take it, before ready, is not lost', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const { config, stats } = workdir();
  configWith(config, stats, [backend.address]);
  const proc = spawn(process.execPath, [BIN, '--config', config], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.teardown(() => proc.kill('SIGKILL'));
  let out = '';
  proc.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  let exited: number | null = null;
  proc.on('exit', (code, signal) => {
    exited = code ?? (signal === 'SIGHUP' ? -1 : -2);
  });
  await waitFor(
    () => catches(proc.pid as number, 1) || exited !== null,
    10_000,
    'a SIGHUP handler',
  );
  t.notOk(out.includes('"ready"'), 'sent before the balancer was ready');
  proc.kill('SIGHUP');
  await waitFor(() => out.includes('"msg":"reloaded"') || exited !== null, 10_000, 'the reload');
  t.equal(exited, null, 'still running');
  t.match(out, /"source":"SIGHUP"/, 'the SIGHUP reloaded once the balancer was ready');
  proc.kill('SIGTERM');
  await waitFor(() => exited !== null, 10_000, 'exit');
  t.equal(exited, 0);
});

t.test('SIGHUPs during a running reload are coalesced into one more reload after it', async (t) => {
  const dns = await dnsServer(t);
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  dns.state.zone.set('slow.test', a('slow.test', '127.0.0.1'));
  const { config, stats } = workdir();
  configWith(config, stats, [`slow.test:${backend.port}`], `resolvers: ["${dns.address}"]\n`);
  const running = await startFulcrum(['--config', config]);
  t.teardown(() => running.stop());
  // The first reload waits on DNS while three more SIGHUPs come.
  dns.state.holding = true;
  const asked = dns.state.asked;
  running.proc.kill('SIGHUP');
  await waitFor(() => dns.state.asked > asked, 10_000, 'the reload to ask DNS');
  running.proc.kill('SIGHUP');
  running.proc.kill('SIGHUP');
  running.proc.kill('SIGHUP');
  t.match(
    await query(stats, 'show info json'),
    /"connections_now":/,
    'the stats socket answers while the reload waits',
  );
  dns.release();
  const reloads = () => running.logs.filter((l) => l.msg === 'reloaded').length;
  await waitFor(() => reloads() === 2, 10_000, 'two reloads');
  t.equal(running.logs.filter((l) => String(l.msg).startsWith('reload failed')).length, 0);
  // Nothing more is pending: a stats `reload` now runs by itself.
  t.match(await reload(stats), /^reloaded/);
  t.equal(reloads(), 3);
  t.equal(await running.stop(), 0);
});
