// Shared test fixtures: real backends on loopback with ephemeral ports, and fulcrum itself run as
// a real process through bin/fulcrum, the way users run it.

import './children.ts';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { query } from '../src/stats/client.ts';
import type { FrontendStat } from '../src/stats/view.ts';

export const BIN = fileURLToPath(new URL('../bin/fulcrum', import.meta.url));

export interface Backend {
  readonly port: number;
  readonly address: string;
  /** Connections accepted so far. */
  accepted: number;
  /** Connections open right now. */
  readonly open: Set<net.Socket>;
  close(): Promise<void>;
}

/**
 * A backend that runs `handler` for each connection; allowHalfOpen so half-close is visible.
 * `port` reopens a backend where one was before (0: any free port).
 */
export async function startBackend(
  handler: (socket: net.Socket) => void,
  port = 0,
): Promise<Backend> {
  const open = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    backend.accepted++;
    open.add(socket);
    socket.on('close', () => open.delete(socket));
    socket.on('error', () => {});
    handler(socket);
  });
  server.listen(port, '127.0.0.1');
  await once(server, 'listening');
  const bound = (server.address() as net.AddressInfo).port;
  const backend: Backend = {
    port: bound,
    address: `127.0.0.1:${bound}`,
    accepted: 0,
    open,
    close: async () => {
      for (const socket of open) socket.destroy();
      server.close();
      await once(server, 'close');
    },
  };
  return backend;
}

/** Echoes every byte back, and ends its side when the client ends its own. */
export function echo(socket: net.Socket): void {
  socket.pipe(socket);
}

/** Says which port it is, then holds the connection open until the client ends its side. */
export function greet(socket: net.Socket): void {
  socket.write(`${socket.localPort}\n`);
  socket.resume(); // discard what the client sends, so its FIN is seen
  socket.on('end', () => socket.end());
}

/** Says which port it is, then echoes every byte back (and ends when the client ends). */
export function greetThenEcho(socket: net.Socket): void {
  socket.write(`${socket.localPort}\n`);
  socket.pipe(socket);
}

/** A port nothing listens on: bound once to get it, then closed. */
export async function closedPort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  server.close();
  await once(server, 'close');
  return port;
}

// A test that fails half-way must not leave a balancer running: kill them all when the test exits.
const spawned = new Set<ChildProcess>();
function killSpawned(): void {
  for (const child of spawned) child.kill('SIGKILL');
}
process.on('exit', killSpawned);
// Killed from outside (tap's timeout, a `timeout` around the run): no 'exit' event would come.
for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    killSpawned();
    process.exit(1);
  });
}

export interface Fulcrum {
  readonly proc: ChildProcess;
  readonly port: number;
  readonly address: string;
  /** Listening ports by frontend name, as the 'listening' log lines give them. */
  readonly ports: Record<string, number[]>;
  /** Every JSON log line so far. */
  readonly logs: Array<Record<string, unknown>>;
  /** Sends SIGTERM and resolves with the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

function portOf(address: string): number {
  return Number.parseInt(address.slice(address.lastIndexOf(':') + 1), 10);
}

/**
 * Runs fulcrum with `args` (plus `--listen 127.0.0.1:0` unless given) and waits until ready.
 * One worker unless `args` or a config file says how many: each worker thread costs a quarter of
 * a CPU-second to start, and the suite starts fulcrum about two hundred times (the tests that
 * are about several workers ask for them).
 * `fdLimit`: run it under `ulimit -n` (the shell execs node, so the pid is fulcrum's).
 */
export async function startFulcrum(
  args: string[],
  env: NodeJS.ProcessEnv = {},
  fdLimit?: number,
): Promise<Fulcrum> {
  const workers = args.includes('--workers') || args.includes('--config') ? [] : ['--workers', '1'];
  const full =
    args.includes('--listen') || args.includes('--config')
      ? [...workers, ...args]
      : ['--listen', '127.0.0.1:0', ...workers, ...args];
  const command =
    fdLimit === undefined
      ? [process.execPath, BIN, ...full]
      : ['sh', '-c', `ulimit -n ${fdLimit} && exec "$@"`, 'sh', process.execPath, BIN, ...full];
  const proc = spawn(command[0], command.slice(1), {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  spawned.add(proc);
  proc.once('exit', () => spawned.delete(proc));
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  let pending = '';
  // Frontend names may be `constructor` or `__proto__`: no prototype to collide with.
  const ports: Record<string, number[]> = Object.create(null);
  const ready = new Promise<string>((resolve, reject) => {
    let listen = '';
    proc.stdout?.on('data', (chunk: Buffer) => {
      pending += chunk.toString();
      let nl = pending.indexOf('\n');
      while (nl >= 0) {
        const line = JSON.parse(pending.slice(0, nl)) as Record<string, unknown>;
        pending = pending.slice(nl + 1);
        logs.push(line);
        if (line.msg === 'listening') {
          const addresses = [...(line.listen as string[]), ...((line.systemd as string[]) ?? [])];
          if (listen === '') listen = addresses[0];
          ports[line.frontend as string] = addresses.map(portOf);
        }
        if (line.msg === 'ready') resolve(listen);
        nl = pending.indexOf('\n');
      }
    });
    proc.once('exit', (code) => reject(new Error(`fulcrum exited ${code}: ${stderr}`)));
  });
  const listen = await ready;
  return {
    proc,
    port: portOf(listen),
    ports,
    address: listen,
    logs,
    stop: async (signal = 'SIGTERM') => {
      // Ended already (by a signal too: then exitCode is null and 'exit' will not come again).
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(signal);
      const [code] = (await once(proc, 'exit')) as [number | null];
      return code;
    },
  };
}

/**
 * One backend running `handler` and fulcrum (one worker) in front of it, plus `args`; both are
 * stopped when the test ends.
 */
export async function startInFront(
  t: { teardown(fn: () => unknown): void },
  handler: (socket: net.Socket) => void,
  args: string[] = [],
): Promise<{ backend: Backend; fulcrum: Fulcrum }> {
  const backend = await startBackend(handler);
  const fulcrum = await startFulcrum(['--workers', '1', ...args, '--backend', backend.address]);
  t.teardown(async () => {
    await fulcrum.stop();
    await backend.close();
  });
  return { backend, fulcrum };
}

/** A fresh path for a stats socket, in a directory of its own. */
export function socketPath(): string {
  return join(mkdtempSync(join(tmpdir(), 'fulcrum-stats-')), 'stats.sock');
}

/**
 * Two greeting backends and fulcrum (two workers unless `extra` says otherwise) in front of them
 * with a stats socket; everything is stopped when the test ends.
 */
export async function startWithStats(
  t: { teardown(fn: () => unknown): void },
  extra: string[] = [],
): Promise<{ backends: Backend[]; path: string; fulcrum: Fulcrum }> {
  const backends = [await startBackend(greet), await startBackend(greet)];
  const path = socketPath();
  const fulcrum = await startFulcrum([
    '--workers',
    '2',
    '--stats-socket',
    path,
    '--backend',
    backends[0].address,
    '--backend',
    backends[1].address,
    ...extra,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    for (const b of backends) await b.close();
  });
  return { backends, path, fulcrum };
}

/** Connects to fulcrum; resolves once connected. */
export async function connect(port: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await once(socket, 'connect');
  return socket;
}

/** Reads one line from a socket (the greeting of `greet`), leaving the socket open. */
export function readLine(socket: net.Socket): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const onData = (chunk: Buffer) => {
      text += chunk.toString();
      const nl = text.indexOf('\n');
      if (nl >= 0) {
        done();
        resolve(text.slice(0, nl));
      }
    };
    const onEnd = () => {
      done();
      reject(new Error(`connection ended before a line: "${text}"`));
    };
    const onError = (err: Error) => {
      done();
      reject(err);
    };
    const done = () => {
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('error', onError);
    };
    socket.on('data', onData);
    socket.on('end', onEnd);
    socket.on('error', onError);
  });
}

/** `show stat json` on a stats socket: every frontend, with its backends. */
export async function showStat(path: string): Promise<FrontendStat[]> {
  return (JSON.parse(await query(path, 'show stat json')) as { frontends: FrontendStat[] })
    .frontends;
}

/**
 * TCP connections (any state but LISTEN) the process `pid` holds open, from the kernel's own
 * tables: its descriptors' socket inodes, looked up in /proc/net/tcp and tcp6. A socket fulcrum
 * lost track of still holds its descriptor, so it is counted here even when every counter says 0.
 */
export function heldConnections(pid: number): number {
  const inodes = socketInodes(pid);
  let held = 0;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // fields[3] is the state (0A: LISTEN), fields[9] the inode.
      if (fields.length > 9 && fields[3] !== '0A' && inodes.has(fields[9])) held++;
    }
  }
  return held;
}

/** The inodes of the sockets process `pid` holds a descriptor of. */
export function socketInodes(pid: number): Set<string> {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const link = readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (link.startsWith('socket:[')) inodes.add(link.slice(8, -1));
    } catch {
      // closed between the listing and the read
    }
  }
  return inodes;
}

/**
 * The invariant after every scenario: fulcrum holds no connection. Live and queued counts,
 * each backend's active count and each frontend's count on it are back at zero, and, given the process, the kernel agrees: it
 * holds no TCP connection (none leaked past its counters).
 */
export async function settled(stats: string, fulcrum?: Fulcrum): Promise<void> {
  await eventually(
    async () => {
      // A query refused for a moment (fulcrum just out of descriptors) is asked again.
      const answers = await Promise.all([query(stats, 'show info json'), showStat(stats)]).catch(
        () => null,
      );
      if (answers === null) return false;
      const info = JSON.parse(answers[0]) as Record<string, number>;
      const frontends = answers[1];
      return (
        info.connections_now === 0 &&
        frontends.every(
          (f) =>
            f.live === 0 &&
            f.queued === 0 &&
            f.backends.every((b) => b.active === 0 && b.held === 0),
        ) &&
        (fulcrum?.proc.pid === undefined || heldConnections(fulcrum.proc.pid) === 0)
      );
    },
    5000,
    'live counts back at zero',
  );
}

/** Resolves with the first log line that `match` accepts, waiting up to `ms` for it. */
export async function waitForLog(
  fulcrum: Fulcrum,
  match: (line: Record<string, unknown>) => boolean,
  ms: number,
  what: string,
): Promise<Record<string, unknown>> {
  await waitFor(() => fulcrum.logs.some(match), ms, what);
  return fulcrum.logs.find(match)!;
}

/**
 * Resolves when `check` holds, polling; rejects after `ms`. `what` may be a function, to say in
 * the failure how far things got.
 */
export async function waitFor(
  check: () => boolean,
  ms: number,
  what: string | (() => string),
): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) {
      throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Resolves when the asynchronous `check` holds, polling; rejects after `ms`. */
export async function eventually(
  check: () => Promise<boolean>,
  ms: number,
  what: string,
): Promise<void> {
  const until = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A datagram socket like systemd's notify socket, read by python3 (Node has no unix datagrams). */
export async function notifySocket(t: {
  teardown(fn: () => unknown): void;
}): Promise<{ path: string; messages: string[] }> {
  const path = join(mkdtempSync(join(tmpdir(), 'fulcrum-notify-')), 'notify.sock');
  const reader = spawn(
    'python3',
    [
      '-c',
      'import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(sys.argv[1])\nprint("bound",flush=True)\nwhile True:\n  print(s.recv(65536).decode().replace("\\n"," "),flush=True)',
      path,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  t.teardown(() => reader.kill());
  const messages: string[] = [];
  let pending = '';
  reader.stdout.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    messages.push(...lines);
  });
  await waitFor(() => messages.includes('bound'), 5000, 'the notify socket');
  return { path, messages };
}

/** A connection streaming random chunks through an echo backend, with a running hash each way. */
export interface Stream {
  socket: net.Socket;
  sent: ReturnType<typeof createHash>;
  received: ReturnType<typeof createHash>;
  bytesSent: number;
  bytesReceived: number;
  done: Promise<void>;
}

export async function stream(port: number): Promise<Stream> {
  const socket = await connect(port);
  const s: Stream = {
    socket,
    sent: createHash('sha256'),
    received: createHash('sha256'),
    bytesSent: 0,
    bytesReceived: 0,
    done: Promise.resolve(),
  };
  socket.on('data', (chunk: Buffer) => {
    s.received.update(chunk);
    s.bytesReceived += chunk.length;
  });
  s.done = once(socket, 'close').then(() => {});
  return s;
}

/** Sends `size` random bytes on the stream. */
export function send(s: Stream, size: number): void {
  const chunk = randomBytes(size);
  s.sent.update(chunk);
  s.bytesSent += size;
  s.socket.write(chunk);
}

/**
 * fulcrum `args` under systemd-socket-activate listening on `port` with `--fdname=NAME`, as
 * systemd would start it (NOTIFY_SOCKET passed with -E when given); resolves once it listens.
 * Its JSON log lines and stderr are collected; it is killed when the test ends.
 */
export async function socketActivated(
  t: { teardown(fn: () => unknown): void },
  port: number,
  fdname: string,
  args: string[],
  notify?: string,
): Promise<{ proc: ChildProcess; logs: Array<Record<string, unknown>>; stderr: () => string }> {
  const passed = notify === undefined ? [] : ['-E', 'NOTIFY_SOCKET'];
  const proc = spawn(
    'systemd-socket-activate',
    [`--listen=127.0.0.1:${port}`, `--fdname=${fdname}`, ...passed, process.execPath, BIN, ...args],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: notify === undefined ? process.env : { ...process.env, NOTIFY_SOCKET: notify },
    },
  );
  t.teardown(() => {
    if (proc.exitCode === null) proc.kill('SIGKILL');
  });
  const logs: Array<Record<string, unknown>> = [];
  let pending = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) logs.push(JSON.parse(line) as Record<string, unknown>);
  });
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  await waitFor(() => stderr.includes('Listening on'), 5000, 'systemd-socket-activate to listen');
  return { proc, logs, stderr: () => stderr };
}

/** How many connections ended for `reason`, once that is `expected` (or 5 s have passed): a
 *  client sees its close before the worker that closed it has counted it. */
export async function ended(stats: string, reason: string, expected: number): Promise<number> {
  let count = 0;
  for (const until = Date.now() + 5000; Date.now() < until; ) {
    const info = JSON.parse(await query(stats, 'show info json')) as Record<string, number>;
    count = info[`ended_${reason}`];
    if (count >= expected) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return count;
}
