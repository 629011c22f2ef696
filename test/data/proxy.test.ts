// The PROXY protocol on real sockets: send-proxy v1/v2 tells a backend the true client address
// and port; accept-proxy takes the client's address from an upstream balancer's header (for
// ACLs, logs and the header sent on), and refuses garbage or silence without touching a backend.

import net from 'node:net';
import t from 'tap';
import { parseProxyHeader } from '../../src/data/proxy-protocol.ts';
import { query } from '../../src/stats/client.ts';
import { echo, settled, socketPath, startBackend, startFulcrum, waitFor } from '../helpers.ts';

/** A backend that reads a PROXY header and answers with what it said, then echoes. */
function proxyAware(socket: net.Socket): void {
  let pending = Buffer.alloc(0);
  const onData = (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    const parsed = parseProxyHeader(pending);
    if (parsed.status === 'incomplete') return;
    socket.off('data', onData);
    if (parsed.status === 'invalid') {
      socket.end(`invalid: ${parsed.reason}\n`);
      return;
    }
    const a = parsed.addresses;
    socket.write(
      a === null ? 'local\n' : `${a.sourceAddress}:${a.sourcePort} -> ${a.destinationPort}\n`,
    );
    const rest = pending.subarray(parsed.length);
    if (rest.length > 0) socket.write(rest);
    socket.pipe(socket);
  };
  socket.on('data', onData);
}

/** Connects, sends `first`, and collects everything until the server closes (or `ms` pass). */
function exchange(
  port: number,
  first: Buffer | string,
  ms = 3000,
): Promise<{ text: string; local: net.AddressInfo }> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let text = '';
    let local: net.AddressInfo = { address: '', family: '', port: 0 };
    socket.on('connect', () => {
      local = { address: socket.localAddress ?? '', family: '', port: socket.localPort ?? 0 };
      socket.write(first);
    });
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
    });
    const done = () => resolve({ text, local });
    socket.on('close', done);
    socket.on('error', done);
    setTimeout(() => {
      socket.destroy();
      done();
    }, ms);
  });
}

for (const version of ['v1', 'v2']) {
  t.test(
    `send-proxy=${version}: the backend learns the true client address and port`,
    async (t) => {
      const backend = await startBackend(proxyAware);
      t.teardown(() => backend.close());
      const fulcrum = await startFulcrum([
        '--workers',
        '1',
        '--no-health-check',
        '--backend',
        `${backend.address},send-proxy=${version}`,
      ]);
      t.teardown(() => fulcrum.stop());
      const { text, local } = await exchange(fulcrum.port, 'hello\n', 500);
      t.equal(
        text.split('\n')[0],
        `${local.address}:${local.port} -> ${fulcrum.port}`,
        "the header carried the client's own address and port, and the port it reached",
      );
      t.match(text, /hello\n/, "then the client's bytes, untouched");
    },
  );
}

t.test('--send-proxy for the whole frontend; a backend may opt out', async (t) => {
  const aware = await startBackend(proxyAware);
  t.teardown(() => aware.close());
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--send-proxy',
    'v2',
    '--backend',
    aware.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const { text, local } = await exchange(fulcrum.port, 'x', 500);
  t.equal(text.split('\n')[0], `${local.address}:${local.port} -> ${fulcrum.port}`);
});

t.test(
  'accept-proxy: the upstream header names the client, for the backend and the log',
  async (t) => {
    const backend = await startBackend(proxyAware);
    t.teardown(() => backend.close());
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--access-log',
      '--listen',
      '127.0.0.1:0,accept-proxy',
      '--backend',
      `${backend.address},send-proxy=v1`,
    ]);
    t.teardown(() => fulcrum.stop());
    const header = 'PROXY TCP4 203.0.113.7 192.0.2.1 40000 5432\r\n';
    const { text } = await exchange(fulcrum.port, `${header}payload`, 500);
    t.equal(text.split('\n')[0], '203.0.113.7:40000 -> 5432', 'passed on as the client');
    t.match(text, /payload/, 'the bytes that came with the header reach the backend');
    await waitFor(() => fulcrum.logs.some((l) => l.msg === 'connection'), 3000, 'the access log');
    t.equal(fulcrum.logs.find((l) => l.msg === 'connection')?.client, '203.0.113.7:40000');
  },
);

t.test(
  'accept-proxy: garbage, or no header in time, is closed without touching a backend',
  async (t) => {
    const backend = await startBackend(proxyAware);
    t.teardown(() => backend.close());
    const fulcrum = await startFulcrum([
      '--workers',
      '2',
      '--no-health-check',
      '--proxy-timeout',
      '300ms',
      '--listen',
      '127.0.0.1:0,accept-proxy',
      '--backend',
      backend.address,
    ]);
    t.teardown(() => fulcrum.stop());
    for (const garbage of [
      'GET / HTTP/1.1\r\n\r\n',
      'PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n',
      '\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c',
    ]) {
      const started = Date.now();
      const { text } = await exchange(fulcrum.port, garbage);
      t.equal(
        text,
        '',
        `closed at once (${Date.now() - started} ms): ${JSON.stringify(garbage).slice(0, 30)}`,
      );
    }
    const started = Date.now();
    await exchange(fulcrum.port, '');
    const waited = Date.now() - started;
    // The coarse clock (100 ms ticks) may end it up to a tick late, never early.
    t.ok(waited >= 300 && waited < 2500, `silence closed after ${waited} ms`);
    t.equal(backend.accepted, 0, 'no backend was ever contacted');
  },
);

t.test('accept-proxy: --deny applies to the client the header names', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--no-health-check',
    '--deny',
    '203.0.113.0/24',
    '--listen',
    '127.0.0.1:0,accept-proxy',
    '--backend',
    backend.address,
  ]);
  t.teardown(() => fulcrum.stop());
  const denied = await exchange(fulcrum.port, 'PROXY TCP4 203.0.113.9 192.0.2.1 1000 80\r\n');
  t.equal(denied.text, '', 'a denied client behind the upstream is closed');
  const allowed = await exchange(
    fulcrum.port,
    'PROXY TCP4 198.51.100.9 192.0.2.1 1000 80\r\nhi',
    500,
  );
  t.match(allowed.text, /hi/, 'another client behind the same upstream is served');
  t.equal(backend.accepted, 1);
});

t.test(
  'accept-proxy-from: only the trusted upstream may send a header; others are closed and counted',
  async (t) => {
    const backend = await startBackend(proxyAware);
    t.teardown(() => backend.close());
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--no-health-check',
      '--stats-socket',
      stats,
      '--accept-proxy-from',
      '127.0.0.2/32',
      '--listen',
      '127.0.0.1:0,accept-proxy',
      '--backend',
      `${backend.address},send-proxy=v1`,
    ]);
    t.teardown(() => fulcrum.stop());
    const header = 'PROXY TCP4 203.0.113.7 192.0.2.1 40000 5432\r\n';
    /** Sends the header from `local` and collects what comes back until the close. */
    const from = (local: string) =>
      new Promise<string>((resolve) => {
        const socket = net.connect({ port: fulcrum.port, host: '127.0.0.1', localAddress: local });
        let text = '';
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('\n')) socket.end();
        });
        socket.on('error', () => {});
        socket.on('close', () => resolve(text));
        socket.on('connect', () => socket.write(header));
      });
    t.equal(await from('127.0.0.1'), '', 'an untrusted peer is closed');
    t.equal(backend.accepted, 0, 'without touching a backend');
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    t.equal(info['ended_untrusted-proxy'], 1, 'counted');
    t.equal(
      (await from('127.0.0.2')).split('\n')[0],
      '203.0.113.7:40000 -> 5432',
      'the trusted upstream speaks for its client',
    );
    t.ok(
      !fulcrum.logs.some((l) => String(l.msg).startsWith('accept-proxy trusts every peer')),
      'no warning when the list is set',
    );
    await settled(stats, fulcrum);
  },
);

t.test('accept-proxy without a trusted list: a warning at start', async (t) => {
  const backend = await startBackend(echo);
  t.teardown(() => backend.close());
  const fulcrum = await startFulcrum([
    '--no-health-check',
    '--listen',
    '127.0.0.1:0,accept-proxy',
    '--backend',
    backend.address,
  ]);
  t.teardown(() => fulcrum.stop());
  t.ok(fulcrum.logs.some((l) => String(l.msg).startsWith('accept-proxy trusts every peer')));
});
