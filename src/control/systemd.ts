// systemd integration without a native addon: readiness through the `systemd-notify` tool, and
// listeners handed over by socket activation (LISTEN_FDS). Invariant: outside systemd (no
// NOTIFY_SOCKET, no LISTEN_FDS) nothing here does anything.

import { spawn } from 'node:child_process';
import type { Logger } from '../log.ts';

let warned = false;

/**
 * Tells the service manager `state` (READY=1, RELOADING=1, STOPPING=1, STATUS=...). The tool
 * waits until the manager has read the message; `--pid` names this process as the main one, and
 * the unit's NotifyAccess=all lets the message in when the tool cannot send it as us (it can only
 * when privileged). Failures are logged once: the balancer runs on regardless.
 */
export function notify(log: Logger, ...state: string[]): Promise<void> {
  if (process.env.NOTIFY_SOCKET === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const child = spawn('systemd-notify', [`--pid=${process.pid}`, ...state], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const fail = (reason: string) => {
      if (!warned) log.warn({ state, reason }, 'cannot notify systemd');
      warned = true;
      resolve();
    };
    child.once('error', (err) => fail(err.message));
    child.once('exit', (code) => {
      if (code === 0) resolve();
      else fail(stderr.trim() || `systemd-notify exited ${code}`);
    });
  });
}

/** The first file descriptor systemd passes (SD_LISTEN_FDS_START). */
const LISTEN_FDS_START = 3;

/** A listening socket systemd passed us, with one descriptor of it per worker. */
export interface ActivatedSocket {
  /** Its FileDescriptorName= (systemd-socket-activate --fdname=), or '' when none was given. */
  readonly name: string;
  /** What it is bound to, `HOST:PORT`. */
  readonly address: string;
  readonly host: string;
  readonly port: number;
  /** By worker: the descriptor that worker listens on. Worker 0 has systemd's own. */
  readonly fds: readonly number[];
}

export class ActivationError extends Error {
  readonly code = 'FULCRUM_SOCKET_ACTIVATION';
  constructor(message: string) {
    super(`socket activation: ${message}`);
    this.name = 'ActivationError';
  }
}

// The helper: Node can open a descriptor but not duplicate one, and each worker needs its own
// descriptor of the socket (a worker closing a shared one would close it under the others, and a
// reused number would then belong to some other file). A child process that inherits the sockets
// sends them back over IPC: the kernel installs a fresh descriptor per copy (SCM_RIGHTS). It also
// reads each socket's address, since a raw descriptor cannot tell it.
const HELPER = `
const net = require('node:net');
const [count, copies] = process.argv.slice(1).map(Number);
for (let i = 0; i < count; i++) {
  let socket = null;
  try {
    socket = new net.Socket({ fd: 4 + i, readable: false, writable: false });
  } catch {
    // Not a stream socket (a datagram socket, a file): told as not TCP.
  }
  const address = {};
  const tcp = socket !== null && typeof socket._handle.getsockname === 'function' && socket._handle.getsockname(address) === 0;
  process.send({ i, tcp, address });
  if (tcp) for (let k = 1; k < copies; k++) process.send({ i, k }, socket._handle);
}
process.on('disconnect', () => process.exit(0));
`;

interface HelperMessage {
  i: number;
  k?: number;
  tcp?: boolean;
  address?: { address: string; port: number; family: string };
}

/** Descriptors received from the helper, by number: kept (closed only by release) so their
 *  numbers stay ours while a worker or the upgrade reserve uses them. */
const kept = new Map<number, { close(): void }>();

/** Closes descriptors the helper gave that nothing listens on. */
export function release(fds: readonly number[]): void {
  for (const fd of fds) {
    kept.get(fd)?.close();
    kept.delete(fd);
  }
}

/**
 * The listening sockets systemd passed (LISTEN_FDS, for this process: LISTEN_PID), each with a
 * descriptor per worker; [] when not socket-activated. The variables are removed so children do
 * not take them for their own.
 */
export async function takeActivatedSockets(workers: number): Promise<ActivatedSocket[]> {
  const { LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES } = process.env;
  if (LISTEN_FDS === undefined || Number(LISTEN_PID) !== process.pid) return [];
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  const count = Number(LISTEN_FDS);
  if (!Number.isInteger(count) || count < 1 || count > 64) {
    throw new ActivationError(`LISTEN_FDS="${LISTEN_FDS}" is not a count of sockets`);
  }
  const names = LISTEN_FDNAMES === undefined ? [] : LISTEN_FDNAMES.split(':');
  const fds = Array.from({ length: count }, (_, i) => LISTEN_FDS_START + i);
  const sockets = await duplicateSockets(fds, workers);
  return sockets.map((socket, i) => {
    const name = names[i] ?? '';
    return { ...socket, name: name === 'unknown' ? '' : name };
  });
}

/**
 * Each listening socket at `fds` (inherited: from systemd, or from the fulcrum process this one
 * replaces), read for its address and with a descriptor of it per worker (the original is
 * worker 0's).
 */
export async function duplicateSockets(
  fds: readonly number[],
  workers: number,
): Promise<Array<Omit<ActivatedSocket, 'name'>>> {
  const count = fds.length;
  // Nothing to duplicate: no helper (it would never send the message that ends the wait).
  if (count === 0) return [];
  const child = spawn(process.execPath, ['-e', HELPER, String(count), String(workers)], {
    stdio: ['ignore', 'ignore', 'inherit', 'ipc', ...fds],
  });
  const sockets: Array<{ address?: HelperMessage['address']; tcp: boolean; fds: number[] }> =
    fds.map((fd) => ({ tcp: false, fds: [fd] }));
  let expected = count * workers;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill();
      reject(new ActivationError('the descriptor helper did not answer'));
    }, 10_000);
    child.on('message', (message: HelperMessage, handle?: { fd: number; close(): void }) => {
      const socket = sockets[message.i];
      if (message.k === undefined) {
        socket.tcp = message.tcp === true;
        socket.address = message.address;
        expected -= socket.tcp ? 1 : workers;
      } else if (handle !== undefined) {
        kept.set(handle.fd, handle);
        socket.fds[message.k] = handle.fd;
        expected--;
      }
      if (expected === 0) {
        clearTimeout(timer);
        child.disconnect();
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      if (expected > 0) reject(new ActivationError(`the descriptor helper exited (${code})`));
    });
  });
  return sockets.map((socket, i) => {
    if (!socket.tcp || socket.address === undefined) {
      throw new ActivationError(
        `descriptor ${fds[i]} is not a listening TCP socket (a UDP frontend binds its own HOST:PORT,udp; systemd's datagram sockets are not taken)`,
      );
    }
    const { address, port } = socket.address;
    const host = address.includes(':') ? `[${address}]` : address;
    return { address: `${host}:${port}`, host: address, port, fds: socket.fds };
  });
}
