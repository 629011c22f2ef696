// Every connection finishes exactly once, whatever order its peers close, error and reset in.
// Each scenario drives many connections through an unlucky order and then checks the invariant
// (settled): the live counts are back at zero and the fulcrum process holds no TCP connection.

import net from 'node:net';
import t, { type Test } from 'tap';
import {
  connect,
  type Fulcrum,
  heldConnections,
  settled,
  socketPath,
  startBackend,
  startFulcrum,
  waitFor,
} from '../helpers.ts';

async function start(t: { teardown(fn: () => unknown): void }, args: string[]) {
  const stats = socketPath();
  const fulcrum = await startFulcrum(['--no-health-check', '--stats-socket', stats, ...args]);
  t.teardown(() => fulcrum.stop());
  return { stats, fulcrum };
}

/** A client that writes as fast as it may and never reads; calls `closed` when its socket does. */
function flood(port: number, closed: () => void): void {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  const chunk = Buffer.alloc(16 * 1024, 120);
  socket.pause();
  socket.on('error', () => {});
  socket.on('close', closed);
  const write = (): void => {
    while (socket.writable && socket.write(chunk)) {}
  };
  socket.on('connect', write);
  socket.on('drain', write);
}

/**
 * A backend that answers, FINs and closes at once, while its client goes on writing. Answers of
 * many sizes: fulcrum reads the FIN while its client's socket is full (its own FIN to the client
 * waits, a shutdown pending) and the client's next bytes hit the closed backend (EPIPE).
 */
async function answerAndClose() {
  let n = 0;
  return startBackend((socket) => {
    socket.write(Buffer.alloc(16 * 1024 * (1 + (n++ % 64)), 97));
    socket.end();
    socket.once('finish', () => socket.destroy());
  });
}

t.test(
  'a backend that answers, FINs and closes while its client writes and does not read',
  async (t) => {
    const backend = await answerAndClose();
    t.teardown(() => backend.close());
    const { stats, fulcrum } = await start(t, [
      '--workers',
      '1',
      '--max-connections',
      '20',
      '--backend',
      backend.address,
    ]);
    let closed = 0;
    for (let i = 0; i < 200; i++) flood(fulcrum.port, () => closed++);
    await waitFor(() => closed === 200, 30_000, 'fulcrum to close every client');
    await settled(stats, fulcrum);
    // Every slot of --max-connections came back: 20 clients at once are all served.
    const served = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const socket = await connect(fulcrum.port);
        const got = await new Promise<number>((resolve) => {
          let bytes = 0;
          socket.on('data', (chunk: Buffer) => {
            bytes += chunk.length;
          });
          socket.on('end', () => socket.end());
          socket.on('close', () => resolve(bytes));
          socket.on('error', () => {});
        });
        return got > 0;
      }),
    );
    t.equal(served.filter(Boolean).length, 20, 'no slot leaked');
    await settled(stats, fulcrum);
    t.ok((await stopTime(t, fulcrum)) < 5000, 'SIGTERM exits at once with nothing live');
  },
);

t.test('SIGTERM with such connections open exits by the drain timeout', async (t) => {
  const backend = await answerAndClose();
  t.teardown(() => backend.close());
  const { fulcrum } = await start(t, [
    '--workers',
    '2',
    '--drain-timeout',
    '1s',
    '--backend',
    backend.address,
  ]);
  for (let i = 0; i < 200; i++) flood(fulcrum.port, () => {});
  await waitFor(() => backend.accepted >= 20, 20_000, 'twenty connections through');
  t.ok(heldConnections(fulcrum.proc.pid as number) > 0, 'connections are open at SIGTERM');
  t.ok((await stopTime(t, fulcrum)) < 6000, 'exits soon after the 1 s drain timeout');
});

async function stopTime(t: Test, fulcrum: Fulcrum): Promise<number> {
  const started = Date.now();
  t.equal(await fulcrum.stop(), 0, 'exit status 0');
  return Date.now() - started;
}
