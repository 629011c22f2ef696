// Health: active probes take a dead backend out and bring it back; the data plane's own failed
// connects count too (passive health); transitions are logged once; when every backend is down,
// new clients are closed at once.

import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import type { Backend, Fulcrum } from '../helpers.ts';
import { greet, readLine, startBackend, startFulcrum, waitFor, waitForLog } from '../helpers.ts';

/** Connects every 40 ms while running, noting who answered and any error a client saw. */
function clientLoop(port: number) {
  const answers: Array<{ at: number; from: string }> = [];
  let errors = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        const socket = net.connect(port, '127.0.0.1');
        await once(socket, 'connect');
        answers.push({ at: Date.now(), from: await readLine(socket) });
        socket.destroy();
      } catch {
        errors++;
      }
      await new Promise((resolve) => setTimeout(resolve, 40));
    }
  })();
  return {
    answers,
    errors: () => errors,
    stop: async () => {
      running = false;
      await loop;
    },
  };
}

const isTransition = (to: string, backend: Backend) => (line: Record<string, unknown>) =>
  line.msg === `backend ${to}` && line.backend === backend.address;

async function kill(backend: Backend): Promise<number> {
  await backend.close();
  return Date.now();
}

t.test('a killed backend is down within 2 s and up within 2 s of its return', async (t) => {
  const a = await startBackend(greet);
  let b = await startBackend(greet);
  const fulcrum: Fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--health-interval',
    '200ms',
    '--fall',
    '2',
    '--rise',
    '2',
    '--backend',
    a.address,
    '--backend',
    b.address,
  ]);
  const clients = clientLoop(fulcrum.port);
  t.teardown(async () => {
    await clients.stop();
    await fulcrum.stop();
    await a.close();
    await b.close();
  });
  await waitFor(() => clients.answers.length >= 5, 5000, 'clients to get going');

  const killedAt = await kill(b);
  const down = await waitForLog(fulcrum, isTransition('down', b), 2000, 'B to be marked down');
  t.ok(Date.now() - killedAt <= 2000, 'marked down within 2 s');
  t.match(
    down,
    { from: 'up', to: 'down', frontend: 'default' },
    'the transition names both states',
  );
  t.match(String(down.reason), /^connect (refused|failed)/, `with a reason: ${down.reason}`);
  const downAt = Date.now();
  await waitFor(() => clients.answers.some((x) => x.at > downAt + 300), 3000, 'more clients');
  t.ok(
    clients.answers.filter((x) => x.at > downAt).every((x) => x.from === String(a.port)),
    'while B is down every client goes to A',
  );

  b = await startBackend(greet, b.port);
  const backAt = Date.now();
  await waitForLog(fulcrum, isTransition('up', b), 2000, 'B to be marked up again');
  t.ok(Date.now() - backAt <= 2000, 'marked up within 2 s of its return');
  const upAt = Date.now();
  await waitFor(
    () => clients.answers.some((x) => x.at > upAt && x.from === String(b.port)),
    3000,
    'a client to reach B again',
  );
  t.equal(clients.errors(), 0, 'no client connection failed at any point');
  t.equal(
    fulcrum.logs.filter(isTransition('down', b)).length,
    1,
    'the down transition is logged once',
  );
  t.equal(fulcrum.logs.filter(isTransition('up', b)).length, 1, 'the up transition is logged once');
});

t.test('passive health: failed client connects take a backend out between probes', async (t) => {
  const a = await startBackend(greet);
  const b = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--algorithm',
    'round-robin',
    '--health-interval',
    '60s', // B's first probe is 30 s away: only passive health can act
    '--fall',
    '2',
    '--backend',
    a.address,
    '--backend',
    b.address,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await a.close();
  });
  await kill(b);
  for (let k = 0; k < 6; k++) {
    const socket = net.connect(fulcrum.port, '127.0.0.1');
    t.equal(await readLine(socket), String(a.port), 'the client still reaches A');
    socket.destroy();
  }
  const down = await waitForLog(fulcrum, isTransition('down', b), 1000, 'B to be marked down');
  t.equal(down.reason, 'connect failed');
});

t.test('every backend down: new clients are closed at once, and it is logged', async (t) => {
  const a = await startBackend(greet);
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--health-interval',
    '100ms',
    '--fall',
    '1',
    '--backend',
    a.address,
  ]);
  t.teardown(() => fulcrum.stop());
  await kill(a);
  await waitForLog(
    fulcrum,
    (l) => l.msg === 'no backend available: new clients are closed',
    2000,
    'the all-down line',
  );
  const started = Date.now();
  const socket = net.connect(fulcrum.port, '127.0.0.1');
  socket.on('error', () => {});
  socket.resume();
  await once(socket, 'close');
  t.ok(Date.now() - started < 500, `closed at once (${Date.now() - started} ms)`);
  t.equal(await fulcrum.stop(), 0);
  const summary = fulcrum.logs.find((l) => l.msg === 'stopped');
  t.equal(summary?.['no-backend'], 1, 'the refused client is counted');
});

t.test(
  '--no-health-check: no probes, no transitions; retries still cover a dead backend',
  async (t) => {
    const a = await startBackend(greet);
    const b = await startBackend(greet);
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--health-interval',
      '100ms',
      '--fall',
      '1',
      '--backend',
      a.address,
      '--backend',
      b.address,
    ]);
    t.teardown(async () => {
      await fulcrum.stop();
      await a.close();
    });
    await kill(b);
    for (let k = 0; k < 4; k++) {
      const socket = net.connect(fulcrum.port, '127.0.0.1');
      t.equal(await readLine(socket), String(a.port));
      socket.destroy();
    }
    // An observation window, not a synchronization: five probe intervals in which a probe, had
    // there been one, would have marked the dead backend down (fall 1).
    await new Promise((resolve) => setTimeout(resolve, 500));
    t.notOk(
      fulcrum.logs.some((l) => l.msg === 'backend down'),
      'no transition is logged',
    );
  },
);
