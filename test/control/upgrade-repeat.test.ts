// Upgrades that can be repeated (issue 24, item 1): each kernel listening socket is handed over
// once, so nine upgrades in a row leave the serving process with the descriptors it had after
// the first, whatever the worker count (it changes between upgrades here: 1, 2, 3, 1, ...).
// Under load: short connections every 20 ms are all served, streams opened before the first
// upgrade stay byte-for-byte intact, and one process is left at the end. A successor that cannot
// even be spawned (E2BIG, as the old descriptor growth caused) fails the upgrade, not the process.

import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  echo,
  send,
  settled,
  socketPath,
  startBackend,
  startFulcrum,
  stream,
  waitFor,
} from '../helpers.ts';
import { alive, info, shortConnections, stopServing } from './upgrade-helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-upgrade-repeat-'));

/** Open descriptors of process `pid`. */
function descriptors(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

t.test('nine upgrades in a row with 1, 2 and 3 workers: descriptors stay flat', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const config = join(dir, 'repeat.yaml');
  const write = (workers: number) =>
    writeFileSync(
      config,
      `workers: ${workers}\nstatsSocket: ${stats}\ndrainTimeout: 5m\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], health: false, backends: [${backend.address}] }\n`,
    );
  write(1);
  const fulcrum = await startFulcrum(['--config', config]);
  t.teardown(() => fulcrum.stop('SIGKILL'));
  stopServing(t, stats, fulcrum);

  const streams = [];
  for (let i = 0; i < 6; i++) streams.push(await stream(fulcrum.port));
  for (const s of streams) send(s, 16 * 1024);
  const short = shortConnections(fulcrum.port);
  await waitFor(() => short.ok >= 5, 10_000, 'short connections before the first upgrade');

  const pids = [fulcrum.proc.pid as number];
  const fds = new Map<number, number[]>();
  // Three rounds per worker count: the old growth doubled the descriptors at every round.
  for (let round = 0; round < 9; round++) {
    const workers = [2, 3, 1][round % 3];
    write(workers);
    const answer = await query(stats, 'upgrade');
    const match = /^upgraded: pid (\d+) serves now/.exec(answer);
    t.ok(match, `upgrade ${round + 1} (${workers} workers): ${answer.trim()}`);
    if (match === null) break;
    const pid = Number(match[1]);
    pids.push(pid);
    // The process before drains nothing but the streams (all on the first one): it goes at once.
    const before = pids[pids.length - 2];
    if (round > 0) await waitFor(() => !alive(before), 10_000, `pid ${before} to exit`);
    const ok = short.ok;
    await waitFor(() => short.ok >= ok + 3, 10_000, 'short connections after the upgrade');
    fds.set(workers, [...(fds.get(workers) ?? []), descriptors(pid)]);
    for (const s of streams) send(s, 4 * 1024);
  }
  for (const [workers, counts] of fds) {
    t.ok(
      Math.max(...counts) - Math.min(...counts) <= 6,
      `${workers} worker(s): descriptors after each upgrade stay flat: ${counts.join(' ')}`,
    );
  }
  await short.stop();
  t.same(short.failed, [], `${short.ok} short connections, none refused or reset`);
  for (const s of streams) s.socket.end();
  await Promise.all(streams.map((s) => s.done));
  t.equal(
    streams.filter(
      (s) => s.bytesReceived === s.bytesSent && s.received.digest('hex') === s.sent.digest('hex'),
    ).length,
    streams.length,
    'streams opened before the first upgrade are intact',
  );
  await waitFor(() => !alive(pids[0]), 10_000, 'the first process to exit once its streams end');
  const serving = pids[pids.length - 1];
  t.same(
    pids.filter((pid) => alive(pid)),
    [serving],
    'one process is left at the end',
  );
  t.equal(Number((await info(stats)).pid), serving);
  await settled(stats);
});

t.test('a successor that cannot be spawned fails the upgrade, not the process', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const stats = socketPath();
  // 300 KiB of environment: fine under the usual 8 MiB stack limit (2 MiB for exec's arguments),
  // too much once the limit is lowered to 1 MiB (256 KiB): spawning the successor gets E2BIG.
  const pad: NodeJS.ProcessEnv = {};
  for (let i = 0; i < 3; i++) pad[`FULCRUM_TEST_PAD_${i}`] = 'x'.repeat(100 * 1024);
  const fulcrum = await startFulcrum(
    ['--stats-socket', stats, '--no-health-check', '--backend', backend.address],
    pad,
  );
  t.teardown(() => fulcrum.stop('SIGKILL'));
  stopServing(t, stats, fulcrum);
  const pid = fulcrum.proc.pid as number;
  execFileSync('prlimit', [`--pid=${pid}`, '--stack=1048576:']);

  t.match(await query(stats, 'upgrade'), /^error: upgrade failed: .*E2BIG/, 'the answer says why');
  fulcrum.proc.kill('SIGUSR2');
  await waitFor(
    () =>
      fulcrum.logs.filter((l) => l.msg === 'upgrade failed: this process keeps serving').length ===
      2,
    10_000,
    'SIGUSR2 to fail the same way, logged',
  );
  t.equal(fulcrum.proc.exitCode, null, 'the process is still running');
  const socket = await connect(fulcrum.port);
  socket.write('still\n');
  await waitFor(() => socket.bytesRead > 0, 5000, 'the echo');
  socket.destroy();

  execFileSync('prlimit', [`--pid=${pid}`, '--stack=8388608:']);
  t.match(await query(stats, 'upgrade'), /^upgraded: pid \d+ serves now/, 'then one that can');
  await settled(stats);
});
