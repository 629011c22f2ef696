// Upgrades when a process dies at the wrong moment (issue 24, items 2-4). The old process killed
// at several moments after its successor appears: the successor finishes taking over (ready, its
// stats socket, reloads). The successor killed after the handover: the old process, still
// draining, takes its listeners back and serves. A successor that stops cleanly is logged at
// info and not replaced; an upgrade that moves the stats socket leaves no stale path behind.

import { once } from 'node:events';
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  closedPort,
  connect,
  echo,
  eventually,
  type Fulcrum,
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

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-upgrade-faults-'));

/** The pid of the successor that `upgrade` number `n` (from 1) of `fulcrum`'s log started. */
async function successor(fulcrum: Fulcrum, n: number): Promise<number> {
  const started = (l: Record<string, unknown>) => l.msg === 'upgrade: started the new process';
  await waitFor(() => fulcrum.logs.filter(started).length >= n, 10_000, `upgrade ${n} to start`);
  return Number(fulcrum.logs.filter(started)[n - 1].newPid);
}

/** Holds a stream through `fulcrum` (so its process still drains after the handover), then
 *  upgrades it over `stats`: the stream and the successor's pid. */
async function upgradeHolding(
  t: Test,
  fulcrum: Fulcrum,
  stats: string,
): Promise<{ held: Stream; newPid: number }> {
  const held = await stream(fulcrum.port);
  send(held, 1024);
  const answer = await query(stats, 'upgrade');
  const newPid = Number(/pid (\d+) serves now/.exec(answer)?.[1]);
  t.ok(newPid > 0, answer.trim());
  return { held, newPid };
}

/** Echoes one line through `port`. */
async function echoes(port: number): Promise<boolean> {
  const socket = await connect(port);
  socket.write('ping\n');
  const [reply] = await once(socket, 'data');
  socket.destroy();
  return String(reply) === 'ping\n';
}

t.test(
  'the old process killed early in the handover: the successor still takes over',
  async (t) => {
    const backend = await startBackend(echo);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--stats-socket',
      stats,
      '--health-interval',
      '300ms',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => fulcrum.stop('SIGKILL'));
    stopServing(t, stats, fulcrum);
    let serving = fulcrum.proc.pid as number;
    // Each moment is one upgrade of the chain: the process that took over last is the old one.
    const moments = [10, 400, 900, 1300];
    for (const [i, ms] of moments.entries()) {
      process.kill(serving, 'SIGUSR2');
      const next = await successor(fulcrum, i + 1);
      // A moment after the successor appears: the point of the test, not a wait for an event.
      await new Promise((resolve) => setTimeout(resolve, ms));
      process.kill(serving, 'SIGKILL');
      await waitFor(() => !alive(serving), 5000, `pid ${serving} to die`);
      await waitForLog(
        fulcrum,
        (l) => l.msg === 'ready' && l.pid === next,
        15_000,
        `pid ${next} to be ready (old one killed after ${ms} ms)`,
      ).catch((err: Error) => {
        // Seen twice in full runs under load, never alone: what the successor said last.
        const said = fulcrum.logs.filter((l) => l.pid === next).slice(-6);
        throw new Error(
          `${err.message}; alive: ${alive(next)}; its last lines: ${JSON.stringify(said)}`,
        );
      });
      await waitFor(() => existsSync(stats), 5000, 'the stats socket');
      t.equal(Number((await info(stats)).pid), next, `${ms} ms: the stats socket answers`);
      process.kill(next, 'SIGHUP');
      await waitForLog(fulcrum, (l) => l.msg === 'reloaded' && l.pid === next, 10_000, 'reload');
      t.ok(await echoes(fulcrum.port), `${ms} ms: serves, and a reload works`);
      serving = next;
    }
    await settled(stats);
  },
);

/** Unix sockets process `pid` listens on (its descriptors that /proc/net/unix says accept). */
function listeningUnixSockets(pid: number): number {
  const accepting = new Set<string>();
  for (const line of readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode [Path]; __SO_ACCEPTCON is flag 0x10000.
    if (fields.length >= 7 && (Number.parseInt(fields[3], 16) & 0x10000) !== 0) {
      accepting.add(fields[6]);
    }
  }
  let count = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))?.[1];
      if (inode !== undefined && accepting.has(inode)) count++;
    } catch {
      // closed while listed
    }
  }
  return count;
}

t.test(
  'the successor killed after the handover: the old process takes the listeners back',
  async (t) => {
    const backend = await startBackend(echo);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--stats-socket',
      stats,
      '--state-file',
      join(dir, 'take-back.json'),
      '--no-health-check',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => fulcrum.stop('SIGKILL'));
    stopServing(t, stats, fulcrum);
    const oldPid = fulcrum.proc.pid as number;
    const { held, newPid } = await upgradeHolding(t, fulcrum, stats);
    const short = shortConnections(fulcrum.port);
    await waitFor(() => short.ok >= 5, 10_000, 'short connections through the successor');
    t.match(await query(stats, `set weight default/${backend.address} 5`), /weight 5$/);
    process.kill(newPid, 'SIGKILL');
    await waitForLog(
      fulcrum,
      (l) => l.msg === 'upgrade: took the listeners back; serving' && l.pid === oldPid,
      10_000,
      'the take-back',
    );
    t.ok(
      fulcrum.logs.some((l) => l.msg === 'upgrade: the new process died' && l.level === 50),
      'the death is logged as an error',
    );
    const before = short.ok;
    const failedBefore = short.failed.length;
    await waitFor(() => short.ok >= before + 30, 10_000, 'short connections after the take-back');
    await short.stop();
    t.same(short.failed.slice(failedBefore), [], 'every connection after the take-back is served');
    t.equal(
      Number((await info(stats)).pid),
      oldPid,
      'the stats socket answers from the old process',
    );
    t.equal(
      listeningUnixSockets(oldPid),
      1,
      'one stats server listens in it: the one it gave up is closed, not kept',
    );
    await eventually(
      async () => (await showStat(stats))[0].backends[0].weight === 5,
      5000,
      'the weight set on the successor, read back from the state file',
    );
    send(held, 1024);
    held.socket.end();
    await held.done;
    t.equal(held.bytesReceived, held.bytesSent, 'the stream it drained is intact');
    t.equal(fulcrum.proc.exitCode, null, 'it serves on: it no longer drains to exit');
    t.match(
      await query(stats, 'upgrade'),
      /^upgraded: pid \d+ serves now/,
      'and can upgrade again',
    );
    await settled(stats);
  },
);

t.test(
  'a successor that stops cleanly is not replaced; a moved stats socket leaves no stale path',
  async (t) => {
    const backend = await startBackend(echo);
    t.teardown(() => backend.close());
    const first = socketPath();
    const second = socketPath();
    const config = join(dir, 'moved.yaml');
    const write = (stats: string) =>
      writeFileSync(
        config,
        `workers: 1\nstatsSocket: ${stats}\nfrontends:\n  - { name: a, listen: [127.0.0.1:0], health: false, backends: [${backend.address}] }\n`,
      );
    write(first);
    const fulcrum = await startFulcrum(['--config', config]);
    t.teardown(() => fulcrum.stop('SIGKILL'));
    stopServing(t, second, fulcrum);
    write(second);
    const { held, newPid } = await upgradeHolding(t, fulcrum, first);
    await waitFor(() => !existsSync(first), 5000, 'the old stats socket path to go');
    t.equal(Number((await info(second)).pid), newPid, 'the new path answers');

    process.kill(newPid, 'SIGTERM');
    const exited = await waitForLog(
      fulcrum,
      (l) => l.msg === 'upgrade: the new process exited',
      10_000,
      'the clean exit logged',
    );
    t.equal(exited.level, 30, 'at info');
    held.socket.end();
    await held.done;
    const [code] = await once(fulcrum.proc, 'exit');
    t.equal(code, 0, 'the old process drains and exits');
    t.notOk(
      fulcrum.logs.some((l) => l.msg === 'upgrade: taking the listeners back and serving'),
      'nothing taken back',
    );
  },
);

t.test('stopped after the handover: a successor that then dies is not replaced', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--stats-socket',
    stats,
    '--no-health-check',
    '--backend',
    backend.address,
  ]);
  t.teardown(() => fulcrum.stop('SIGKILL'));
  stopServing(t, stats, fulcrum);
  const { held, newPid } = await upgradeHolding(t, fulcrum, stats);
  // systemctl stop: every process of the service is signalled; the successor then dies badly.
  fulcrum.proc.kill('SIGTERM');
  await waitForLog(fulcrum, (l) => l.msg === 'already draining after an upgrade', 5000, 'stop');
  process.kill(newPid, 'SIGKILL');
  await waitForLog(fulcrum, (l) => l.msg === 'upgrade: the new process died', 5000, 'the death');
  held.socket.end();
  await held.done;
  const [code] = await once(fulcrum.proc, 'exit');
  t.equal(code, 0, 'the old process drains and exits');
  t.notOk(
    fulcrum.logs.some((l) => l.msg === 'upgrade: taking the listeners back and serving'),
    'nothing taken back after a stop',
  );
});

t.test(
  'under systemd, a take-back never listens on the descriptors the drain closed',
  async (t) => {
    const backend = await startBackend(echo);
    t.teardown(() => backend.close());
    const port = await closedPort();
    const stats = socketPath();
    const config = join(dir, 'activated.yaml');
    writeFileSync(
      config,
      `workers: 2\nstatsSocket: ${stats}\nfrontends:\n  - { name: web, listen: [127.0.0.1:${port}], health: false, backends: [${backend.address}] }\n`,
    );
    const activated = await socketActivated(t, port, 'web', ['--config', config]);
    stopServing(t, stats);
    // The first connection starts it (systemd-socket-activate execs on the first client).
    const held = await stream(port);
    send(held, 1024);
    await waitFor(() => activated.logs.some((l) => l.msg === 'ready'), 10_000, 'ready');
    const oldPid = activated.proc.pid as number;
    const answer = await query(stats, 'upgrade');
    const newPid = Number(/pid (\d+) serves now/.exec(answer)?.[1]);
    t.ok(newPid > 0, answer.trim());
    process.kill(newPid, 'SIGKILL');
    await waitFor(
      () => activated.logs.some((l) => l.msg === 'upgrade: took the listeners back; serving'),
      10_000,
      'the take-back',
    );
    t.ok(
      activated.logs.some(
        (l) => l.msg === 'upgrade: the sockets systemd passed are not taken back',
      ),
      'said',
    );
    t.notOk(
      activated.logs.some((l) => l.msg === 'upgrade: a listener could not be taken back'),
      'no stale descriptor listened on',
    );
    t.equal(Number((await info(stats)).pid), oldPid, 'the old process answers');
    send(held, 1024);
    held.socket.end();
    await held.done;
    t.equal(held.bytesReceived, held.bytesSent, 'its stream intact');
  },
);
