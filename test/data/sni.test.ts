// Frontends chosen by TLS server name on one shared listener, end to end: real TLS clients
// (node:tls and `openssl s_client`) through fulcrum to real TLS backends, which terminate TLS
// themselves (fulcrum only reads the ClientHello). Exact names, wildcards, case, a hello split
// over segments and records, no server name, plain text, a stalled client, no frontend for a
// name, the checks made before the hello is read, hashing by name, the access log, and a reload
// that moves a name under load without dropping a connection. Each ends with live counts at zero.

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import tls from 'node:tls';
import t, { type Test } from 'tap';
import { query } from '../../src/stats/client.ts';
import {
  closedPort,
  ended,
  type Fulcrum,
  settled,
  showStat,
  socketPath,
  startFulcrum,
  waitFor,
  waitForLog,
} from '../helpers.ts';

// A self-signed certificate for example.com, *.example.com and other.test, for tests only.
const CERT = readFileSync(new URL('../fixtures/tls/cert.pem', import.meta.url));
const KEY = readFileSync(new URL('../fixtures/tls/key.pem', import.meta.url));
const CERT_PATH = new URL('../fixtures/tls/cert.pem', import.meta.url).pathname;

interface TlsBackend {
  readonly address: string;
  /** The server names its TLS clients asked for, as it saw them. */
  readonly names: string[];
  close(): Promise<void>;
}

/**
 * A backend that terminates TLS itself, greets each client with `name` and echoes. It takes plain
 * text too (a first byte that is not a TLS handshake), greeting with `NAME plain`.
 */
async function tlsBackend(name: string): Promise<TlsBackend> {
  const names: string[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((raw) => {
    sockets.add(raw);
    raw.on('close', () => sockets.delete(raw));
    raw.on('error', () => {});
    raw.once('readable', () => {
      const first = raw.read(1) as Buffer | null;
      if (first === null) return;
      raw.unshift(first);
      if (first[0] !== 0x16) {
        raw.write(`${name} plain\n`);
        raw.pipe(raw);
        return;
      }
      const secure = new tls.TLSSocket(raw, { isServer: true, cert: CERT, key: KEY });
      secure.on('error', () => {});
      secure.on('secure', () => {
        names.push(String((secure as tls.TLSSocket & { servername?: string }).servername ?? ''));
        secure.write(`${name}\n`);
        secure.pipe(secure);
      });
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    address: `127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    names,
    close: async () => {
      for (const s of sockets) s.destroy();
      server.close();
      await once(server, 'close');
    },
  };
}

/** TLS backends named `names`, closed when the test ends. */
async function tlsBackends(t: Test, ...names: string[]): Promise<TlsBackend[]> {
  const started = await Promise.all(names.map(tlsBackend));
  t.teardown(async () => {
    for (const b of started) await b.close();
  });
  return started;
}

/** Resolves with the first line `socket` receives. */
function firstLine(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) resolve(text.slice(0, nl));
    });
    socket.once('error', reject);
    socket.once('close', () => reject(new Error(`closed before a line (got "${text}")`)));
  });
}

/** TLS options that check the backend's chain but not its name (some names here it lacks). */
function tlsOptions(servername: string | null): tls.ConnectionOptions {
  return {
    ca: CERT,
    checkServerIdentity: () => undefined,
    ...(servername === null ? {} : { servername }),
  };
}

/** Connects over TLS asking for `servername`, reads the backend's greeting, and closes. */
async function greeting(port: number, servername: string | null): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, ...tlsOptions(servername) });
  try {
    return await firstLine(socket);
  } finally {
    socket.destroy();
  }
}

/** A plain TCP client's greeting. */
async function plainGreeting(port: number): Promise<string> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.write('hello in plain text\n');
  try {
    return await firstLine(socket);
  } finally {
    socket.destroy();
  }
}

/** A TLS client whose first flight reaches fulcrum in pieces: the hello re-cut into records of
 *  `record` bytes, written `segment` bytes at a time with a pause between (pacing, not waiting). */
async function splitGreeting(port: number, servername: string): Promise<string> {
  const raw = net.connect({ host: '127.0.0.1', port });
  raw.setNoDelay(true);
  await once(raw, 'connect');
  let first = true;
  const shim = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, callback) {
      if (!first) {
        raw.write(chunk, callback);
        return;
      }
      first = false;
      const records = recut(chunk, 60);
      const pieces: Buffer[] = [];
      for (let at = 0; at < records.length; at += 97) pieces.push(records.subarray(at, at + 97));
      const next = () => {
        const piece = pieces.shift();
        if (piece === undefined) {
          callback();
          return;
        }
        raw.write(piece);
        setTimeout(next, 5);
      };
      next();
    },
  });
  raw.on('data', (chunk) => shim.push(chunk));
  raw.on('close', () => shim.destroy());
  const socket = tls.connect({ socket: shim, ...tlsOptions(servername) });
  try {
    return await firstLine(socket);
  } finally {
    socket.destroy();
    raw.destroy();
  }
}

/** One TLS handshake record cut into records of at most `size` bytes of handshake each. */
function recut(record: Buffer, size: number): Buffer {
  const payload = record.subarray(5, 5 + record.readUInt16BE(3));
  const out: Buffer[] = [];
  for (let at = 0; at < payload.length; at += size) {
    const part = payload.subarray(at, at + size);
    const head = Buffer.from([record[0], record[1], record[2], 0, 0]);
    head.writeUInt16BE(part.length, 3);
    out.push(head, part);
  }
  out.push(record.subarray(5 + payload.length));
  return Buffer.concat(out);
}

const dir = mkdtempSync(join(tmpdir(), 'fulcrum-sni-'));
let files = 0;

interface FrontendSpec {
  name: string;
  serverNames?: string[];
  backends: string[];
  [key: string]: unknown;
}

/** Writes a config file (JSON is YAML) with these frontends, all on `listen`. The default
 *  inspect timeout (5 s) unless a test waits for it: a shorter one could close a client whose
 *  hello a loaded machine delays. */
function writeConfig(
  path: string,
  listen: string,
  frontends: FrontendSpec[],
  inspectTimeout = '5s',
): void {
  const config = {
    workers: 2,
    log: { level: 'info' },
    frontends: frontends.map((f) => ({ listen: [listen], inspectTimeout, ...f })),
  };
  writeFileSync(path, JSON.stringify(config, null, 2));
}

async function startShared(
  t: Test,
  frontends: FrontendSpec[],
  extra: string[] = [],
  listenOptions = '',
  inspectTimeout = '5s',
): Promise<{ fulcrum: Fulcrum; port: number; stats: string; path: string; listen: string }> {
  const port = await closedPort();
  const listen = `127.0.0.1:${port}${listenOptions}`;
  const path = join(dir, `c${files++}.yaml`);
  writeConfig(path, listen, frontends, inspectTimeout);
  const stats = socketPath();
  const fulcrum = await startFulcrum(['--config', path, '--stats-socket', stats, ...extra]);
  t.teardown(() => fulcrum.stop());
  return { fulcrum, port, stats, path, listen };
}

async function frontendStat(stats: string, name: string) {
  const found = (await showStat(stats)).find((f) => f.name === name);
  if (found === undefined) throw new Error(`no frontend ${name}`);
  return found;
}

t.test('one listener, three frontends: exact, wildcard, case, split, none, plain', async (t) => {
  const [api, wild, rest] = await tlsBackends(t, 'api', 'wild', 'rest');
  const { fulcrum, port, stats } = await startShared(
    t,
    [
      { name: 'api', serverNames: ['api.example.com'], backends: [api.address] },
      { name: 'wild', serverNames: ['*.example.com'], backends: [wild.address] },
      { name: 'rest', backends: [rest.address] },
    ],
    ['--access-log'],
    '',
    '1s',
  );

  t.equal(await greeting(port, 'api.example.com'), 'api', 'an exact name');
  t.equal(await greeting(port, 'API.Example.COM'), 'api', 'in any case');
  t.equal(await greeting(port, 'www.example.com'), 'wild', 'a wildcard');
  t.equal(await greeting(port, 'db-1.Example.com'), 'wild', 'the wildcard, any case');
  t.equal(await greeting(port, 'a.b.example.com'), 'rest', 'a wildcard covers one label only');
  t.equal(await greeting(port, 'example.com'), 'rest', 'nor the name it stands over');
  t.equal(await greeting(port, 'other.test'), 'rest', 'a name no frontend lists');
  t.equal(await greeting(port, null), 'rest', 'no server name');
  t.equal(await plainGreeting(port), 'rest plain', 'plain text, not TLS');
  t.equal(await splitGreeting(port, 'api.example.com'), 'api', 'a hello in pieces');
  t.same(api.names, ['api.example.com', 'API.Example.COM', 'api.example.com']);
  t.same(wild.names, ['www.example.com', 'db-1.Example.com'], 'backends see the name as sent');

  // A client that sends a part of a hello and stops is closed at --inspect-timeout, and counted.
  const stalled = net.connect({ host: '127.0.0.1', port });
  stalled.on('error', () => {});
  stalled.write(Buffer.from([0x16, 3, 1, 0, 200, 1]));
  const started = Date.now();
  await once(stalled, 'close');
  const held = Date.now() - started;
  // The coarse clock ticks every 100 ms: the close comes within a tick after the 1 s timeout.
  t.ok(held >= 1000 && held < 3000, `closed at the inspect timeout (${held} ms)`);

  const byName = new Map((await showStat(stats)).map((f) => [f.name, f]));
  t.equal(byName.get('api')?.accepted, 3, 'api counts its own clients');
  t.equal(byName.get('wild')?.accepted, 2);
  t.equal(byName.get('rest')?.accepted, 6, 'the fallback: its clients and the stalled one');
  t.equal(await ended(stats, 'inspect-timeout', 1), 1, 'the stalled client is counted');

  const logged = await waitForLog(
    fulcrum,
    (l) => l.msg === 'connection' && l.serverName === 'db-1.example.com',
    3000,
    'the access log line with the server name',
  );
  t.equal(logged.frontend, 'wild', 'the access log names the frontend and the server name');
  await settled(stats, fulcrum);
});

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

t.test(
  "openssl s_client: another TLS stack's ClientHello routes alike",
  // CI installs openssl (.ci/run) and so always runs this; elsewhere it needs the openssl package.
  { skip: hasOpenssl || process.env.CI === 'true' ? false : 'openssl is not installed' },
  async (t) => {
    const [api, wild] = await tlsBackends(t, 'api', 'wild');
    const { port, stats, fulcrum } = await startShared(t, [
      { name: 'api', serverNames: ['api.example.com'], backends: [api.address] },
      { name: 'wild', serverNames: ['*.example.com'], backends: [wild.address] },
    ]);
    const sClient = async (name: string) => {
      const openssl = spawn(
        'openssl',
        [
          's_client',
          '-connect',
          `127.0.0.1:${port}`,
          '-servername',
          name,
          '-CAfile',
          CERT_PATH,
          '-verify_return_error',
          '-quiet',
        ],
        { stdio: ['pipe', 'pipe', 'ignore'] },
      );
      openssl.on('error', (err) => t.fail(`openssl: ${err.message}`));
      const line = await new Promise<string>((resolve) => {
        let text = '';
        openssl.stdout.on('data', (chunk: Buffer) => {
          text += chunk.toString();
          if (text.includes('\n')) resolve(text.slice(0, text.indexOf('\n')));
        });
        openssl.once('exit', () => resolve(text));
      });
      openssl.kill();
      await once(openssl, 'exit');
      return line;
    };
    t.equal(
      await sClient('api.example.com'),
      'api',
      'openssl s_client -servername api.example.com',
    );
    t.equal(await sClient('DB.example.com'), 'wild', 'openssl s_client -servername DB.example.com');
    t.same(wild.names, ['DB.example.com']);
    await settled(stats, fulcrum);
  },
);

t.test('with no frontend for a name, the client is closed and counted', async (t) => {
  const [api, other] = await tlsBackends(t, 'api', 'other');
  const { port, stats, fulcrum } = await startShared(t, [
    { name: 'api', serverNames: ['api.example.com'], backends: [api.address] },
    { name: 'other', serverNames: ['other.test'], backends: [other.address] },
  ]);
  t.equal(await greeting(port, 'other.test'), 'other');
  await t.rejects(greeting(port, 'www.example.com'), 'an unmatched name is closed');
  await t.rejects(greeting(port, null), 'so is a client without one');
  await t.rejects(plainGreeting(port), 'and plain text');
  t.equal(await ended(stats, 'no-frontend', 3), 3, 'each is counted');
  t.equal((await frontendStat(stats, 'api')).accepted, 3, 'by the first frontend on the address');
  t.equal((await frontendStat(stats, 'other')).accepted, 1);
  await settled(stats, fulcrum);
});

t.test('allow/deny and the PROXY header come before the hello is read', async (t) => {
  const [api] = await tlsBackends(t, 'api');
  const deny = ['203.0.113.0/24'];
  const { port, stats, fulcrum } = await startShared(
    t,
    [
      { name: 'api', serverNames: ['api.example.com'], backends: [api.address], deny },
      { name: 'rest', backends: [api.address], deny },
    ],
    [],
    ',accept-proxy',
  );
  const header = (source: string) => `PROXY TCP4 ${source} 127.0.0.1 40000 ${port}\r\n`;
  const through = async (source: string) => {
    const raw = net.connect({ host: '127.0.0.1', port });
    await once(raw, 'connect');
    raw.write(header(source));
    const socket = tls.connect({ socket: raw, ...tlsOptions('api.example.com') });
    try {
      return await firstLine(socket);
    } finally {
      socket.destroy();
    }
  };
  t.equal(await through('198.51.100.7'), 'api', 'the PROXY header, then the hello: routed');
  const refused = net.connect({ host: '127.0.0.1', port });
  refused.on('error', () => {});
  refused.write(header('203.0.113.9'));
  await once(refused, 'close');
  t.equal(await ended(stats, 'denied', 1), 1, 'a denied client is closed on its header');
  t.equal((await frontendStat(stats, 'rest')).accepted, 1, 'counted by the door, the fallback');
  t.equal((await frontendStat(stats, 'api')).accepted, 1);
  await settled(stats, fulcrum);
});

t.test('hashKey sni: Maglev pins each server name to a backend', async (t) => {
  const backends = await tlsBackends(t, 'b0', 'b1', 'b2', 'b3');
  const { port, stats, fulcrum } = await startShared(t, [
    {
      name: 'pinned',
      serverNames: ['*.example.com'],
      algorithm: 'maglev',
      hashKey: 'sni',
      backends: backends.map((b) => b.address),
    },
  ]);
  const seen = new Map<string, Set<string>>();
  for (let n = 0; n < 12; n++) {
    const name = `tenant${n}.example.com`;
    const landed = new Set<string>();
    for (let k = 0; k < 3; k++) landed.add(await greeting(port, name));
    seen.set(name, landed);
  }
  for (const [name, landed] of seen) t.equal(landed.size, 1, `${name} always reaches one backend`);
  const used = new Set([...seen.values()].flatMap((s) => [...s]));
  t.ok(used.size >= 2, `twelve names spread over ${used.size} backends`);
  await settled(stats, fulcrum);
});

t.test('a reload moves a name to another frontend under load; nothing drops', async (t) => {
  const [a, b, rest] = await tlsBackends(t, 'a', 'b', 'rest');
  const before: FrontendSpec[] = [
    { name: 'api', serverNames: ['api.example.com'], backends: [a.address] },
    { name: 'web', serverNames: ['*.example.com'], backends: [b.address] },
    { name: 'rest', backends: [rest.address] },
  ];
  const { fulcrum, port, stats, path, listen } = await startShared(t, before);

  // A connection opened before the reload keeps its backend and keeps working after it.
  const held = tls.connect({ host: '127.0.0.1', port, ...tlsOptions('api.example.com') });
  t.equal(await firstLine(held), 'a');

  let stop = false;
  let failures = 0;
  let completed = 0;
  const landed: string[] = [];
  const client = async () => {
    while (!stop) {
      const socket = tls.connect({ host: '127.0.0.1', port, ...tlsOptions('api.example.com') });
      try {
        const who = await firstLine(socket);
        socket.write('ping\n');
        await new Promise<void>((resolve, reject) => {
          let echoed = '';
          socket.on('data', (chunk: Buffer) => {
            echoed += chunk.toString();
            if (echoed.includes('ping\n')) resolve();
          });
          socket.once('close', () => reject(new Error('closed before the echo')));
        });
        landed.push(who);
        completed++;
      } catch {
        failures++;
      } finally {
        socket.destroy();
      }
    }
  };
  const clients = Array.from({ length: 4 }, client);
  await waitFor(() => completed >= 20, 10_000, 'load before the reload');
  writeConfig(path, listen, [
    { name: 'api', serverNames: ['other.test'], backends: [a.address] },
    { name: 'web', serverNames: ['*.example.com', 'api.example.com'], backends: [b.address] },
    { name: 'rest', backends: [rest.address] },
  ]);
  const outcomes = fulcrum.logs.filter((l) => l.msg === 'reloaded').length;
  fulcrum.proc.kill('SIGHUP');
  await waitFor(
    () => fulcrum.logs.filter((l) => l.msg === 'reloaded').length > outcomes,
    10_000,
    'the reload',
  );
  const at = landed.length;
  await waitFor(() => landed.slice(at).filter((w) => w === 'b').length >= 20, 10_000, 'b');
  stop = true;
  await Promise.all(clients);
  t.equal(failures, 0, `${completed} connections, none failed across the reload`);
  t.ok(
    landed.slice(0, 20).every((w) => w === 'a'),
    'api.example.com went to api before',
  );
  t.equal(landed.slice(-10).join(''), 'b'.repeat(10), 'and goes to web after');
  held.write('still here\n');
  let echoed = '';
  held.on('data', (chunk: Buffer) => {
    echoed += chunk.toString();
  });
  await waitFor(() => echoed.includes('still here'), 3000, 'the held connection to echo');
  held.destroy();
  const answer = await query(stats, 'show stat json');
  t.ok(answer.includes('"web"'), 'stats still answer');
  await settled(stats, fulcrum);
});

t.test('hostile first bytes: a running balancer stays up and every client ends', async (t) => {
  const [api, rest] = await tlsBackends(t, 'api', 'rest');
  const { port, stats, fulcrum } = await startShared(
    t,
    [
      { name: 'api', serverNames: ['api.example.com'], backends: [api.address] },
      { name: 'rest', backends: [rest.address] },
    ],
    [],
    '',
    '1s',
  );
  // A real hello to mutate, as node:tls sends it.
  const hello = await new Promise<Buffer>((resolve) => {
    const capture = net.createServer((socket) => {
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk);
        socket.destroy();
        capture.close();
      });
    });
    capture.listen(0, '127.0.0.1', () => {
      const client = tls.connect({
        host: '127.0.0.1',
        port: (capture.address() as net.AddressInfo).port,
        servername: 'api.example.com',
      });
      client.on('error', () => {});
    });
  });
  const inputs: Buffer[] = [];
  for (let k = 0; k < 60; k++) {
    const mutated = Buffer.from(hello);
    for (let m = 0; m < 1 + (k % 4); m++) mutated[(k * 7919 + m * 104729) % hello.length] ^= 0xff;
    inputs.push(mutated);
    inputs.push(hello.subarray(0, (k * 37) % hello.length)); // cut short: held to the timeout
    inputs.push(randomBytes(1 + ((k * 131) % 2000)));
    inputs.push(Buffer.concat([Buffer.from([0x16, 3, 1, 0x40, 0]), randomBytes(k * 50)]));
  }
  const sent = inputs.map(async (input) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.on('data', () => {});
    await once(socket, 'connect');
    socket.write(input);
    // Cut-short hellos end at the inspect timeout; inputs routed to a backend may stay open
    // (the fallback echoes plain text), so the client lets go after 3 s. What is checked is that
    // fulcrum survives it all and its counts settle to zero.
    const closed = once(socket, 'close');
    const timer = setTimeout(() => socket.destroy(), 3000);
    await closed;
    clearTimeout(timer);
  });
  // Clients that close first, mid-hello, are let go as well.
  for (let k = 0; k < 20; k++) {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.on('error', () => {});
    socket.once('connect', () => {
      socket.write(hello.subarray(0, 30));
      socket.destroy();
    });
  }
  await Promise.all(sent);
  t.equal(await greeting(port, 'api.example.com'), 'api', 'a good client is still served');
  t.equal(fulcrum.proc.exitCode, null, 'fulcrum is still running');
  t.notOk(
    fulcrum.logs.some((l) => l.msg === 'worker crashed' || Number(l.level) >= 50),
    'no worker failed: nothing was logged as an error',
  );
  await settled(stats, fulcrum);
});
