// The relay's behaviour, the same on both of its paths: Node's raw TCP handles (the default) and
// the public API's sockets (FULCRUM_NO_ACCEPT_HOOK=1, or a Node whose handles changed). One
// frontend per path runs in this thread, so its live count is read directly: every scenario ends
// with it back at zero. Half-close both ways, resets both ways, a reader that stalls, PROXY
// headers in and out.

import { once } from 'node:events';
import type net from 'node:net';
import type { Test } from 'tap';
import t from 'tap';
import { type LocalFrontend, startLocalFrontend } from '../../src/local.ts';
import { LIVE } from '../../src/shared/counters.ts';
import { type Backend, connect, startBackend, waitFor } from '../helpers.ts';

/** Starts a frontend on `path` in front of a backend running `handler`. */
async function inFront(
  t: Test,
  path: string,
  handler: (socket: net.Socket) => void,
  args: string[] = [],
): Promise<{ local: LocalFrontend; backend: Backend }> {
  const backend = await startBackend(handler);
  if (path === 'public') process.env.FULCRUM_NO_ACCEPT_HOOK = '1';
  let local: LocalFrontend;
  try {
    const listen = args.includes('--listen') ? [] : ['--listen', '127.0.0.1:0'];
    local = await startLocalFrontend([...listen, ...args, '--backend', backend.address]);
  } finally {
    delete process.env.FULCRUM_NO_ACCEPT_HOOK;
  }
  t.equal(local.hooked, path === 'raw', `the ${path} path is in use`);
  t.teardown(async () => {
    local.close();
    await backend.close();
  });
  return { local, backend };
}

/** Every scenario ends here: nothing live left in the frontend. */
async function settled(t: Test, local: LocalFrontend): Promise<void> {
  await waitFor(() => local.frontend.slot[LIVE] === 0, 5000, 'live count back at zero');
  t.equal(local.frontend.slot[LIVE], 0, 'live count back at zero');
}

/** Everything a socket sends until its FIN. */
function readAll(socket: net.Socket): Promise<string> {
  let text = '';
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString();
  });
  return once(socket, 'end').then(() => text);
}

for (const path of ['raw', 'public']) {
  t.test(`${path}: half-close from the client, the answer still comes back`, async (t) => {
    const { local } = await inFront(t, path, (socket) => {
      readAll(socket).then((text) => socket.end(`got ${text}`));
    });
    const socket = await connect(local.port);
    const answer = readAll(socket);
    socket.end('question');
    t.equal(await answer, 'got question');
    socket.destroy();
    await settled(t, local);
  });

  t.test(`${path}: half-close from the backend, the client still sends`, async (t) => {
    let late: Promise<string> = Promise.resolve('(no backend connection)');
    const { local } = await inFront(t, path, (socket) => {
      late = readAll(socket);
      socket.end('bye');
      late.then(() => socket.destroy());
    });
    const socket = await connect(local.port);
    t.equal(await readAll(socket), 'bye', 'everything, then the FIN');
    socket.end('late words');
    t.equal(await late, 'late words', 'what the client sent after the FIN arrived');
    socket.destroy();
    await settled(t, local);
  });

  t.test(`${path}: a backend reset reaches the client as a reset`, async (t) => {
    const { local } = await inFront(t, path, (socket) => {
      // Only once the client's bytes came through: fulcrum is connected by then (a reset
      // before its connect completes would be a failed connect, retried). No write first: on
      // Node 22 a reset right after a write sends a FIN before the RST.
      socket.once('data', () => socket.resetAndDestroy());
    });
    const socket = await connect(local.port);
    socket.write('go');
    socket.resume();
    const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    t.equal(err.code, 'ECONNRESET');
    await settled(t, local);
  });

  t.test(`${path}: a client reset reaches the backend as a reset`, async (t) => {
    let backendError = '';
    const { local } = await inFront(t, path, (socket) => {
      socket.write('x');
      socket.on('error', (err: NodeJS.ErrnoException) => {
        backendError = err.code ?? '';
      });
    });
    const socket = await connect(local.port);
    await once(socket, 'data');
    socket.resetAndDestroy();
    await waitFor(() => backendError !== '', 5000, 'the backend to see the reset');
    t.equal(backendError, 'ECONNRESET');
    await settled(t, local);
  });

  t.test(`${path}: a client that does not read holds the backend back`, async (t) => {
    let pushed = 0;
    const chunk = Buffer.alloc(64 * 1024, 7);
    const { local } = await inFront(t, path, (socket) => {
      const pump = () => {
        while (!socket.destroyed) {
          pushed += chunk.length;
          if (!socket.write(chunk)) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      pump();
    });
    const socket = await connect(local.port);
    socket.pause(); // never reads
    // Wait until the backend has stopped: the same count on two looks 300 ms apart.
    let last = -1;
    const deadline = Date.now() + 10_000;
    while (pushed !== last && Date.now() < deadline) {
      last = pushed;
      await new Promise((resolve) => setTimeout(resolve, 300));
    }
    t.equal(pushed, last, 'the backend was stopped');
    // In flight: kernel buffers (several MiB on loopback) and one buffer in fulcrum.
    t.ok(pushed < 64 * 1024 * 1024, `${(pushed / 1048576).toFixed(1)} MiB pushed, then no more`);
    socket.destroy();
    await settled(t, local);
  });

  t.test(`${path}: accept-proxy in, send-proxy out`, async (t) => {
    const { local } = await inFront(
      t,
      path,
      (socket) => {
        readAll(socket).then((text) => socket.end(text));
      },
      ['--listen', '127.0.0.1:0,accept-proxy', '--send-proxy', 'v1'],
    );
    const socket = await connect(local.port);
    const echoed = readAll(socket);
    socket.end('PROXY TCP4 127.0.0.7 127.0.0.1 40001 443\r\nhello');
    t.equal(
      await echoed,
      'PROXY TCP4 127.0.0.7 127.0.0.1 40001 443\r\nhello',
      "the backend is told the header's client, then the bytes",
    );
    socket.destroy();
    await settled(t, local);
  });
}
