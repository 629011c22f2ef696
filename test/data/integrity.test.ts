// The pipe moves bytes exactly: 8 parallel connections each send 8 MiB of random bytes through
// fulcrum to an echo backend, half-close, and read back exactly the same bytes, then a clean end.
// Run once on the accept-hook path and once on Node's public path (the fallback).

import { createHash, randomBytes } from 'node:crypto';
import t from 'tap';
import { connect, echo, startBackend, startFulcrum } from '../helpers.ts';

const CONNECTIONS = 8;
const SIZE = 8 * 1024 * 1024;

async function roundTrip(port: number): Promise<{ sent: string; got: string; bytes: number }> {
  const payload = randomBytes(SIZE);
  const socket = await connect(port);
  const hash = createHash('sha256');
  let bytes = 0;
  const ended = new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    socket.on('end', resolve);
    socket.on('error', reject);
  });
  // Write in uneven pieces so reads and writes do not line up with buffer sizes.
  for (let offset = 0; offset < SIZE; ) {
    const size = Math.min(SIZE - offset, 1000 + Math.floor(Math.random() * 200_000));
    if (!socket.write(payload.subarray(offset, offset + size))) {
      await new Promise((resolve) => socket.once('drain', resolve));
    }
    offset += size;
  }
  socket.end(); // half-close: the answer must still arrive in full
  await ended;
  socket.destroy();
  return {
    sent: createHash('sha256').update(payload).digest('hex'),
    got: hash.digest('hex'),
    bytes,
  };
}

for (const path of ['accept hook', 'public fallback']) {
  t.test(`8 x 8 MiB echoed byte for byte (${path})`, async (t) => {
    const backends = [await startBackend(echo), await startBackend(echo)];
    const env = path === 'public fallback' ? { FULCRUM_NO_ACCEPT_HOOK: '1' } : {};
    const fulcrum = await startFulcrum(
      // No probes: the backends' accept counts below are then client connections only.
      [
        '--workers',
        '2',
        '--no-health-check',
        '--backend',
        backends[0].address,
        '--backend',
        backends[1].address,
      ],
      env,
    );
    t.teardown(async () => {
      await fulcrum.stop();
      for (const b of backends) await b.close();
    });
    const hookWarning = fulcrum.logs.some((l) => String(l.msg).includes('accept hook unavailable'));
    t.equal(hookWarning, path === 'public fallback', 'the expected accept path is in use');

    const results = await Promise.all(
      Array.from({ length: CONNECTIONS }, () => roundTrip(fulcrum.port)),
    );
    for (const result of results) {
      t.equal(result.bytes, SIZE, 'every byte came back');
      t.equal(result.got, result.sent, 'the same bytes, in order');
    }
    t.equal(backends[0].accepted + backends[1].accepted, CONNECTIONS);
    t.equal(await fulcrum.stop(), 0, 'exits 0 on SIGTERM');
  });
}
