// The relay runs on Node's own TCP handles (src/data/internals.ts). This test fails loudly when a
// Node release changes what the relay relies on, so nobody runs the slower public fallback (or a
// broken relay) without knowing: each member is exercised the way connection.ts uses it.

import { once } from 'node:events';
import net from 'node:net';
import { getSystemErrorName } from 'node:util';
import t, { type Test } from 'tap';
import type { RawHandle, RawRequest } from '../../src/data/internals.ts';
import { hookAccept, loadRaw, raw, UV_EOF } from '../../src/data/internals.ts';
import { waitFor } from '../helpers.ts';

t.equal(getSystemErrorName(UV_EOF), 'EOF', 'UV_EOF is libuv end of stream');

t.test(`on Node ${process.version} the raw bindings load`, async (t) => {
  t.ok(raw !== null, 'tcp_wrap and stream_wrap have what the relay needs');
  t.ok(loadRaw() !== null);
});

/** A server whose accepted sockets are handed to `onSocket`. */
async function server(onSocket: (s: net.Socket) => void): Promise<net.Server> {
  const s = net.createServer({ allowHalfOpen: true }, onSocket);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  return s;
}

/** Connects a raw handle; resolves once connected (asserted on the calling test). */
async function rawConnect(t: Test, port: number): Promise<RawHandle> {
  const bindings = raw as NonNullable<typeof raw>;
  const handle = bindings.newSocket();
  handle.side = null;
  const req = bindings.newConnect();
  const done = new Promise<number>((resolve) => {
    req.oncomplete = (status: number) => resolve(status);
  });
  t.equal(handle.connect(req, '127.0.0.1', port), 0, 'connect starts');
  t.equal(await done, 0, 'connect completes');
  return handle;
}

t.test(
  'a raw handle reads into the buffer onread returns, writes, shuts down, sees EOF',
  async (t) => {
    const bindings = raw as NonNullable<typeof raw>;
    let peer: net.Socket | null = null;
    let fromRaw = '';
    let peerEnded = false;
    const srv = await server((s) => {
      peer = s;
      s.on('data', (d) => {
        fromRaw += d.toString();
      });
      s.on('end', () => {
        peerEnded = true;
      });
    });
    t.teardown(() => srv.close());
    const handle = await rawConnect(t, (srv.address() as net.AddressInfo).port);
    const out: { address?: string; port?: number } = {};
    t.equal(handle.getsockname(out), 0);
    t.equal(out.address, '127.0.0.1', 'getsockname fills the address');

    const first = Buffer.alloc(8);
    const second = Buffer.alloc(8);
    const reads: string[] = [];
    let eof = false;
    handle.useUserBuffer(first);
    handle.onread = function (this: RawHandle) {
      t.equal(this, handle, 'onread is called on the handle');
      const n = bindings.state[bindings.kReadBytesOrError];
      if (n === UV_EOF) {
        eof = true;
        return undefined;
      }
      // The first read lands in `first`, the next in `second` (what this one returns).
      reads.push((reads.length === 0 ? first : second).subarray(0, n).toString());
      return second;
    };
    t.equal(handle.readStart(), 0);
    await waitFor(() => peer !== null, 5000, 'the accepted peer');
    (peer as unknown as net.Socket).write('one');
    await waitFor(() => reads.length === 1, 5000, 'the first read');
    (peer as unknown as net.Socket).write('two');
    await waitFor(() => reads.length === 2, 5000, 'the second read');
    t.same(reads, ['one', 'two'], 'each read landed in the buffer given for it');

    const req = bindings.newWrite();
    // Read the state before any assertion: tap's own output is a stream write that overwrites it.
    const written = handle.writeBuffer(req, Buffer.from('hello'));
    const wasAsync = bindings.state[bindings.kLastWriteWasAsync];
    t.equal(written, 0);
    t.equal(wasAsync, 0, 'a small write completes at once');
    await waitFor(() => fromRaw === 'hello', 5000, 'the bytes at the peer');

    const shut = bindings.newShutdown();
    const shutDone = new Promise<[number, RawHandle]>((resolve) => {
      shut.oncomplete = (status: number, h: RawHandle) => resolve([status, h]);
    });
    t.equal(handle.shutdown(shut), 0);
    const [status, which] = await shutDone;
    t.equal(status, 0, 'shutdown completes');
    t.equal(which, handle, 'oncomplete names the handle');
    await waitFor(() => peerEnded, 5000, 'our FIN at the peer');
    (peer as unknown as net.Socket).end();
    await waitFor(() => eof, 5000, 'the peer FIN read as UV_EOF');

    const closed = new Promise<RawHandle>((resolve) => {
      handle.close(function (this: RawHandle) {
        resolve(this);
      });
    });
    t.equal(await closed, handle, 'the close callback runs on the handle');
  },
);

t.test('a write the peer cannot take pends, and completes once it reads', async (t) => {
  const bindings = raw as NonNullable<typeof raw>;
  let peer: net.Socket | null = null;
  const srv = await server((s) => {
    peer = s;
    s.pause();
  });
  t.teardown(() => srv.close());
  const handle = await rawConnect(t, (srv.address() as net.AddressInfo).port);
  await waitFor(() => peer !== null, 5000, 'the accepted peer');
  const big = Buffer.alloc(16 * 1024 * 1024);
  const req: RawRequest = bindings.newWrite();
  const completed = new Promise<number>((resolve) => {
    req.oncomplete = (status: number) => resolve(status);
  });
  const written = handle.writeBuffer(req, big);
  const wasAsync = bindings.state[bindings.kLastWriteWasAsync];
  t.equal(written, 0);
  t.equal(wasAsync, 1, 'pending');
  let got = 0;
  (peer as unknown as net.Socket).on('data', (d: Buffer) => {
    got += d.length;
  });
  (peer as unknown as net.Socket).resume();
  t.equal(await completed, 0, 'oncomplete(0) once written');
  await waitFor(() => got === big.length, 10_000, 'every byte at the peer');
  handle.close();
});

t.test('reset sends an RST: the peer sees ECONNRESET', async (t) => {
  let error = '';
  const srv = await server((s) => {
    s.on('error', (err: NodeJS.ErrnoException) => {
      error = err.code ?? '';
    });
  });
  t.teardown(() => srv.close());
  const handle = await rawConnect(t, (srv.address() as net.AddressInfo).port);
  await new Promise((resolve) => setImmediate(resolve));
  let closed = false;
  t.equal(
    handle.reset(() => {
      closed = true;
    }),
    0,
  );
  await waitFor(() => closed && error !== '', 5000, 'the reset seen');
  t.equal(error, 'ECONNRESET');
});

t.test('the accept hook installs and hands over raw handles', async (t) => {
  const srv = net.createServer({ pauseOnConnect: true });
  t.equal(
    hookAccept(srv, () => {}),
    false,
    'refused before listening: no handle yet',
  );
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  let peer = '';
  const installed = hookAccept(srv, (status: number, handle: RawHandle) => {
    t.equal(status, 0);
    const out: { address?: string } = {};
    handle.getpeername(out);
    peer = out.address ?? '';
    handle.close();
  });
  t.equal(installed, true, `hookAccept works on Node ${process.version}`);
  const client = net.connect((srv.address() as net.AddressInfo).port, '127.0.0.1');
  client.on('error', () => {});
  await waitFor(() => peer !== '', 5000, 'the accepted handle');
  t.equal(peer, '127.0.0.1');
  client.destroy();
});

t.test('FULCRUM_NO_ACCEPT_HOOK=1 turns the hook off', async (t) => {
  const srv = net.createServer();
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  t.teardown(() => srv.close());
  process.env.FULCRUM_NO_ACCEPT_HOOK = '1';
  t.teardown(() => {
    delete process.env.FULCRUM_NO_ACCEPT_HOOK;
  });
  t.equal(
    hookAccept(srv, () => {}),
    false,
  );
});
