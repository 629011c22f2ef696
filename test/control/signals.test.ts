// Stopping: SIGTERM with nothing live exits 0 at once; with live connections, fulcrum stops
// accepting and waits for them up to --drain-timeout, then exits 0; a second signal exits at once.

import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import {
  connect,
  greet,
  readLine,
  startBackend,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

t.test('SIGTERM with nothing live: exit 0 at once', async (t) => {
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum(['--workers', '2', '--backend', backend.address]);
  t.teardown(() => backend.close());
  const started = Date.now();
  t.equal(await fulcrum.stop('SIGTERM'), 0);
  t.ok(Date.now() - started < 2000, `exited in ${Date.now() - started} ms`);
});

t.test('SIGINT drains: live connections finish, new ones are refused, then exit 0', async (t) => {
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--drain-timeout',
    '20s',
    '--backend',
    backend.address,
  ]);
  t.teardown(() => backend.close());
  const live = await connect(fulcrum.port);
  await readLine(live);
  const exited = once(fulcrum.proc, 'exit');
  const started = Date.now();
  fulcrum.proc.kill('SIGINT');
  await waitForLog(fulcrum, (l) => l.msg === 'stopping: draining', 5000, 'the drain to start');
  t.equal(fulcrum.proc.exitCode, null, 'still running while a connection is live');
  const late = net.connect(fulcrum.port, '127.0.0.1');
  const [err] = (await once(late, 'error')) as [NodeJS.ErrnoException];
  // The drain is logged as the workers are told to close their listeners: a connect just before
  // they have is reset from the closing listener's queue instead of refused. Neither is served.
  t.ok(
    err.code === 'ECONNREFUSED' || err.code === 'ECONNRESET',
    `no longer accepting (${err.code})`,
  );
  live.write('still here\n');
  live.end();
  const [code] = (await exited) as [number];
  t.equal(code, 0, 'exit 0 once the last connection ended');
  t.ok(Date.now() - started < 5000, 'as soon as it ended, not at the drain deadline');
});

t.test('--drain-timeout cuts what is left, then exit 0', async (t) => {
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--drain-timeout',
    '500ms',
    '--backend',
    backend.address,
  ]);
  t.teardown(() => backend.close());
  const live = await connect(fulcrum.port);
  await readLine(live);
  // Cut at the deadline: a reset, not a FIN (see the regression test below).
  const cutWith = new Promise<string>((resolve) => {
    live.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
    live.once('end', () => resolve('FIN'));
  });
  const started = Date.now();
  const code = await fulcrum.stop('SIGTERM');
  const took = Date.now() - started;
  t.equal(code, 0);
  t.ok(took >= 450 && took < 3000, `exited after ${took} ms`);
  const summary = fulcrum.logs.find((l) => l.msg === 'stopped');
  t.equal(summary?.['drain-cut'], 1, 'the cut connection is counted');
  t.equal(await cutWith, 'ECONNRESET', 'the client sees the cut as a reset');
});

t.test(
  'regression: a stream cut at the drain deadline ends with a reset on both sides',
  async (t) => {
    // A download in progress: the backend sends a chunk every 20 ms and never finishes.
    let backendEnded = '';
    const backend = await startBackend((socket) => {
      const timer = setInterval(() => socket.write(Buffer.alloc(1000, 0x61)), 20);
      socket.on('error', (err: NodeJS.ErrnoException) => {
        backendEnded ||= err.code ?? 'error';
      });
      socket.on('end', () => {
        backendEnded ||= 'FIN';
      });
      socket.on('close', () => clearInterval(timer));
    });
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--drain-timeout',
      '300ms',
      // Probes would be backend connections of their own, each ended by a FIN.
      '--no-health-check',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => backend.close());
    const client = await connect(fulcrum.port);
    let received = 0;
    client.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    const ended = new Promise<string>((resolve) => {
      client.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? 'error'));
      client.on('end', () => resolve('FIN'));
    });
    await waitFor(() => received >= 2000, 5000, 'the download to flow');
    t.equal(await fulcrum.stop('SIGTERM'), 0);
    t.equal(await ended, 'ECONNRESET', 'the client sees a reset, not a complete transfer');
    await waitFor(() => backendEnded !== '', 5000, 'the backend side to end');
    t.equal(backendEnded, 'ECONNRESET', `the backend sees a reset too (${backendEnded})`);
  },
);

t.test('a second signal exits at once', async (t) => {
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum(['--workers', '1', '--backend', backend.address]);
  t.teardown(() => backend.close());
  const live = await connect(fulcrum.port);
  await readLine(live);
  t.teardown(() => live.destroy());
  const exited = once(fulcrum.proc, 'exit');
  fulcrum.proc.kill('SIGTERM');
  await waitForLog(fulcrum, (l) => l.msg === 'stopping: draining', 5000, 'the drain to start');
  const started = Date.now();
  fulcrum.proc.kill('SIGTERM');
  const [code] = (await exited) as [number];
  t.equal(code, 1, 'a forced stop is not a clean one');
  t.ok(Date.now() - started < 1000);
});
