// A million datagrams through a UDP session trigger no garbage collection: the per-datagram path
// (find the session by address and port, count, send to the backend; count, send the reply from
// the listening socket) allocates nothing. Run in a child Node with --expose-gc, over real
// loopback sockets (see test/fixtures/udp-gc-probe.ts for what is and is not in the count).

import '../children.ts';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const probe = fileURLToPath(new URL('../fixtures/udp-gc-probe.ts', import.meta.url));

t.test('1M datagrams through a session, no gc', async (t) => {
  const run = spawnSync(process.execPath, ['--expose-gc', probe, '1000000'], { encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  const result = JSON.parse(run.stdout) as Record<string, number>;
  t.equal(result.datagrams, 1_000_000, 'every datagram went out, none dropped');
  t.equal(result.live, 1, 'one session carried them all');
  t.equal(result.gcs, 0, 'no garbage collection during the datagrams');
  // One 16-byte object per datagram would be 16 MB.
  t.ok(result.heapGrowth < 512 * 1024, `heap grew ${result.heapGrowth} bytes`);
});
