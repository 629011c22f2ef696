// The accept hook and read-buffer re-pointing reach into Node internals (src/data/internals.ts). This test fails loudly when a
// Node release breaks it, so nobody runs the slower public fallback without knowing.

import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import type { TcpHandle } from '../../src/data/internals.ts';
import { adoptHandle, hookAccept } from '../../src/data/internals.ts';
import { waitFor } from '../helpers.ts';

t.test('on this Node the hook installs, and an adopted socket reads into our buffer', async (t) => {
  const server = net.createServer({ pauseOnConnect: true });
  t.equal(
    hookAccept(server, () => {}),
    false,
    'refused before listening: no handle yet',
  );
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());

  const buffer = Buffer.alloc(64);
  const reads: string[] = [];
  let adopted: net.Socket | null = null;
  const installed = hookAccept(server, (status: number, handle: TcpHandle) => {
    t.equal(status, 0);
    adopted = adoptHandle(
      net.Socket,
      handle,
      {
        buffer,
        callback: (nread: number, into: Uint8Array) => {
          t.equal(into.buffer, buffer.buffer, 'the read landed in the buffer we gave');
          reads.push(Buffer.from(into.subarray(0, nread)).toString());
          return true;
        },
      },
      1,
    );
    adopted.resume();
  });
  t.equal(installed, true, `hookAccept works on Node ${process.version}`);

  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await once(client, 'connect');
  client.end('through the hook');
  await waitFor(() => reads.join('') === 'through the hook', 5000, 'the bytes through the hook');
  t.same(reads.join(''), 'through the hook');
  t.ok(adopted !== null, 'the connection came through our accept function');
  (adopted as net.Socket | null)?.destroy();
});

t.test('FULCRUM_NO_ACCEPT_HOOK=1 turns the hook off', async (t) => {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  process.env.FULCRUM_NO_ACCEPT_HOOK = '1';
  t.teardown(() => {
    delete process.env.FULCRUM_NO_ACCEPT_HOOK;
  });
  t.equal(
    hookAccept(server, () => {}),
    false,
  );
});
