// Health that knows the service: HTTP probes against a server that answers 503 then 200,
// send/expect against a real redis-server and an impostor, gRPC's health protocol against a
// minimal HTTP/2 server; every probe bounded (a trickle, a flood, garbage); the last check's words
// and duration in `show stat json` and in the transition log line; UDP probes (a datagram, its
// reply, silence, an ICMP refusal).

import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import t, { type Test } from 'tap';
import type { HealthConfig } from '../../src/config/types.ts';
import { MAX_PROBE_REPLY, probe, servingStatus } from '../../src/control/probes.ts';
import type { Fulcrum } from '../helpers.ts';
import {
  closedPort,
  connect,
  eventually,
  greet,
  readLine,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';
import { udpBackend } from '../udp.ts';

const HEALTH: HealthConfig = {
  enabled: true,
  intervalMs: 100,
  timeoutMs: 400,
  rise: 1,
  fall: 1,
  http: null,
  host: null,
  expectStatus: [[200, 399]],
  send: null,
  expect: null,
  grpc: null,
  port: null,
  udp: false,
};

/** One probe's verdict, awaited; `tls`: the backend speaks TLS. */
function probeOnce(port: number, health: Partial<HealthConfig>, tls: object | null = null) {
  return new Promise<{ ok: boolean | null; result: string; ms: number }>((resolve) => {
    const started = performance.now();
    probe({ host: '127.0.0.1', port, tls }, { ...HEALTH, ...health }, (ok, result) =>
      resolve({ ok, result, ms: performance.now() - started }),
    );
  });
}

/** An HTTP backend: `/ready` answers `ready.status`; anything else says which backend it is. */
async function httpBackend(name: string, status: number) {
  const ready = { status, hosts: [] as string[] };
  const server = http.createServer((req, res) => {
    if (req.url === '/ready') {
      ready.hosts.push(String(req.headers.host));
      res.writeHead(ready.status).end('ready?\n');
    } else {
      res.end(name);
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    ready,
    port,
    address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** A GET through fulcrum: the body (the backend's name). */
async function whoAnswers(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path: '/who', agent: false }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => {
          body += c.toString();
        });
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

/**
 * fulcrum in front of backends `a` and `b` (named so), probing with `probeArgs` every 100 ms,
 * rise and fall 1, with a stats socket; everything stops when the test ends.
 */
async function inFrontOfTwo(
  t: Test,
  probeArgs: string[],
  a: { address: string; close(): Promise<void> },
  b: { address: string; close(): Promise<void> },
) {
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    stats,
    ...probeArgs,
    '--health-interval',
    '100ms',
    '--rise',
    '1',
    '--fall',
    '1',
    '--backend',
    `${a.address},name=a`,
    '--backend',
    `${b.address},name=b`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await a.close();
    await b.close();
  });
  return { stats, fulcrum };
}

/** The log line of backend `name` going `to` (up or down). */
function transition(fulcrum: Fulcrum, to: 'up' | 'down', name: string) {
  return waitForLog(
    fulcrum,
    (l) => l.msg === `backend ${to}` && l.backend === name,
    5000,
    `${name} ${to}`,
  );
}

t.test('HTTP: a backend answering 503 is down with its words, and up again on 200', async (t) => {
  const a = await httpBackend('a', 503);
  const b = await httpBackend('b', 200);
  const { stats, fulcrum } = await inFrontOfTwo(t, ['--health-http', '/ready'], a, b);
  const down = await transition(fulcrum, 'down', 'a');
  t.match(down, { reason: 'HTTP 503', checkMs: Number, from: 'up', to: 'down' });
  await eventually(
    async () => (await showStat(stats))[0].backends.every((b) => b.check !== null),
    5000,
    'both backends probed',
  );
  const [statA, statB] = (await showStat(stats))[0].backends;
  t.match(statA, { state: 'down', check: { ok: false, result: 'HTTP 503', ms: Number } });
  t.match(statB, { state: 'up', check: { ok: true, result: 'HTTP 200' } });
  t.equal(a.ready.hosts[0], a.address, "Host: the backend's address");
  for (let i = 0; i < 6; i++) t.equal(await whoAnswers(fulcrum.port), 'b', 'only b gets clients');

  a.ready.status = 200;
  const up = await transition(fulcrum, 'up', 'a');
  t.match(up, { reason: 'HTTP 200' });
  const seen = new Set<string>();
  for (let i = 0; i < 6; i++) seen.add(await whoAnswers(fulcrum.port));
  t.same([...seen].sort(), ['a', 'b'], 'a gets clients again');
  await settled(stats, fulcrum);
});

t.test('HTTP: --health-host, --health-expect-status, --health-port', async (t) => {
  const sidecar = await httpBackend('sidecar', 204);
  const backend = await startBackend(greet);
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '1',
    '--stats-socket',
    stats,
    '--health-http',
    '/ready',
    '--health-host',
    'api.internal',
    '--health-expect-status',
    '200,204',
    '--health-port',
    String(sidecar.port),
    '--health-interval',
    '100ms',
    '--backend',
    backend.address,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    await backend.close();
    await sidecar.close();
  });
  await eventually(async () => sidecar.ready.hosts.length > 0, 5000, 'a probe of the sidecar');
  t.equal(sidecar.ready.hosts[0], 'api.internal');
  await eventually(
    async () => (await showStat(stats))[0].backends[0].check?.result === 'HTTP 204',
    5000,
    'the check result',
  );
  t.equal((await showStat(stats))[0].backends[0].state, 'up', '204 is in the expected list');
  sidecar.ready.status = 301;
  await waitForLog(fulcrum, (l) => l.msg === 'backend down', 5000, '301 is not in it');
  await settled(stats, fulcrum);
});

t.test('HTTP probes are bounded: a trickle, a flood and garbage all fail in time', async (t) => {
  const trickle = await startBackend((socket) => {
    socket.write('HTTP/1.1 200 OK\r\n');
    const timer = setInterval(() => socket.write('X'), 20);
    socket.on('close', () => clearInterval(timer));
  });
  const flood = await startBackend((socket) => {
    socket.once('data', () => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${4 * MAX_PROBE_REPLY}\r\n\r\n`);
      socket.write(Buffer.alloc(4 * MAX_PROBE_REPLY, 0x61));
    });
  });
  const garbage = await startBackend((socket) => {
    socket.once('data', () => socket.end('SSH-2.0-OpenSSH_9.2\r\n'));
  });
  const silent = await startBackend(() => {});
  const chatty = await startBackend((socket) => {
    socket.write(Buffer.alloc(4 * MAX_PROBE_REPLY, 0x61));
  });
  t.teardown(async () => {
    for (const b of [trickle, flood, garbage, silent, chatty]) await b.close();
  });
  const http = { http: '/ready', timeoutMs: 400 };
  const slow = await probeOnce(trickle.port, http);
  t.match(slow, { ok: false, result: 'HTTP timeout' });
  t.ok(slow.ms < 1500, `a trickle cannot hold the probe past its timeout (${slow.ms} ms)`);
  t.match(await probeOnce(flood.port, http), { ok: false, result: 'HTTP response too large' });
  t.match(await probeOnce(garbage.port, http), { ok: false, result: 'HTTP bad response' });
  t.match(await probeOnce(silent.port, http), { ok: false, result: 'HTTP timeout' });
  t.match(await probeOnce(await closedPort(), http), { ok: false, result: 'connect refused' });
  t.match(await probeOnce(await closedPort(), {}), { ok: false, result: 'connect refused' });
  t.match(await probeOnce(silent.port, {}), { ok: true, result: 'connect ok' });
  const expect = { expect: 'never said' };
  t.match(await probeOnce(chatty.port, expect), {
    ok: false,
    result: `expect not found in ${MAX_PROBE_REPLY} bytes`,
  });
  t.match(await probeOnce(silent.port, expect), { ok: false, result: 'expect timeout' });
  t.match(await probeOnce(trickle.port, expect), {
    ok: false,
    result: /^expect timeout, got "HTTP\/1.1 200 OK\\x0d\\x0aXX/,
  });
  t.match(await probeOnce(garbage.port, { send: 'PING\r\n', expect: '+PONG' }), {
    ok: false,
    result: 'expect mismatch: "SSH-2.0-OpenSSH_9.2\\x0d\\x0a"',
  });
});

/** A free port for a server fulcrum does not start (redis-server takes a number, not 0). */
async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

const hasRedis = spawnSync('redis-server', ['--version']).status === 0;

t.test(
  'send/expect: a real redis-server is up, an impostor on a live port is down',
  // CI installs redis-server (.ci/run) and so always runs this; elsewhere it needs
  // `apt-get install redis-server`.
  { skip: hasRedis || process.env.CI === 'true' ? false : 'redis-server is not installed' },
  async (t) => {
    const port = await freePort();
    const redis = spawn(
      'redis-server',
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      { stdio: 'ignore' },
    );
    t.teardown(() => redis.kill('SIGKILL'));
    await eventually(
      async () => {
        const socket = net.connect(port, '127.0.0.1');
        const ok = await once(socket, 'connect').then(
          () => true,
          () => false,
        );
        socket.destroy();
        return ok;
      },
      10_000,
      'redis-server to listen',
    );
    // A live port, and a real service, but not Redis: it answers PING with 400 and closes.
    const impostor = await httpBackend('impostor', 200);
    const stats = socketPath();
    const fulcrum = await startFulcrum([
      '--workers',
      '1',
      '--stats-socket',
      stats,
      '--health-send',
      'PING\\r\\n',
      '--health-expect',
      '+PONG',
      '--health-interval',
      '100ms',
      '--fall',
      '1',
      '--backend',
      `127.0.0.1:${port},name=redis`,
      '--backend',
      `${impostor.address},name=impostor`,
    ]);
    t.teardown(async () => {
      await fulcrum.stop();
      await impostor.close();
    });
    const down = await waitForLog(
      fulcrum,
      (l) => l.msg === 'backend down' && l.backend === 'impostor',
      5000,
      'the impostor down',
    );
    t.match(down.reason, /^expect mismatch: "HTTP\/1.1 400 Bad Request/);
    const [redisStat] = (await showStat(stats))[0].backends;
    t.match(redisStat, { state: 'up', check: { ok: true, result: 'expect ok' } });
    for (let i = 0; i < 4; i++) {
      const client = await connect(fulcrum.port);
      client.write('PING\r\n');
      t.equal(await readLine(client), '+PONG\r', 'every client reaches redis');
      client.destroy();
    }
    await settled(stats, fulcrum);
  },
);

t.test('expect alone matches a greeting, and sends nothing', async (t) => {
  let received = 0;
  const smtp = await startBackend((socket) => {
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    socket.write('220 mail.test ESMTP ready\r\n');
  });
  t.teardown(() => smtp.close());
  t.match(await probeOnce(smtp.port, { expect: '220 ' }), { ok: true, result: 'expect ok' });
  t.equal(received, 0, 'nothing was sent');
});

/** A gRPC health server: `status` by service name; an unknown service gets NOT_FOUND. */
async function grpcServer(status: Map<string, number>) {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    if (headers[':path'] !== '/grpc.health.v1.Health/Check') {
      stream.respond({ ':status': 200, 'content-type': 'text/plain' });
      stream.end('hello from grpc');
      return;
    }
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => {
      const frame = Buffer.concat(chunks);
      const service = frame.length > 7 ? frame.subarray(7, 7 + frame[6]).toString() : '';
      const value = status.get(service);
      if (value === undefined) {
        stream.respond(
          { ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '5' },
          { endStream: true },
        );
        return;
      }
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      // HealthCheckResponse { status = value }: field 1, varint.
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, value]));
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    address: `127.0.0.1:${port}`,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

t.test('gRPC: SERVING is up, NOT_SERVING is down, an unknown service is named', async (t) => {
  const serviceA = new Map([['my.Service', 1]]);
  const serviceB = new Map([['my.Service', 2]]);
  const a = await grpcServer(serviceA);
  const b = await grpcServer(serviceB);
  const { stats, fulcrum } = await inFrontOfTwo(t, ['--health-grpc', 'my.Service'], a, b);
  const down = await transition(fulcrum, 'down', 'b');
  t.equal(down.reason, 'gRPC NOT_SERVING');
  t.match((await showStat(stats))[0].backends[0], {
    state: 'up',
    check: { result: 'gRPC SERVING' },
  });
  serviceB.set('my.Service', 1);
  await transition(fulcrum, 'up', 'b');

  const grpc = { grpc: 'my.Service', timeoutMs: 1000 };
  t.match(await probeOnce(a.port, { ...grpc, grpc: 'other.Service' }), {
    ok: false,
    result: 'gRPC SERVICE_UNKNOWN',
  });
  const plain = await httpBackend('plain', 200);
  t.teardown(() => plain.close());
  t.match(await probeOnce(plain.port, grpc), { ok: false });
  t.match(await probeOnce(await closedPort(), grpc), { ok: false, result: 'connect refused' });
  await settled(stats, fulcrum);
});

t.test('a HealthCheckResponse decodes; anything else is not one', async (t) => {
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])), 1);
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 0])), 0, 'empty: the default, UNKNOWN');
  t.equal(servingStatus(Buffer.from([0, 0, 0, 0, 9, 0x08, 1])), null, 'short');
  t.equal(servingStatus(Buffer.from([1, 0, 0, 0, 2, 0x08, 1])), null, 'compressed');
  t.equal(servingStatus(Buffer.from('hello')), null);
});

t.test('regression: gRPC answers a gRPC client rejects are down', async (t) => {
  const serving = Buffer.from([0, 0, 0, 0, 2, 0x08, 1]);
  const server = http2.createServer();
  const mode = { contentType: 'text/html', trailers: true };
  server.on('stream', (stream) => {
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond(
        { ':status': 200, 'content-type': mode.contentType },
        { waitForTrailers: mode.trailers },
      );
      if (mode.trailers)
        stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(serving);
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const grpc = { grpc: 'my.Service', timeoutMs: 1000 };
  t.match(await probeOnce(port, grpc), { ok: false, result: 'gRPC: content-type "text/html"' });
  mode.contentType = 'application/grpc';
  mode.trailers = false;
  t.match(await probeOnce(port, grpc), { ok: false, result: 'gRPC: no grpc-status' });
  mode.trailers = true;
  t.match(await probeOnce(port, grpc), { ok: true, result: 'gRPC SERVING' }, 'a proper answer');
  mode.contentType = 'application/grpc+proto';
  t.match(await probeOnce(port, grpc), { ok: true }, 'application/grpc+proto is gRPC too');
});

t.test(
  'regression: send/expect shows UTF-8 as text and every control escaped; one bound however split',
  async (t) => {
    const reply = { chunks: [] as Buffer[] };
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      const chunks = [...reply.chunks];
      const next = () => {
        const chunk = chunks.shift();
        if (chunk === undefined) socket.end();
        else socket.write(chunk, () => setImmediate(next));
      };
      next();
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t.teardown(() => server.close());
    const port = (server.address() as net.AddressInfo).port;
    reply.chunks = [Buffer.from('h\u00e9llo \u009b[2J\x9b\x1b[31m', 'utf8'), Buffer.from([0x9b])];
    const out = await probeOnce(port, { expect: 'never said' });
    t.equal(out.result, 'expect mismatch: "h\u00e9llo \\x9b[2J\\x9b\\x1b[31m\ufffd"');
    t.notOk(/[\u0080-\u009f]/.test(out.result), 'no C1 control reaches the words');

    // The expected text just past the bound: not found whether it comes in one read or in two.
    const body = Buffer.concat([Buffer.alloc(MAX_PROBE_REPLY - 2, 0x41), Buffer.from('FOUND')]);
    reply.chunks = [body];
    t.match(await probeOnce(port, { expect: 'FOUND' }), {
      ok: false,
      result: `expect not found in ${MAX_PROBE_REPLY} bytes`,
    });
    reply.chunks = [body.subarray(0, MAX_PROBE_REPLY + 1), body.subarray(MAX_PROBE_REPLY + 1)];
    t.match(await probeOnce(port, { expect: 'FOUND' }), {
      ok: false,
      result: `expect not found in ${MAX_PROBE_REPLY} bytes`,
    });
    // Just within it: found both ways.
    const within = Buffer.concat([Buffer.alloc(MAX_PROBE_REPLY - 5, 0x41), Buffer.from('FOUND')]);
    reply.chunks = [within];
    t.match(await probeOnce(port, { expect: 'FOUND' }), { ok: true });
    reply.chunks = [within.subarray(0, 100), within.subarray(100)];
    t.match(await probeOnce(port, { expect: 'FOUND' }), { ok: true });
  },
);

t.test('UDP probes: a reply with the text, silence, and a refusal', async (t) => {
  const answering = await udpBackend('dns');
  const silent = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', resolve));
  const closed = await udpBackend('gone');
  const closedPort = closed.port;
  await closed.close();
  t.teardown(async () => {
    await answering.close();
    silent.close();
  });
  const udp = { udp: true, timeoutMs: 300 };
  // send/expect: the backend echoes with its name, so the reply contains `dns:PING`.
  t.match(await probeOnce(answering.port, { ...udp, send: 'PING', expect: 'dns:PING' }), {
    ok: true,
    result: 'expect ok',
  });
  const mismatch = await probeOnce(answering.port, { ...udp, send: 'PING', expect: 'PONG' });
  t.match(mismatch, { ok: false, result: 'udp mismatch: "dns:PING"' });
  const quiet = await probeOnce(silent.address().port, { ...udp, send: 'PING', expect: 'x' });
  t.match(quiet, { ok: false, result: 'udp timeout' });
  t.ok(quiet.ms >= 290, `timed out at the health timeout (${quiet.ms.toFixed(0)} ms)`);
  const refused = await probeOnce(closedPort, { ...udp, send: 'PING', expect: 'x' });
  t.match(refused, { ok: false, result: 'udp refused' });
  t.ok(refused.ms < 250, `an ICMP refusal is down at once (${refused.ms.toFixed(0)} ms)`);
  // Without expect: healthy unless refused (a datagram service need not answer).
  t.match(await probeOnce(silent.address().port, udp), { ok: true, result: 'udp: no refusal' });
  t.match(await probeOnce(closedPort, udp), { ok: false, result: 'udp refused' });
});

t.test('probes over TLS say where they stopped: connect, handshake, or the exchange', async (t) => {
  // Accepts, and never says a word: a TLS client waits for the server's hello forever.
  const silent = net.createServer((socket) => socket.on('error', () => {}));
  silent.listen(0, '127.0.0.1');
  await once(silent, 'listening');
  t.teardown(() => silent.close());
  const port = (silent.address() as net.AddressInfo).port;
  const secure = { rejectUnauthorized: false };
  const kinds: Array<[string, Partial<HealthConfig>]> = [
    ['HTTP', { http: '/healthz' }],
    ['send/expect', { send: 'PING\r\n', expect: '+PONG' }],
    ['gRPC', { grpc: '' }],
  ];
  for (const [kind, health] of kinds) {
    t.match(
      await probeOnce(port, { ...health, timeoutMs: 300 }, secure),
      { ok: false, result: 'tls handshake timeout' },
      `${kind}: a backend that never answers the handshake`,
    );
    t.match(
      await probeOnce(await closedPort(), { ...health, timeoutMs: 300 }, secure),
      { ok: false, result: 'connect refused' },
      `${kind}: a refused connect is one still`,
    );
  }
});
