// Upgrading fulcrum itself (SIGUSR2, `upgrade`): the successor takes every listening socket, the
// stats socket and the metrics port; the old process drains. Under load: 30 streams in flight
// stay byte-for-byte intact, short connections every 20 ms are never refused or reset, the
// runtime changes made before are kept (state file), the old process exits once its streams end.
// Also with two workers, under systemd-socket-activate (MAINPID= and READY=1 from the
// successor), and failed upgrades (a broken config, a successor that exits at once) that leave
// the old process serving.

import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  closedPort,
  connect,
  echo,
  eventually,
  notifySocket,
  type Stream,
  send,
  settled,
  showStat,
  socketActivated,
  socketPath,
  startBackend,
  startFulcrum,
  stream,
  waitFor,
  waitForLog,
} from '../helpers.ts';
import { alive, info, shortConnections, stopServing } from './upgrade-helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-upgrade-'));

for (const workers of [1, 2]) {
  t.test(`SIGUSR2 under load, ${workers} worker(s): nothing dropped, state kept`, async (t) => {
    const backend = await startBackend(echo);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const stateFile = join(dir, `state-${workers}.json`);
    const fulcrum = await startFulcrum([
      '--workers',
      String(workers),
      '--stats-socket',
      stats,
      '--state-file',
      stateFile,
      '--health-interval',
      '200ms',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => fulcrum.stop('SIGKILL'));
    stopServing(t, stats, fulcrum);
    const oldPid = fulcrum.proc.pid as number;
    t.match(await query(stats, `set weight default/${backend.address} 7`), / weight 7$/);

    const streams: Stream[] = [];
    for (let i = 0; i < 30; i++) streams.push(await stream(fulcrum.port));
    for (let round = 0; round < 4; round++) for (const s of streams) send(s, 8 * 1024);
    await waitFor(() => streams.every((s) => s.bytesReceived > 0), 10_000, 'streams echoing');
    const short = shortConnections(fulcrum.port);
    await waitFor(() => short.ok >= 10, 10_000, 'short connections before the upgrade');

    fulcrum.proc.kill('SIGUSR2');
    await waitForLog(fulcrum, (l) => l.msg === 'upgrade: started the new process', 10_000, 'start');
    fulcrum.proc.kill('SIGUSR2'); // a second one while the first runs: logged, ignored
    await waitForLog(fulcrum, (l) => l.msg === 'upgrade: took over', 30_000, 'the takeover');
    t.ok(
      fulcrum.logs.some((l) => l.msg === 'upgrade already in progress: ignored'),
      'the second SIGUSR2 is logged and ignored',
    );
    const after = await info(stats);
    const newPid = Number(after.pid);
    t.not(newPid, oldPid, 'the stats socket answers from the new process');
    t.equal(after.workers, workers);
    await waitFor(() => short.ok >= 40, 10_000, 'short connections after the upgrade');

    // The streams are still on the old process, which drains: half their data comes now.
    await eventually(
      async () => Number((await info(stats)).older_connections) === 30,
      5000,
      'show info to count the 30 streams the old process drains',
    );
    t.equal(Number((await info(stats)).older_pid), oldPid, 'show info names the old process');
    for (let round = 0; round < 4; round++) for (const s of streams) send(s, 8 * 1024);
    for (const s of streams) s.socket.end();
    await Promise.all(streams.map((s) => s.done));
    const intact = streams.filter(
      (s) => s.bytesReceived === s.bytesSent && s.received.digest('hex') === s.sent.digest('hex'),
    ).length;
    t.equal(intact, 30, 'all 30 streams intact through the upgrade');
    const [code] = await once(fulcrum.proc, 'exit');
    t.equal(code, 0, 'the old process exits 0 once its streams end');
    await short.stop();
    t.same(short.failed, [], `${short.ok} short connections, none refused or reset`);

    const [frontend] = await showStat(stats);
    t.equal(frontend.backends[0].weight, 7, 'the weight set before the upgrade is kept');
    t.equal((await info(stats)).older_pid, undefined, 'no older process left');
    t.ok(
      fulcrum.logs.some((l) => l.msg === 'stopped' && l.pid === oldPid),
      'the old process logged its stop',
    );
    await settled(stats);
  });
}

t.test('a failed upgrade leaves the old process serving', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const config = join(dir, 'failing.yaml');
  const good = `workers: 1\nstatsSocket: ${stats}\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], health: false, backends: [${backend.address}] }\n`;
  writeFileSync(config, good);
  const fulcrum = await startFulcrum(['--config', config]);
  t.teardown(() => fulcrum.stop('SIGKILL'));
  stopServing(t, stats, fulcrum);
  const pid = fulcrum.proc.pid as number;

  writeFileSync(config, 'frontends: [ { name: a, listen: "127.0.0.1:0" } ]\n');
  t.match(
    await query(stats, 'upgrade'),
    /^error: upgrade failed: .*frontends\[0\]\.backends/,
    'a broken config',
  );
  const failed = await waitForLog(
    fulcrum,
    (l) => l.msg === 'upgrade failed: this process keeps serving',
    10_000,
    'the failure logged',
  );
  t.match(failed.error, /failing\.yaml: frontends\[0\]\.backends/, "the new process's own line");

  // A config that loads, but the new process cannot bind a port it adds: it exits at once.
  const blocker = net.createServer().listen(0, '127.0.0.1');
  await once(blocker, 'listening');
  t.teardown(() => blocker.close());
  const taken = (blocker.address() as net.AddressInfo).port;
  writeFileSync(
    config,
    good.replace('listen: [127.0.0.1:0]', `listen: [127.0.0.1:0, 127.0.0.1:${taken}]`),
  );
  fulcrum.proc.kill('SIGUSR2');
  await waitFor(
    () =>
      fulcrum.logs.filter((l) => l.msg === 'upgrade failed: this process keeps serving').length ===
      2,
    10_000,
    'the second failure logged',
  );
  const second = fulcrum.logs.filter(
    (l) => l.msg === 'upgrade failed: this process keeps serving',
  )[1];
  t.match(second.error, new RegExp(`${taken}.*in use`), 'the new process could not bind');

  t.equal(Number((await info(stats)).pid), pid, 'the old process still answers');
  const socket = await connect(fulcrum.port);
  socket.write('still\n');
  const [reply] = await once(socket, 'data');
  t.equal(String(reply), 'still\n', 'and still serves');
  socket.destroy();
  t.equal(fulcrum.proc.exitCode, null);
  await settled(stats, fulcrum);
});

t.test('under systemd-socket-activate: the successor becomes MAINPID', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const notify = await notifySocket(t);
  const port = await closedPort();
  const stats = socketPath();
  const config = join(dir, 'activated.yaml');
  writeFileSync(
    config,
    `workers: 2\nstatsSocket: ${stats}\nfrontends:\n  - name: web\n    listen: [127.0.0.1:${port}]\n    health: false\n    backends: [${backend.address}]\n`,
  );
  await socketActivated(t, port, 'web', ['--config', config], notify.path);
  stopServing(t, stats);
  const first = await connect(port);
  first.write('one\n');
  t.equal(String((await once(first, 'data'))[0]), 'one\n', 'served on the passed socket');
  await waitFor(() => notify.messages.some((m) => m.includes('READY=1')), 10_000, 'READY=1');
  const oldPid = Number((await info(stats)).pid);

  const short = shortConnections(port);
  await waitFor(() => short.ok >= 5, 10_000, 'short connections before');
  t.match(await query(stats, 'upgrade'), /^upgraded: pid \d+ serves now/);
  const newPid = Number((await info(stats)).pid);
  t.not(newPid, oldPid);
  await waitFor(
    () => notify.messages.some((m) => m.includes(`MAINPID=${newPid}`) && m.includes('READY=1')),
    10_000,
    'MAINPID= of the new process, with READY=1',
  );
  t.notOk(
    notify.messages.some((m) => m.includes('STOPPING=1')),
    'the old process does not tell systemd the service stops',
  );
  first.write('two\n');
  t.equal(String((await once(first, 'data'))[0]), 'two\n', 'a connection from before goes on');
  first.end();
  await waitFor(() => !alive(oldPid), 10_000, 'the old process to exit');
  await waitFor(() => short.ok >= 30, 10_000, 'short connections after');
  await short.stop();
  t.same(short.failed, [], `${short.ok} short connections, none refused or reset`);
  await settled(stats);
});
