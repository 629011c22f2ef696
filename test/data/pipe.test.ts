// The pipe's edges, with fulcrum in its own process: resets forwarded as resets, half-close from
// the backend side, connect timeouts retried, idle timeouts, the global limit. (A client that
// does not read, and the same edges on both relay paths: paths.test.ts.)

import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  connect,
  greet,
  readLine,
  settled,
  socketPath,
  startBackend,
  startFulcrum,
  startInFront,
  waitFor,
} from '../helpers.ts';

// These backends see only the connections under test: no health probes reach them (a probe's
// own connect and close would otherwise look like a client's).
const PIPE_ONLY = ['--no-health-check'];

t.test('a backend reset reaches the client as a reset', async (t) => {
  const { fulcrum } = await startInFront(
    t,
    (socket) => {
      socket.write('x\n', () => setTimeout(() => socket.resetAndDestroy(), 50));
    },
    PIPE_ONLY,
  );
  const socket = await connect(fulcrum.port);
  const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
  t.equal(err.code, 'ECONNRESET');
});

t.test('a client reset reaches the backend as a reset', async (t) => {
  let backendError = '';
  const { fulcrum } = await startInFront(
    t,
    (socket) => {
      socket.write('x\n');
      socket.on('error', (err: NodeJS.ErrnoException) => {
        backendError = err.code ?? '';
      });
    },
    PIPE_ONLY,
  );
  const socket = await connect(fulcrum.port);
  await readLine(socket);
  socket.resetAndDestroy();
  await waitFor(() => backendError !== '', 3000, 'the backend to see the reset');
  t.equal(backendError, 'ECONNRESET');
});

t.test('half-close from the backend: the client still sends after the backend ends', async (t) => {
  let received = '';
  const backendDone = new Promise<void>((resolve) => {
    startBackend((socket) => {
      socket.end('bye\n'); // FIN to the client, but keep reading
      socket.on('data', (chunk: Buffer) => {
        received += chunk.toString();
      });
      socket.on('end', resolve);
    }).then((backend) => {
      backends.push(backend);
      ready(backend.address);
    });
  });
  const backends: Array<{ close(): Promise<void> }> = [];
  let ready: (address: string) => void = () => {};
  const address = await new Promise<string>((resolve) => {
    ready = resolve;
  });
  const fulcrum = await startFulcrum([...PIPE_ONLY, '--workers', '1', '--backend', address]);
  t.teardown(async () => {
    await fulcrum.stop();
    for (const b of backends) await b.close();
  });
  const socket = await connect(fulcrum.port);
  let got = '';
  socket.on('data', (chunk: Buffer) => {
    got += chunk.toString();
  });
  await once(socket, 'end');
  t.equal(got, 'bye\n', 'the client read everything, then the FIN');
  socket.end('late words\n');
  await backendDone;
  t.equal(received, 'late words\n', 'the backend got what the client sent after its FIN');
});

t.test('a connect that times out is retried on another backend', async (t) => {
  const stuck = spawn(
    process.execPath,
    [fileURLToPath(new URL('../fixtures/stuck-backend.ts', import.meta.url))],
    {
      stdio: ['ignore', 'pipe', 'ignore'],
    },
  );
  t.teardown(() => {
    stuck.kill('SIGKILL');
  });
  const [line] = (await once(stuck.stdout!, 'data')) as [Buffer];
  const stuckPort = Number(line.toString().trim());
  // Fill the stuck backend's accept queue, one connect at a time, until a connect hangs past the
  // first SYN retransmit (1 s): from then on the kernel drops SYNs to it, so fulcrum's connect
  // can only time out. (A connect with room in the queue completes in the kernel at once, even
  // on a loaded machine, so a second of silence means the queue is full.)
  const fillers: net.Socket[] = [];
  for (let hung = false; !hung && fillers.length < 20; ) {
    const filler = net.connect(stuckPort, '127.0.0.1').on('error', () => {});
    fillers.push(filler);
    hung = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(true), 1200);
      filler.once('connect', () => {
        clearTimeout(timer);
        resolve(false);
      });
    });
  }
  const good = await startBackend(greet);
  const fulcrum = await startFulcrum([
    ...PIPE_ONLY,
    '--workers',
    '1',
    '--algorithm',
    'round-robin',
    '--connect-timeout',
    '300ms',
    '--backend',
    `127.0.0.1:${stuckPort}`,
    '--backend',
    good.address,
  ]);
  t.teardown(async () => {
    for (const f of fillers) f.destroy();
    await fulcrum.stop();
    await good.close();
  });
  // Round-robin starts at the stuck backend: the first client waits out the connect timeout.
  const started = Date.now();
  const socket = await connect(fulcrum.port);
  t.equal(await readLine(socket), String(good.port), 'the client reached the good backend');
  const waited = Date.now() - started;
  t.ok(waited >= 300, `the connect timeout ran first (${waited} ms)`);
  t.ok(waited < 2000, `and no longer than it should (${waited} ms)`);
  socket.destroy();
});

t.test('a timeout never ends a connection before its time', async (t) => {
  const stats = socketPath();
  const { fulcrum } = await startInFront(t, greet, [
    ...PIPE_ONLY,
    '--stats-socket',
    stats,
    '--proxy-timeout',
    '150ms',
    '--listen',
    '127.0.0.1:0,accept-proxy',
  ]);
  // Deadlines are checked on the worker's 100 ms tick, and each close below happens on a tick.
  // The next client comes 0, 12, ... 84 ms after it, at every phase of the tick: counted from the
  // clock as it stood at the last tick rather than from the accept, the later ones would be cut
  // up to 84 ms early. (The pause places a client in the tick; it waits for nothing.)
  for (let i = 0; i < 8; i++) {
    await new Promise((resolve) => setTimeout(resolve, i * 12));
    const started = performance.now();
    const socket = net.connect(fulcrum.port, '127.0.0.1').on('error', () => {});
    socket.resume();
    await once(socket, 'close');
    const waited = performance.now() - started;
    t.ok(waited >= 150, `silence closed after ${waited.toFixed(0)} ms, not before 150`);
  }
  await settled(stats, fulcrum);
});

t.test('an idle connection is closed after --idle-timeout, and not long after', async (t) => {
  const stats = socketPath();
  const { fulcrum } = await startInFront(t, greet, [
    ...PIPE_ONLY,
    '--stats-socket',
    stats,
    '--idle-timeout',
    '300ms',
  ]);
  // Idle connections are found by a sweep on the worker's tick. Eight clients go quiet 125 ms
  // apart, at every phase of a second: with a sweep once a second (as for a 5-minute timeout),
  // some would wait most of a second more than their 300 ms. (The pauses place the clients;
  // they wait for nothing.)
  const lived = await Promise.all(
    Array.from({ length: 8 }, async (_, i) => {
      await new Promise((resolve) => setTimeout(resolve, i * 125));
      const socket = await connect(fulcrum.port);
      await readLine(socket);
      const started = performance.now();
      socket.on('error', () => {});
      await once(socket, 'end'); // fulcrum closed its side (the test client is half-open capable)
      socket.destroy();
      return performance.now() - started;
    }),
  );
  for (const ms of lived) {
    // Never early (the sweep allows for a clock a tick old); late by at most a tick or two.
    t.ok(ms >= 300 && ms < 1000, `closed after ${ms.toFixed(0)} ms idle (--idle-timeout 300ms)`);
  }
  await settled(stats, fulcrum);
});

t.test('--max-connections closes clients beyond the limit at once', async (t) => {
  const backend = await startBackend(greet);
  const fulcrum = await startFulcrum([
    ...PIPE_ONLY,

    '--workers',
    '2',
    '--max-connections',
    '3',
    '--backend',
    backend.address,
  ]);
  const held: net.Socket[] = [];
  t.teardown(async () => {
    for (const s of held) s.destroy();
    await fulcrum.stop();
    await backend.close();
  });
  for (let k = 0; k < 3; k++) {
    const socket = await connect(fulcrum.port);
    held.push(socket);
    await readLine(socket);
  }
  const refused = await connect(fulcrum.port);
  refused.on('error', () => {});
  let got = '';
  refused.on('data', (chunk: Buffer) => {
    got += chunk.toString();
  });
  await once(refused, 'end');
  t.equal(got, '', 'the fourth client got nothing and was closed');
  t.equal(backend.accepted, 3, 'no backend connection was made for it');
  held.pop()?.destroy();
  await waitFor(() => backend.open.size === 2, 2000, 'a slot to free up');
  const again = await connect(fulcrum.port);
  held.push(again);
  t.equal(await readLine(again), String(backend.port), 'a client is let in once a slot is free');
});
