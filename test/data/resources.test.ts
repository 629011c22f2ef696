// fulcrum's own shortage is not a backend's failure: run out of descriptors (under `ulimit -n`)
// while health checks probe every 100 ms, and every backend stays up, with no failure counted:
// the clients fulcrum cannot connect onwards are counted as local-error, and probes that cannot
// be made (when one meets the shortage) judge nothing.

import { readdirSync } from 'node:fs';
import type net from 'node:net';
import t from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  connect,
  eventually,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitFor,
} from '../helpers.ts';

const FD_LIMIT = 128;

t.test(
  'out of descriptors: probes and connects that cannot be made blame no backend',
  async (t) => {
    const backends = [await startBackend(greet), await startBackend(greet)];
    t.teardown(() => Promise.all(backends.map((b) => b.close())));
    const stats = socketPath();
    const fulcrum = await startFulcrum(
      [
        '--workers',
        '1',
        // Past what the descriptor limit allows (a warning): so the shortage can happen.
        '--max-connections',
        '1000',
        '--stats-socket',
        stats,
        '--health-interval',
        '100ms',
        '--fall',
        '2',
        '--backend',
        backends[0].address,
        '--backend',
        backends[1].address,
      ],
      {},
      FD_LIMIT,
    );
    t.teardown(() => fulcrum.stop());
    const pid = fulcrum.proc.pid as number;
    const descriptors = () => readdirSync(`/proc/${pid}/fd`).length;
    // Hold clients until fulcrum has (almost) no descriptor left: each takes two (client, backend).
    const held: net.Socket[] = [];
    t.teardown(() => {
      for (const socket of held) socket.destroy();
    });
    while (descriptors() < FD_LIMIT - 1 && held.length < FD_LIMIT) {
      const socket = await connect(fulcrum.port);
      socket.on('error', () => {});
      held.push(socket);
      // Greeted (it went through), closed (refused for want of descriptors), or we are at the limit.
      await Promise.race([
        readLine(socket).catch(() => ''),
        waitFor(() => descriptors() >= FD_LIMIT - 1, 10_000, 'a descriptor to be taken'),
      ]);
    }
    // At the limit: more clients are closed, fulcrum cannot take a descriptor for them or their
    // backend connection.
    for (let i = 0; i < 10; i++) {
      const socket = await connect(fulcrum.port);
      socket.on('error', () => {});
      held.push(socket);
      await readLine(socket).catch(() => '');
    }
    // Wait until a client met the shortage, however it was counted (the old code: connect-failed).
    const ended = async () =>
      JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    await eventually(
      async () => {
        // The stats socket shares the shortage (--max-connections was set past the reserve on
        // purpose): a query it cannot accept is simply asked again.
        const info = await ended().catch(() => null);
        if (info === null) return false;
        return (info['ended_local-error'] ?? 0) + info['ended_connect-failed'] > 0;
      },
      10_000,
      'a client to meet the shortage',
    );
    // An observation window at the limit: ten probe intervals (fall is 2), during which the old
    // code marked both backends down. Nothing to wait for: the point is that nothing happens.
    await new Promise((resolve) => setTimeout(resolve, 1000));
    t.ok(descriptors() >= FD_LIMIT - 2, 'still at the limit after the window');
    for (const socket of held) socket.destroy();
    held.length = 0;
    await settled(stats, fulcrum);
    const rows = (await showStat(stats))[0].backends;
    t.same(
      rows.map((b) => [b.state, b.failures]),
      [
        ['up', 0],
        ['up', 0],
      ],
      'both backends up, no failure counted',
    );
    t.notOk(
      fulcrum.logs.some((l) => l.msg === 'backend down'),
      'no backend was ever marked down',
    );
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    t.equal(info['ended_connect-failed'], 0, 'no client ended as a failed connect');
    t.ok(
      info['ended_local-error'] > 0,
      'the clients fulcrum could not serve are counted as local-error',
    );
    t.ok(
      fulcrum.logs.some((l) => String(l.msg).startsWith('clients closed for want of a local')),
      "and logged as fulcrum's trouble",
    );
    // Served again once descriptors are back.
    const socket = await connect(fulcrum.port);
    t.match(await readLine(socket), /^\d+$/);
    socket.destroy();
    await settled(stats, fulcrum);
  },
);

t.test(
  'without --max-connections, the limit comes from the descriptor limit and keeps a reserve',
  async (t) => {
    const backend = await startBackend(greet);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum(
      [
        '--workers',
        '1',
        '--stats-socket',
        stats,
        '--health-interval',
        '100ms',
        '--backend',
        backend.address,
      ],
      {},
      FD_LIMIT + 100,
    );
    t.teardown(() => fulcrum.stop());
    const said = fulcrum.logs.find((l) => String(l.msg).startsWith('max connections from'));
    t.ok(said, 'said at start');
    const limit = said?.maxConnections as number;
    t.ok(limit > 0 && limit < (FD_LIMIT + 100) / 2, `${limit} connections, two descriptors each`);
    const held: net.Socket[] = [];
    t.teardown(() => {
      for (const socket of held) socket.destroy();
    });
    for (let i = 0; i < limit; i++) {
      const socket = await connect(fulcrum.port);
      held.push(socket);
      t.equal(await readLine(socket), String(backend.port));
    }
    const over = await connect(fulcrum.port);
    over.on('error', () => {});
    await t.rejects(readLine(over), 'one more is refused');
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    t.equal(info['ended_refused-limit'], 1, 'as over the limit');
    t.equal(info['ended_local-error'], 0, 'never short of a descriptor');
    // The reserve is there: probes still reach the backend, and the stats socket answers.
    const probes = backend.accepted;
    await waitFor(() => backend.accepted > probes + 2, 5000, 'probes to go on');
    t.equal((await showStat(stats))[0].backends[0].state, 'up');
    for (const socket of held) socket.destroy();
    await settled(stats, fulcrum);
  },
);
