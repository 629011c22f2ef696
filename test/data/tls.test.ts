// TLS termination (issue 28): certificates chosen by server name (exact, wildcard, default,
// strict), ALPN, client certificates (none, optional, required, revoked), resumption across
// workers and across instances, a reload that swaps the certificate while older streams run on,
// a file that does not load, handshake failures by reason. Real clients: node:tls, openssl
// s_client and curl; real certificates from a test CA made here.

import { execFile, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';
import t from 'tap';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { query } from '../../src/stats/client.ts';
import type { TlsStat } from '../../src/stats/view.ts';
import {
  type Backend,
  BIN,
  closedPort,
  eventually,
  type Fulcrum,
  settled,
  showStat,
  socketPath,
  startBackend,
  startFulcrum,
  waitForLog,
} from '../helpers.ts';
import { type Issued, TestCa } from '../tls.ts';

const run = promisify(execFile);

const ca = new TestCa();
const other = new TestCa('another CA');
t.teardown(() => {
  ca.cleanup();
  other.cleanup();
});
const ecdsa = ca.issue('a.test', { names: ['a.test', '*.w.test'] });
const rsa = ca.issue('b.test', { names: ['b.test'], rsa: true });
const client = ca.issue('client-one', { client: true });
const stranger = other.issue('stranger', { client: true });
const revoked = ca.issue('client-revoked', { client: true });
const crl = ca.revoke(revoked);

/** An echo backend that answers an HTTP GET with `ok` (for curl); it ends when its client does. */
function echoOrHttp(socket: net.Socket): void {
  socket.once('end', () => socket.end());
  socket.once('data', (first: Buffer) => {
    if (first.subarray(0, 4).toString() === 'GET ') {
      socket.end('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok');
      return;
    }
    socket.write(first);
    socket.pipe(socket);
  });
  socket.on('error', () => {});
}

interface Shake {
  socket: tls.TLSSocket;
  serial: string;
  alpn: string | false | null;
  reused: boolean;
}

/** A TLS client of fulcrum: resolves once its handshake is done, rejects if it fails. */
async function shake(port: number, options: tls.ConnectionOptions = {}): Promise<Shake> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: [ca.certPem()], ...options });
  socket.on('error', () => {});
  await Promise.race([
    once(socket, 'secureConnect'),
    once(socket, 'close').then(() => {
      throw new Error('closed before the handshake was done');
    }),
  ]);
  return {
    socket,
    serial: socket.getPeerX509Certificate()?.serialNumber ?? '',
    alpn: socket.alpnProtocol,
    reused: socket.isSessionReused(),
  };
}

/** Whether a client's handshake fails (and it gets no byte); with `send`, bytes it writes once
 *  (its "handshake" is done) that must not reach anyone. */
async function refused(port: number, options: tls.ConnectionOptions = {}): Promise<boolean> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: [ca.certPem()], ...options });
  let bytes = 0;
  socket.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
  });
  socket.on('error', () => {});
  // TLS 1.3: a client's handshake is done before the server has checked its certificate; what
  // it writes then is never answered, and the server closes.
  socket.on('secureConnect', () => socket.write('ping'));
  await closed(socket);
  return bytes === 0;
}

/** A session ticket from a full handshake with `port` (the server sends it once its side of the
 *  handshake is done); the connection is then dropped. */
async function ticketFrom(port: number, servername = 'a.test'): Promise<Buffer> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca: [ca.certPem()], servername });
  socket.on('error', () => {});
  const ticket = await new Promise<Buffer>((resolve, reject) => {
    socket.once('session', resolve);
    socket.once('close', () => reject(new Error('closed before a session ticket came')));
  });
  socket.destroy();
  return ticket;
}

/** One byte there and back through an echo backend, then the client leaves: the handshake is
 *  done on fulcrum's side too (a TLS 1.3 client finishes first). */
async function roundTrip(s: Shake): Promise<void> {
  await echoes(s.socket, 1);
  s.socket.destroy();
}

/** Resolves when `socket` closes, whatever error came before (events.once would reject). */
function closed(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => socket.once('close', () => resolve()));
}

/** Echoes `size` random bytes through a connection; true if every byte came back in order. */
async function echoes(socket: tls.TLSSocket, size: number): Promise<boolean> {
  const data = randomBytes(size);
  const back = createHash('sha256');
  let got = 0;
  const done = new Promise<void>((resolve, reject) => {
    const gone = () => reject(new Error(`closed after ${got} of ${size} bytes`));
    socket.once('close', gone);
    const take = (chunk: Buffer) => {
      back.update(chunk);
      got += chunk.length;
      if (got < size) return;
      socket.off('data', take);
      socket.off('close', gone);
      resolve();
    };
    socket.on('data', take);
  });
  socket.write(data);
  await done;
  return back.digest('hex') === createHash('sha256').update(data).digest('hex');
}

async function tlsStat(stats: string): Promise<TlsStat> {
  const answer = JSON.parse(await query(stats, 'show tls json')) as {
    frontends: Array<TlsStat & { name: string }>;
  };
  return answer.frontends[0];
}

function openssl(args: string[], input = ''): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile('openssl', args, { timeout: 10_000 }, (_err, stdout, stderr) =>
      resolve(`${stdout}${stderr}`),
    );
    child.stdin?.end(input);
  });
}

async function start(
  t: { teardown(fn: () => unknown): void },
  backend: Backend,
  args: string[],
): Promise<{ fulcrum: Fulcrum; stats: string }> {
  const stats = socketPath();
  const fulcrum = await startFulcrum([
    '--stats-socket',
    stats,
    '--backend',
    backend.address,
    '--no-health-check',
    ...args,
  ]);
  t.teardown(() => fulcrum.stop());
  return { fulcrum, stats };
}

t.test('certificates by server name, ALPN, resumption across workers, three clients', async (t) => {
  const backend = await startBackend(echoOrHttp);
  t.teardown(() => backend.close());
  const { fulcrum, stats } = await start(t, backend, [
    '--workers',
    '2',
    '--tls-cert',
    rsa.cert,
    '--tls-key',
    rsa.key,
    '--tls-cert',
    ecdsa.cert,
    '--tls-key',
    ecdsa.key,
    '--tls-alpn',
    'h2',
    '--tls-alpn',
    'http/1.1',
  ]);
  const port = fulcrum.port;
  const byName = async (servername?: string) => {
    // Only which certificate is served matters here, not whether it fits the name.
    const s = await shake(port, {
      checkServerIdentity: () => undefined,
      ...(servername === undefined ? {} : { servername }),
    });
    await roundTrip(s);
    return s.serial;
  };
  // The RSA certificate first: on Node 22 a name's certificate of another key type than the
  // first's is added beside it, not put in its place (README, TLS termination).
  t.equal(await byName('b.test'), rsa.serial, 'b.test gets its RSA certificate');
  t.equal(await byName('a.test'), ecdsa.serial, 'a.test gets the ECDSA one');
  t.equal(await byName('x.w.test'), ecdsa.serial, 'x.w.test: the *.w.test wildcard');
  t.equal(await byName('deep.x.w.test'), rsa.serial, 'a wildcard covers one label only...');
  t.equal(await byName('nowhere.test'), rsa.serial, '...and an unknown name gets the first');
  t.equal(await byName(), rsa.serial, 'so does a client without a name');

  const h2 = await shake(port, { servername: 'a.test', ALPNProtocols: ['h2', 'http/1.1'] });
  t.equal(h2.alpn, 'h2', 'ALPN: the server prefers h2');
  let chunks = 0;
  h2.socket.on('data', () => chunks++);
  t.ok(await echoes(h2.socket, 1024 * 1024), 'a MiB goes through and back byte for byte');
  // A stream towards a TLS client reads in large buffers: TLS records near their 16 KiB, not a
  // record per KiB (a thirteenth of HAProxy's throughput, before).
  t.ok(chunks < 256, `in ${chunks} reads, not a thousand`);
  h2.socket.end();
  const h1 = await shake(port, { servername: 'a.test', ALPNProtocols: ['http/1.1'] });
  t.equal(h1.alpn, 'http/1.1', 'ALPN: http/1.1 when that is all the client speaks');
  await roundTrip(h1);

  // TLS 1.3 tickets: sixteen resumptions land on both workers (the kernel spreads them).
  const session = await ticketFrom(port);
  let reused = 0;
  for (let i = 0; i < 16; i++) {
    const again = await shake(port, { servername: 'a.test', session });
    if (again.reused) reused++;
    await roundTrip(again);
  }
  t.equal(reused, 16, 'every TLS 1.3 reconnection resumed');
  t.match(await query(stats, 'rotate tls-keys'), /^rotated \(default\)/);
  const stale = await shake(port, { servername: 'a.test', session });
  t.notOk(stale.reused, 'after a rotation, a ticket sealed before gets a full handshake');
  await roundTrip(stale);
  const byWorker = (await tlsStat(stats)).workers;
  t.ok(
    byWorker.every((w) => w.resumed > 0),
    `resumed in both workers: ${byWorker.map((w) => w.resumed).join(' ')}`,
  );

  const reconnect = await openssl(
    [
      's_client',
      '-connect',
      `127.0.0.1:${port}`,
      '-servername',
      'b.test',
      '-CAfile',
      ca.cert,
      '-tls1_2',
      '-reconnect',
    ],
    '',
  );
  t.match(reconnect, /subject=CN = b\.test/, 's_client sees the b.test certificate');
  t.equal((reconnect.match(/^Reused, /gm) ?? []).length, 5, 's_client -reconnect: five reuses');

  // curl offers h2 first; the backend here speaks HTTP/1.1 only.
  const curl = await run('curl', [
    '-s',
    '--http1.1',
    '--cacert',
    ca.cert,
    '--resolve',
    `a.test:${port}:127.0.0.1`,
    `https://a.test:${port}/`,
  ]);
  t.equal(curl.stdout, 'ok', 'curl verifies the certificate and gets its answer');

  const tlsNow = await tlsStat(stats);
  t.ok(tlsNow.handshakes >= 28, `handshakes counted: ${tlsNow.handshakes}`);
  t.ok(tlsNow.resumed >= 21, `resumed counted: ${tlsNow.resumed}`);
  t.ok(tlsNow.handshakeMs.count >= 28, 'handshake times recorded');
  t.same(
    tlsNow.certificates.map((c) => [c.serial, c.keyType, c.names.join(',')]),
    [
      [rsa.serial, 'rsa', 'b.test'],
      [ecdsa.serial, 'ec', 'a.test,*.w.test'],
    ],
    'show tls: each certificate, its key type and names',
  );
  t.match(await query(stats, 'show tls'), /a\.test,\*\.w\.test/);
  t.match(await query(stats, 'show latency'), /TLS handshake time/);
  t.match(await query(stats, 'show stat'), /HANDSHAKES/);
  const top = spawnSync(process.execPath, [BIN, 'top', '--socket', stats, '-n', '1'], {
    encoding: 'utf8',
    timeout: 20_000,
  });
  t.match(top.stdout, /% resumed/, 'fulcrum top: handshakes, their times, the resumed share');
  await settled(stats, fulcrum);
});

t.test('strict SNI refuses unknown names and nameless clients; failures by reason', async (t) => {
  const backend = await startBackend(echoOrHttp);
  t.teardown(() => backend.close());
  const { fulcrum, stats } = await start(t, backend, [
    '--tls-cert',
    ecdsa.cert,
    '--tls-key',
    ecdsa.key,
    '--tls-strict-sni',
    '--tls-handshake-timeout',
    '300ms',
    '--tls-min-version',
    'TLSv1.3',
  ]);
  const port = fulcrum.port;
  const ok = await shake(port, { servername: 'x.w.test' });
  t.equal(ok.serial, ecdsa.serial, 'a name a certificate covers is served');
  await roundTrip(ok);
  // A resumed handshake chooses no certificate (the session has one): strict SNI lets it by.
  const again = await shake(port, {
    servername: 'x.w.test',
    session: await ticketFrom(port, 'x.w.test'),
  });
  t.ok(again.reused, 'a ticket of a named handshake resumes under strict SNI');
  await roundTrip(again);
  t.ok(await refused(port, { servername: 'nowhere.test' }), 'an unknown name fails');
  t.ok(await refused(port), 'so does a client without a name');
  t.ok(
    await refused(port, { servername: 'a.test', maxVersion: 'TLSv1.2' }),
    'TLS 1.2 under a TLS 1.3 minimum fails',
  );
  const plain = net.connect(port, '127.0.0.1');
  plain.on('error', () => {});
  plain.write('GET / HTTP/1.1\r\n\r\n');
  await closed(plain);
  const silent = net.connect(port, '127.0.0.1');
  silent.on('error', () => {});
  await closed(silent);
  const quitter = net.connect(port, '127.0.0.1');
  await once(quitter, 'connect');
  quitter.destroy();
  let failed: TlsStat['failed'] | null = null;
  await eventually(
    async () => {
      failed = (await tlsStat(stats)).failed;
      return failed.aborted >= 1 && failed.timeout >= 1;
    },
    5000,
    'the failures to be counted',
  );
  t.same(
    failed,
    {
      'no-certificate': 2,
      'client-cert-missing': 0,
      'client-cert-invalid': 0,
      protocol: 2,
      timeout: 1,
      aborted: 1,
    },
    'each failure under its reason',
  );
  const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
  t.equal(info['ended_tls-failed'], 6, 'six connections ended tls-failed');
  t.equal(
    backend.accepted,
    3,
    'only the good clients (named, its ticket, resumed) reached the backend',
  );
  await settled(stats, fulcrum);
});

/** The SSL TLV of a PROXY v2 header: the client bits, verify, and the CN sub-TLV. */
function sslTlv(header: Buffer): { client: number; verify: number; cn: string } | null {
  const length = header.readUInt16BE(14);
  let at = 16 + (header[13] === 0x11 ? 12 : 36);
  const end = 16 + length;
  while (at < end) {
    const type = header[at];
    const size = header.readUInt16BE(at + 1);
    if (type === 0x20) {
      let sub = at + 3 + 5;
      let cn = '';
      while (sub < at + 3 + size) {
        const len = header.readUInt16BE(sub + 1);
        if (header[sub] === 0x22) cn = header.subarray(sub + 3, sub + 3 + len).toString();
        sub += 3 + len;
      }
      return { client: header[at + 3], verify: header.readUInt32BE(at + 4), cn };
    }
    at += 3 + size;
  }
  return null;
}

/** The PP2_TYPE_AUTHORITY TLV of a PROXY v2 header (the server name), or null. */
function authorityTlv(header: Buffer): string | null {
  const end = 16 + header.readUInt16BE(14);
  for (let at = 16 + (header[13] === 0x11 ? 12 : 36); at < end; ) {
    const size = header.readUInt16BE(at + 1);
    if (header[at] === 0x02) return header.subarray(at + 3, at + 3 + size).toString();
    at += 3 + size;
  }
  return null;
}

t.test('client certificates: required, optional and none, by reload; a CRL', async (t) => {
  // A backend that reads the PROXY v2 header, keeps it, and answers "hi".
  const headers: Buffer[] = [];
  const backend = await startBackend((socket) => {
    socket.once('data', (chunk: Buffer) => {
      headers.push(chunk);
      socket.end('hi');
    });
    socket.on('error', () => {});
  });
  t.teardown(() => backend.close());
  const plain = await startBackend(echoOrHttp);
  t.teardown(() => plain.close());
  const dir = ca.dir;
  const file = join(dir, 'mtls.yaml');
  const stats = socketPath();
  const write = (verify: string) =>
    writeFileSync(
      file,
      `statsSocket: ${stats}\nworkers: 1\nlog: { access: true }\nfrontends:\n  - name: mtls\n    listen: [127.0.0.1:0]\n    health: false\n    sendProxy: v2\n    backends: [${backend.address}]\n    tls:\n      certificates: [{ cert: ${ecdsa.cert}, key: ${ecdsa.key} }]\n      ca: ${ca.cert}\n      crl: ${crl}\n      verify: ${verify}\n  - name: open\n    listen: [127.0.0.1:0]\n    health: false\n    backends: [${plain.address}]\n    tls: { certificates: [{ cert: ${ecdsa.cert}, key: ${ecdsa.key} }] }\n`,
    );
  write('required');
  const fulcrum = await startFulcrum(['--config', file]);
  t.teardown(() => fulcrum.stop());
  const port = fulcrum.ports.mtls[0];
  let session: Buffer | undefined;
  let resumed = false;
  const answer = async (options: tls.ConnectionOptions) => {
    const s = await shake(port, { servername: 'a.test', ...options });
    resumed = s.reused;
    s.socket.on('session', (ticket: Buffer) => {
      session = ticket;
    });
    s.socket.write('x');
    let text = '';
    s.socket.on('data', (chunk: Buffer) => {
      text += chunk.toString();
    });
    await once(s.socket, 'end');
    s.socket.destroy();
    return text;
  };
  const pem = (issued: Issued) => ({
    cert: ca.read(issued.cert),
    key: ca.read(issued.key),
  });

  t.equal(await answer(pem(client)), 'hi', 'required: a client with a valid certificate is served');
  t.same(
    sslTlv(headers[0]),
    { client: 0x03, verify: 0, cn: 'client-one' },
    'its verified CN goes to the backend in the PROXY v2 SSL TLV',
  );
  t.equal(
    authorityTlv(headers[0]),
    'a.test',
    'and the name it asked for in PP2_TYPE_AUTHORITY (one certificate: no SNI callback asked)',
  );
  t.ok(await refused(port, { servername: 'a.test' }), 'required: no certificate, no service');
  t.ok(await refused(port, { servername: 'a.test', ...pem(stranger) }), 'another CA: refused');
  t.ok(await refused(port, { servername: 'a.test', ...pem(revoked) }), 'revoked (CRL): refused');
  let stat = await tlsStat(stats);
  t.equal(stat.failed['client-cert-missing'], 1);
  t.equal(stat.failed['client-cert-invalid'], 2);
  t.equal(backend.accepted, 1, 'only the valid client reached the backend');
  const logged = await waitForLog(
    fulcrum,
    (l) =>
      l.msg === 'connection' &&
      (l.tls as { clientCert?: string } | undefined)?.clientCert === 'client-one',
    5000,
    'the access log line of the verified client',
  );
  t.equal((logged.tls as { clientVerified: boolean }).clientVerified, true);

  // Its ticket resumes, still verified (the certificate is the session's).
  t.ok(session !== undefined, 'a ticket came');
  t.equal(await answer({ ...pem(client), session }), 'hi', 'the verified client resumes');
  t.ok(resumed, 'resumed, not a full handshake');
  t.same(
    sslTlv(headers[1]),
    { client: 0x05, verify: 0, cn: 'client-one' },
    'its session is verified',
  );
  headers.splice(1, 1);
  // A ticket from a frontend that asks for no certificate does not open this one.
  const ticket = await ticketFrom(fulcrum.ports.open[0]);
  t.ok(
    await refused(port, { servername: 'a.test', session: ticket }),
    "another frontend's ticket: refused",
  );
  t.equal(backend.accepted, 2, 'nobody else reached the backend');

  write('optional');
  t.match(await query(stats, 'reload'), /^reloaded/);
  t.equal(await answer({}), 'hi', 'optional: a client without a certificate is served');
  t.same(sslTlv(headers[1]), { client: 0x01, verify: 1, cn: '' }, 'unverified, said so');
  t.equal(await answer(pem(stranger)), 'hi', 'optional: an unverifiable one too');
  t.same(sslTlv(headers[2]), { client: 0x03, verify: 1, cn: '' }, 'its CN is not passed on');

  write('none');
  t.match(await query(stats, 'reload'), /^reloaded/);
  t.equal(await answer(pem(client)), 'hi', 'none: nothing is asked');
  t.same(sslTlv(headers[3]), { client: 0x01, verify: 0, cn: '' });
  stat = await tlsStat(stats);
  t.equal(stat.handshakes, 5);
  await settled(stats, fulcrum);
});

t.test(
  'a reload swaps the certificate, a stream opened before runs on; an upgrade keeps the ticket keys',
  async (t) => {
    const backend = await startBackend(echoOrHttp);
    t.teardown(() => backend.close());
    const cert = join(ca.dir, 'live.pem');
    const key = join(ca.dir, 'live.key');
    const install = (issued: Issued) => {
      copyFileSync(issued.cert, cert);
      copyFileSync(issued.key, key);
    };
    const before = ca.issue('a.test', { names: ['a.test'] });
    install(before);
    const file = join(ca.dir, 'reload.yaml');
    const stats = socketPath();
    writeFileSync(
      file,
      `statsSocket: ${stats}\nworkers: 1\nfrontends:\n  - name: web\n    listen: [127.0.0.1:0]\n    health: false\n    backends: [${backend.address}]\n    tls: { certificates: [{ cert: ${cert}, key: ${key} }] }\n`,
    );
    const fulcrum = await startFulcrum(['--config', file]);
    t.teardown(() => fulcrum.stop());
    const old = await shake(fulcrum.port, { servername: 'a.test' });
    t.equal(old.serial, before.serial);
    t.ok(await echoes(old.socket, 256 * 1024), 'the stream runs');

    const after = ca.issue('a.test', { names: ['a.test'] });
    install(after);
    t.match(await query(stats, 'reload'), /^reloaded/);
    const fresh = await shake(fulcrum.port, { servername: 'a.test' });
    t.equal(fresh.serial, after.serial, 'a new handshake gets the new certificate');
    await roundTrip(fresh);
    t.equal(
      (await tlsStat(stats)).certificates[0].serial,
      after.serial,
      'show tls: the new serial',
    );
    t.ok(
      await echoes(old.socket, 256 * 1024),
      'the stream opened before still runs, byte for byte',
    );

    writeFileSync(cert, 'not a certificate\n');
    const failed = await query(stats, 'reload');
    t.match(failed, new RegExp(`${cert}: not a PEM certificate`), 'a bad file fails the reload');
    const still = await shake(fulcrum.port, { servername: 'a.test' });
    t.equal(still.serial, after.serial, 'and the certificate in use stays');
    await roundTrip(still);
    old.socket.end();
    await closed(old.socket);
    await settled(stats, fulcrum);

    // An upgrade hands the ticket keys on (not through the environment, which outlives them): a
    // client's ticket from before resumes on the successor instead of a full handshake each.
    install(after);
    const ticket = await ticketFrom(fulcrum.port);
    const answer = await query(stats, 'upgrade');
    const next = Number(/pid (\d+) serves now/.exec(answer)?.[1]);
    t.ok(next > 0 && next !== fulcrum.proc.pid, answer.trim());
    t.teardown(() => {
      try {
        process.kill(next, 'SIGTERM');
      } catch {
        // gone already
      }
    });
    const resumed = await shake(fulcrum.port, { servername: 'a.test', session: ticket });
    t.ok(resumed.reused, 'a ticket sealed before the upgrade resumes after it');
    await roundTrip(resumed);
    t.equal(Number(JSON.parse(await query(stats, 'show info json')).pid), next, 'the successor');
    const handover = readFileSync(`/proc/${next}/environ`, 'latin1')
      .split('\0')
      .find((v) => v.startsWith('FULCRUM_UPGRADE='));
    t.same(
      Object.keys(JSON.parse(handover?.slice('FULCRUM_UPGRADE='.length) ?? '{}')).sort(),
      ['bound', 'sockets', 'ticketKeysFd'],
      'no key in its environment: only where they come from',
    );
    await settled(stats);
  },
);

t.test('a certificate that does not load: one line, exit 2, at start and at check', async (t) => {
  const garbage = join(ca.dir, 'garbage.pem');
  writeFileSync(garbage, 'nothing here\n');
  const cases: Array<[string[], RegExp]> = [
    [['--tls-cert', garbage, '--tls-key', ecdsa.key], /garbage\.pem: not a PEM certificate/],
    [['--tls-cert', ecdsa.cert, '--tls-key', rsa.key], /is not the private key of/],
    [['--tls-cert', ecdsa.cert], /1 --tls-cert and 0 --tls-key/],
    [
      ['--tls-cert', join(ca.dir, 'missing.pem'), '--tls-key', ecdsa.key],
      /cannot read the certificate \(ENOENT\)/,
    ],
    [
      ['--tls-verify', 'required', '--tls-cert', ecdsa.cert, '--tls-key', ecdsa.key],
      /--tls-verify: required needs --tls-ca/,
    ],
  ];
  // Each through the loader a start uses (one ConfigError, its message the line printed);
  // the first also as a real start: the line, and exit 2.
  for (const [args, message] of cases) {
    const loader = loaderFromArgs(['--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', ...args]);
    await t.rejects(loader(), { code: 'FULCRUM_BAD_CONFIG', message }, args.join(' '));
  }
  const result = spawnSync(
    process.execPath,
    [BIN, '--listen', '127.0.0.1:0', '--backend', '127.0.0.1:1', ...cases[0][0]],
    { encoding: 'utf8', timeout: 10_000 },
  );
  t.equal(result.status, 2, 'a start: exit 2');
  t.match(result.stderr, cases[0][1]);
  t.equal(result.stderr.trim().split('\n').length, 1, 'one line');
  const file = join(ca.dir, 'bad.yaml');
  writeFileSync(
    file,
    `frontends:\n  - name: web\n    listen: [127.0.0.1:0]\n    backends: [127.0.0.1:1]\n    tls: { certificates: [{ cert: ${garbage}, key: ${ecdsa.key} }] }\n`,
  );
  const check = spawnSync(process.execPath, [BIN, 'check', '--config', file], { encoding: 'utf8' });
  t.equal(check.status, 2);
  t.match(check.stderr, /garbage\.pem: not a PEM certificate/);
  t.equal(check.stderr.trim().split('\n').length, 1);
});

t.test('tls.ticketKeys: a session from one instance resumes on another', async (t) => {
  const backend = await startBackend(echoOrHttp);
  t.teardown(() => backend.close());
  const keys = join(ca.dir, 'ticket.keys');
  writeFileSync(keys, `${randomBytes(48).toString('base64')}\n`);
  const common = ['--tls-cert', ecdsa.cert, '--tls-key', ecdsa.key];
  const one = await start(t, backend, [...common, '--tls-ticket-keys', keys]);
  const two = await start(t, backend, [...common, '--tls-ticket-keys', keys]);
  const alone = await start(t, backend, common);
  const session = await ticketFrom(one.fulcrum.port);
  const there = await shake(two.fulcrum.port, { servername: 'a.test', session });
  t.ok(there.reused, 'resumed on the other instance with the same key file');
  await roundTrip(there);
  const elsewhere = await shake(alone.fulcrum.port, { servername: 'a.test', session });
  t.notOk(elsewhere.reused, 'not on an instance with keys of its own');
  t.match(
    await query(one.stats, 'rotate tls-keys'),
    /^error: every terminating frontend has tls.ticketKeys/,
    "a key file's keys are rotated by rewriting the file",
  );
  await roundTrip(elsewhere);
  for (const { stats, fulcrum } of [one, two, alone]) await settled(stats, fulcrum);
});

/** Closes `server` at teardown, and every socket it accepted (a probe's may linger). */
async function listening(
  t: { teardown(fn: () => unknown): void },
  server: net.Server,
): Promise<string> {
  const open = new Set<net.Socket>();
  server.on('connection', (socket: net.Socket) => {
    open.add(socket);
    socket.on('close', () => open.delete(socket));
  });
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      }),
  );
  return `127.0.0.1:${(server.address() as net.AddressInfo).port}`;
}

/** A TLS echo backend with `issued`'s certificate; it records the server name each client sent. */
async function tlsBackend(
  t: { teardown(fn: () => unknown): void },
  issued: Issued,
): Promise<{ address: string; names: Array<string | false | null>; accepted: () => number }> {
  const names: Array<string | false | null> = [];
  const server = tls.createServer(
    { cert: ca.read(issued.cert), key: ca.read(issued.key), allowHalfOpen: true },
    (socket) => {
      names.push(socket.servername);
      socket.on('error', () => {});
      socket.on('end', () => socket.end());
      socket.pipe(socket);
    },
  );
  const address = await listening(t, server);
  let accepted = 0;
  server.on('secureConnection', () => accepted++);
  return { address, names, accepted: () => accepted };
}

t.test('health probes of TLS backends speak TLS: HTTP, gRPC and send/expect', async (t) => {
  const issued = ca.issue('backend.test', { names: ['backend.test'] });
  const stranger = other.issue('backend.test', { names: ['backend.test'] });
  const keys = (i: Issued) => ({ cert: ca.read(i.cert), key: ca.read(i.key) });
  const served: string[] = [];
  const web = (i: Issued) =>
    https.createServer(keys(i), (request, response) => {
      served.push(`${(request.socket as tls.TLSSocket).servername} ${request.url}`);
      response.writeHead(request.url === '/healthz' ? 200 : 404).end('ok');
    });
  const grpc = http2.createSecureServer(keys(issued));
  grpc.on('stream', (stream) => {
    stream.on('data', () => {});
    stream.on('end', () => {
      stream.respond(
        { ':status': 200, 'content-type': 'application/grpc' },
        { waitForTrailers: true },
      );
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 1])); // SERVING
    });
  });
  const pong = tls.createServer(keys(issued), (socket) => {
    socket.on('error', () => {});
    socket.on('data', (chunk: Buffer) => {
      if (chunk.toString() === 'PING\r\n') socket.write('+PONG\r\n');
    });
  });
  const addresses = {
    web: await listening(t, web(issued)),
    strange: await listening(t, web(stranger)),
    grpc: await listening(t, grpc),
    pong: await listening(t, pong),
  };
  const stats = socketPath();
  const file = join(ca.dir, 'tls-probes.yaml');
  const frontend = (name: string, health: string, backend: string) => [
    `  - name: ${name}`,
    '    listen: [127.0.0.1:0]',
    `    health: { interval: 200ms, fall: 1, rise: 1, ${health} }`,
    `    backends: ["${backend},tls,sni=backend.test"]`,
    `    backendTls: { ca: ${ca.cert} }`,
  ];
  writeFileSync(
    file,
    [
      `statsSocket: ${stats}`,
      'workers: 1',
      'frontends:',
      ...frontend('web', 'http: /healthz', addresses.web),
      ...frontend('strange', 'http: /healthz', addresses.strange),
      ...frontend('grpc', "grpc: ''", addresses.grpc),
      ...frontend('pong', 'send: "PING\\r\\n", expect: "+PONG"', addresses.pong),
      '',
    ].join('\n'),
  );
  const fulcrum = await startFulcrum(['--config', file]);
  t.teardown(() => fulcrum.stop());
  const results = async () =>
    Object.fromEntries(
      (await showStat(stats)).map((f) => [f.name, f.backends[0].check?.result ?? 'none']),
    );
  await eventually(
    async () => Object.values(await results()).every((r) => r !== 'none'),
    5000,
    'a probe of every backend',
  );
  const words = await results();
  t.same(
    { web: words.web, grpc: words.grpc, pong: words.pong },
    { web: 'HTTP 200', grpc: 'gRPC SERVING', pong: 'expect ok' },
    'each kind of probe answered over TLS',
  );
  t.match(words.strange, /^tls \w+/, `a certificate from another CA: ${words.strange}`);
  t.ok(served.includes('backend.test /healthz'), 'the HTTP probe sent the backend its name');
  const up = Object.fromEntries((await showStat(stats)).map((f) => [f.name, f.backends[0].up]));
  t.same(up, { web: true, strange: false, grpc: true, pong: true });
  await settled(stats, fulcrum);
});

t.test(
  'TLS to backends: verified against the CA, sni=client, verify none spelled out',
  async (t) => {
    // sni=client: its certificate is checked against the client's name, so it covers those.
    const trusted = await tlsBackend(t, ca.issue('backend.test', { names: ['*.w.test'] }));
    const untrusted = await tlsBackend(t, other.issue('backend.test', { names: ['backend.test'] }));
    const file = join(ca.dir, 'backend-tls.yaml');
    const stats = socketPath();
    writeFileSync(
      file,
      [
        `statsSocket: ${stats}`,
        'workers: 1',
        'frontends:',
        // Terminates TLS, and passes the client's server name on to a backend that speaks TLS.
        '  - name: front',
        '    listen: [127.0.0.1:0]',
        '    health: { interval: 200ms, fall: 1, rise: 1 }',
        `    backends: ["${trusted.address},tls,sni=client"]`,
        `    backendTls: { ca: ${ca.cert} }`,
        `    tls: { certificates: [{ cert: ${ecdsa.cert}, key: ${ecdsa.key} }] }`,
        // Plain clients to a backend whose certificate comes from another CA (no probes: the
        // client's own connect meets the refusal), and that backend's probe.
        '  - name: mistrust',
        '    listen: [127.0.0.1:0]',
        '    retries: 0',
        '    health: false',
        `    backends: ["${untrusted.address},sni=backend.test"]`,
        `    backendTls: { enabled: true, ca: ${ca.cert} }`,
        '  - name: probed',
        '    listen: [127.0.0.1:0]',
        '    health: { interval: 200ms, fall: 1, rise: 1 }',
        `    backends: ["${untrusted.address},tls,sni=backend.test"]`,
        `    backendTls: { ca: ${ca.cert} }`,
        '  - name: anything',
        '    listen: [127.0.0.1:0]',
        '    health: false',
        `    backends: ["${untrusted.address},tls"]`,
        '    backendTls: { verify: none }',
        // Its TLS backend comes at runtime (add backend): the pool's CA must still be used.
        '  - name: added',
        '    listen: [127.0.0.1:0]',
        '    health: false',
        `    backends: ["127.0.0.1:${await closedPort()}"]`,
        `    backendTls: { ca: ${ca.cert} }`,
        '',
      ].join('\n'),
    );
    const fulcrum = await startFulcrum(['--config', file]);
    t.teardown(() => fulcrum.stop());

    const through = await shake(fulcrum.ports.front[0], { servername: 'x.w.test' });
    t.ok(await echoes(through.socket, 256 * 1024), 'TLS both ways, byte for byte');
    through.socket.end();
    await closed(through.socket);
    t.equal(trusted.names.at(-1), 'x.w.test', "sni=client: the backend got the client's name");

    await eventually(
      async () =>
        (await showStat(stats)).find((f) => f.name === 'probed')?.backends[0].up === false,
      5000,
      'the probe to find the untrusted backend down',
    );
    const [probed] = (await showStat(stats)).filter((f) => f.name === 'probed');
    t.match(
      probed.backends[0].check?.result,
      /^tls /,
      `probe: ${probed.backends[0].check?.result}`,
    );
    const plain = net.connect(fulcrum.ports.mistrust[0], '127.0.0.1');
    let bytes = 0;
    plain.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
    });
    plain.on('error', () => {});
    plain.write('hello');
    await closed(plain);
    t.equal(bytes, 0, 'a backend from another CA: the client gets no byte');
    t.equal(untrusted.accepted(), 0, 'no handshake with it ever finished');

    const loose = net.connect(fulcrum.ports.anything[0], '127.0.0.1');
    loose.write('hi');
    const [echoed] = (await once(loose, 'data')) as [Buffer];
    t.equal(echoed.toString(), 'hi', 'verify: none lets it through');
    loose.end();
    await closed(loose);

    const [closedOne] = (await showStat(stats)).find((f) => f.name === 'added')?.backends ?? [];
    t.match(await query(stats, `add backend added ${trusted.address},tls,sni=x.w.test`), /^added/);
    t.match(await query(stats, `disable added/${closedOne.name}`), /disabled/);
    const late = net.connect(fulcrum.ports.added[0], '127.0.0.1');
    late.on('error', () => {});
    late.write('hi');
    const reply = await new Promise<string>((resolve) => {
      late.once('data', (chunk: Buffer) => resolve(String(chunk)));
      late.once('close', () => resolve('closed'));
    });
    t.equal(reply, 'hi', "a TLS backend added at runtime is verified against the pool's CA");
    late.destroy();
    const stat = await showStat(stats);
    const failures = stat.find((f) => f.name === 'mistrust')?.backendTlsFailures ?? 0;
    t.ok(failures >= 1, `backend TLS failures counted: ${failures}`);
    await settled(stats, fulcrum);
  },
);

t.test(
  'a terminating frontend on an address shared by serverNames, and behind a PROXY header',
  async (t) => {
    const backend = await startBackend(echoOrHttp);
    t.teardown(() => backend.close());
    const passthrough = await tlsBackend(t, rsa);
    const file = join(ca.dir, 'shared.yaml');
    const stats = socketPath();
    // Port 0 is never shared: a free port, for both.
    const shared = await closedPort();
    writeFileSync(
      file,
      [
        `statsSocket: ${stats}`,
        'workers: 1',
        'metrics: 127.0.0.1:0',
        'frontends:',
        '  - name: terminated',
        `    listen: [127.0.0.1:${shared}]`,
        '    serverNames: [a.test]',
        '    health: false',
        `    backends: [${backend.address}]`,
        `    tls: { certificates: [{ cert: ${ecdsa.cert}, key: ${ecdsa.key} }] }`,
        '  - name: passed',
        `    listen: [127.0.0.1:${shared}]`,
        '    serverNames: [b.test]',
        '    health: false',
        `    backends: [${passthrough.address}]`,
        '  - name: proxied',
        '    listen: ["127.0.0.1:0,accept-proxy"]',
        '    health: false',
        `    backends: [${backend.address}]`,
        `    tls: { certificates: [{ cert: ${ecdsa.cert}, key: ${ecdsa.key} }] }`,
        '',
      ].join('\n'),
    );
    const fulcrum = await startFulcrum(['--config', file]);
    t.teardown(() => fulcrum.stop());

    const ours = await shake(shared, { servername: 'a.test' });
    t.equal(ours.serial, ecdsa.serial, 'a.test: terminated here, with our certificate');
    t.ok(await echoes(ours.socket, 64 * 1024), 'and relayed in the clear to its backend');
    await roundTrip(ours);
    const theirs = await shake(shared, { servername: 'b.test' });
    t.equal(theirs.serial, rsa.serial, "b.test: passed through, the backend's own certificate");
    await roundTrip(theirs);

    // A PROXY v1 header, then TLS on the same connection.
    const raw = net.connect(fulcrum.ports.proxied[0], '127.0.0.1');
    await once(raw, 'connect');
    raw.write('PROXY TCP4 192.0.2.7 127.0.0.1 40000 443\r\n');
    const behind = tls.connect({ socket: raw, ca: [ca.certPem()], servername: 'a.test' });
    await once(behind, 'secureConnect');
    t.ok(await echoes(behind, 1024), 'behind a PROXY header: terminated and relayed');
    behind.destroy();

    const url = String(fulcrum.logs.find((l) => l.msg === 'metrics')?.url);
    const metrics = (await (await fetch(url)).text()).split('\n');
    t.ok(
      metrics.some((l) => l.startsWith('fulcrum_tls_handshakes_total{frontend="terminated"} ')),
      '/metrics: handshakes per frontend',
    );
    const expiry = metrics.find((l) =>
      l.startsWith('fulcrum_tls_certificate_expiry_seconds{frontend="terminated"'),
    );
    const notAfter = Number(expiry?.split(' ').at(-1));
    t.ok(
      notAfter > Date.now() / 1000 && notAfter < Date.now() / 1000 + 31 * 86400,
      `/metrics: ${expiry}`,
    );
    t.ok(
      metrics.some((l) =>
        l.startsWith('fulcrum_tls_handshake_seconds_count{frontend="terminated"}'),
      ),
    );
    await settled(stats, fulcrum);
  },
);
