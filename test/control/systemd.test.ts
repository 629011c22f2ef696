// Under systemd: the example units verify clean; fulcrum serves on sockets passed by socket
// activation (systemd-socket-activate, as systemd would), in every worker, without losing the
// connections that queued before it started; and it reports READY=1, RELOADING=1 and STOPPING=1
// to NOTIFY_SOCKET through systemd-notify.

import { spawn, spawnSync } from 'node:child_process';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { mkdtempSync, writeFileSync } from 'node:fs';
import type net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import {
  BIN,
  closedPort,
  connect,
  greet,
  notifySocket,
  readLine,
  socketActivated,
  startBackend,
  waitFor,
} from '../helpers.ts';

const ROOT = new URL('../../', import.meta.url).pathname;

t.test(
  'systemd-analyze verify examples/fulcrum.service examples/fulcrum.socket is clean',
  async (t) => {
    const result = spawnSync(
      'systemd-analyze',
      ['verify', 'examples/fulcrum.service', 'examples/fulcrum.socket'],
      { cwd: ROOT, encoding: 'utf8' },
    );
    t.equal(result.error, undefined, 'systemd-analyze runs (systemd is on the machine)');
    t.equal(result.status, 0, result.stderr);
    t.equal(result.stderr.trim(), '', 'no warning either');
  },
);

t.test('socket activation with two workers, and sd_notify readiness', async (t) => {
  const backend = await startBackend(greet);
  t.teardown(() => backend.close());
  const notify = await notifySocket(t);
  const port = await closedPort();
  const dir = mkdtempSync(join(tmpdir(), 'fulcrum-sa-'));
  const config = join(dir, 'fulcrum.yaml');
  // The listen address equals the passed socket: fulcrum takes the socket instead of binding.
  writeFileSync(
    config,
    `workers: 2\nlog: { access: true }\nfrontends:\n  - name: web\n    listen: [127.0.0.1:${port}]\n    health: false\n    backends: [${backend.address}]\n`,
  );
  const { proc: activator, logs } = await socketActivated(
    t,
    port,
    'web',
    ['--config', config],
    notify.path,
  );

  // These connect before fulcrum runs at all: they wait in the passed socket's queue.
  const early: net.Socket[] = [];
  for (let i = 0; i < 5; i++) early.push(await connect(port));
  for (const socket of early) {
    t.equal(
      await readLine(socket),
      String(backend.port),
      'a connection queued before start is served',
    );
    socket.end();
  }
  await waitFor(() => logs.some((l) => l.msg === 'ready'), 10_000, 'ready');
  const listening = logs.find((l) => l.msg === 'listening');
  t.same(listening?.systemd, [`127.0.0.1:${port}`], 'the passed socket, matched by name');
  t.same(listening?.listen, [], 'the same address is not bound again');

  const burst = await Promise.all(Array.from({ length: 60 }, () => connect(port)));
  const answers = await Promise.all(burst.map((s) => readLine(s)));
  t.ok(
    answers.every((a) => a === String(backend.port)),
    '60 concurrent clients served',
  );
  for (const socket of burst) socket.end();
  await waitFor(
    () => logs.filter((l) => l.msg === 'connection').length >= 65,
    5000,
    'access log lines',
  );
  // Both workers accept from the one passed socket, whichever wakes first: one burst may all go to
  // one of them on a busy machine, so bursts go on until both have been seen (a bounded number).
  const workers = () => new Set(logs.filter((l) => l.msg === 'connection').map((l) => l.worker));
  const lines = () => logs.filter((l) => l.msg === 'connection').length;
  for (let round = 0; round < 20 && workers().size < 2; round++) {
    const before = lines();
    const more = await Promise.all(Array.from({ length: 20 }, () => connect(port)));
    await Promise.all(more.map((s) => readLine(s)));
    for (const socket of more) socket.end();
    await waitFor(() => lines() >= before + 20, 5000, 'access log lines');
  }
  t.same([...workers()].sort(), [0, 1], 'both workers accept from the passed socket');

  await waitFor(() => notify.messages.some((m) => m.includes('READY=1')), 5000, 'READY=1');
  const ready = notify.messages.find((m) => m.includes('READY=1')) as string;
  t.match(ready, new RegExp(`MAINPID=${activator.pid}`), 'names fulcrum as the main process');

  activator.kill('SIGHUP');
  await waitFor(() => logs.some((l) => l.msg === 'reloaded'), 10_000, 'the reload');
  await waitFor(
    () => notify.messages.filter((m) => m.includes('READY=1')).length >= 2,
    5000,
    'READY=1 after the reload',
  );
  const reloading = notify.messages.findIndex((m) => m.includes('RELOADING=1'));
  t.ok(reloading > notify.messages.indexOf(ready), 'RELOADING=1 then READY=1 around the reload');
  const after = await connect(port);
  t.equal(await readLine(after), String(backend.port), 'still serving on the passed socket');
  after.end();

  activator.kill('SIGTERM');
  const [code] = await once(activator, 'exit');
  t.equal(code, 0, 'SIGTERM drains and exits 0');
  // Sent before the exit, but read by another process (python3) and passed on through a pipe:
  // it may reach this process after the exit does.
  await waitFor(
    () => notify.messages.some((m) => m.includes('STOPPING=1')),
    5000,
    'STOPPING=1 on stop',
  );
  t.pass('STOPPING=1 on stop');
});

/**
 * systemd-socket-activate passing one socket to fulcrum `args`, listening: it starts the command
 * on the first connection (or datagram). Killed when the test ends; `stderr()` is both's.
 */
async function activator(
  t: { teardown(fn: () => unknown): void },
  options: string[],
  args: string[],
): Promise<{ proc: ReturnType<typeof spawn>; stderr: () => string }> {
  const proc = spawn('systemd-socket-activate', [...options, process.execPath, BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  await waitFor(() => stderr.includes('Listening on'), 5000, 'systemd-socket-activate to listen');
  return { proc, stderr: () => stderr };
}

/** fulcrum's own lines among what it and the activator wrote to stderr. */
function fulcrumLines(stderr: string): string[] {
  return stderr.split('\n').filter((l) => l.startsWith('fulcrum:'));
}

t.test('a passed socket named after no frontend is exit 2 with one line', async (t) => {
  const port = await closedPort();
  const { proc, stderr } = await activator(
    t,
    ['--listen', `127.0.0.1:${port}`, '--fdname=nope'],
    ['--backend', '127.0.0.1:9'],
  );
  // It starts the command on the first connection.
  const client = await connect(port);
  client.on('error', () => {});
  const [code] = await once(proc, 'exit');
  t.equal(code, 2);
  t.same(fulcrumLines(stderr()), [
    `fulcrum: socket activation: 127.0.0.1:${port} is named "nope" (FileDescriptorName=), but no frontend is`,
  ]);
  client.destroy();
});

t.test('a datagram socket from systemd is exit 2 with one line, not a stack trace', async (t) => {
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => probe.bind(0, '127.0.0.1', resolve));
  const { port } = probe.address();
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const { proc, stderr } = await activator(
    t,
    ['--datagram', '--listen', `127.0.0.1:${port}`],
    ['--listen', `127.0.0.1:${port},udp`, '--backend', '127.0.0.1:9'],
  );
  // It starts the command on the first datagram.
  const client = dgram.createSocket('udp4');
  client.send('x', port, '127.0.0.1');
  const [code] = await once(proc, 'exit');
  client.close();
  t.equal(code, 2);
  const ours = fulcrumLines(stderr());
  t.equal(ours.length, 1, ours.join('\n'));
  t.match(ours[0], /descriptor 3 is not a listening TCP socket/);
  t.notMatch(stderr(), /\n\s+at /, 'no stack trace');
});
