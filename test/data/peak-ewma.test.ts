// peak-EWMA end to end: of three backends, one answers 150 ms later than the others (its first
// byte comes late; well above what a machine loaded by other test runs adds to the fast ones). Within 5 s it gets under 10% of new connections; once the delay goes, its
// share comes back. Bounded: about 20 s of sequential connections on loopback.

import type net from 'node:net';
import t from 'tap';
import { connect, readLine, startBackend, startFulcrum } from '../helpers.ts';

t.test(
  'peak-ewma sheds a slow backend within 5 s and takes it back after it recovers',
  async (t) => {
    const delay = [0, 0, 150];
    const backends = await Promise.all(
      delay.map((_, b) =>
        startBackend((socket: net.Socket) => {
          setTimeout(() => socket.write(`${b}\n`), delay[b]);
          socket.resume();
          socket.on('end', () => socket.end());
        }),
      ),
    );
    t.teardown(() => Promise.all(backends.map((b) => b.close())));
    const fulcrum = await startFulcrum([
      '--algorithm',
      'peak-ewma',
      '--workers',
      '2',
      '--no-health-check',
      ...backends.flatMap((b) => ['--backend', b.address]),
    ]);
    t.teardown(() => fulcrum.stop());

    /** Sequential connections for `ms`; the slow backend's share over the last `windowMs`. */
    const run = async (ms: number, windowMs: number) => {
      const start = Date.now();
      const picks: Array<[number, number]> = [];
      while (Date.now() - start < ms) {
        const socket = await connect(fulcrum.port);
        picks.push([Date.now() - start, Number(await readLine(socket))]);
        socket.destroy();
      }
      const window = picks.filter(([at]) => at >= ms - windowMs);
      return window.filter(([, b]) => b === 2).length / window.length;
    };

    const shed = await run(5000, 2000);
    t.ok(shed < 0.1, `within 5 s the slow backend gets ${(shed * 100).toFixed(1)}% (under 10%)`);

    delay[2] = 0;
    let back = 0;
    const until = Date.now() + 25_000;
    while (Date.now() < until && back < 0.2) back = await run(2000, 2000);
    t.ok(back >= 0.2, `after the delay goes its share is back to ${(back * 100).toFixed(1)}%`);
  },
);
