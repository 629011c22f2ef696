// --access-log: one JSON line per finished connection, from the worker that ran it, with the
// client, the backend, bytes each way, connect time, duration, attempts and how it ended.

import net from 'node:net';
import t from 'tap';
import {
  closedPort,
  connect,
  echo,
  startBackend,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

t.test('one line per connection, with what HAProxy users read from their log', async (t) => {
  const backend = await startBackend(echo);
  const dead = `127.0.0.1:${await closedPort()}`;
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--access-log',
    '--no-health-check',
    '--algorithm',
    'round-robin',
    '--backend',
    dead,
    '--backend',
    backend.address,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await backend.close();
  });
  const ports: number[] = [];
  for (let k = 0; k < 4; k++) {
    const socket = await connect(fulcrum.port);
    ports.push(socket.localPort!);
    socket.resume();
    socket.end('hello'); // 5 bytes in, echoed back: 5 bytes out
    await new Promise((resolve) => socket.once('close', resolve));
  }
  const lines = () => fulcrum.logs.filter((l) => l.msg === 'connection');
  await waitFor(() => lines().length === 4, 3000, 'four access log lines');
  for (const line of lines()) {
    t.match(line, {
      frontend: 'default',
      backend: backend.address,
      bytesIn: 5,
      bytesOut: 5,
      connectMs: Number,
      durationMs: Number,
      time: String,
    });
    t.ok(['client-closed', 'backend-closed'].includes(String(line.end)), `ended: ${line.end}`);
    t.ok(
      ports.some((p) => line.client === `127.0.0.1:${p}`),
      `client ${line.client} is one of ours`,
    );
  }
  t.ok(
    lines().some((l) => l.attempts === 2),
    'a connection retried after the dead backend shows two attempts',
  );
});

t.test('without --access-log nothing is logged per connection', async (t) => {
  const backend = await startBackend(echo);
  const fulcrum = await startFulcrum(['--workers', '1', '--backend', backend.address]);
  t.teardown(async () => {
    await fulcrum.stop();
    await backend.close();
  });
  const socket = net.connect(fulcrum.port, '127.0.0.1');
  socket.end('x');
  socket.resume();
  await new Promise((resolve) => socket.once('close', resolve));
  // The exit summary comes after every worker finished its connections: had a line been
  // written, it would be in by then.
  t.equal(await fulcrum.stop(), 0);
  const stopped = await waitForLog(fulcrum, (l) => l.msg === 'stopped', 5000, 'the exit summary');
  t.equal(stopped.accepted, 1, 'the connection was counted');
  t.equal(fulcrum.logs.filter((l) => l.msg === 'connection').length, 0);
});
