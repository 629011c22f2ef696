// Upgrading fulcrum itself without dropping a connection (HAProxy's -x/-sf, nginx's USR2): the
// running process starts its successor with the same command line and hands it every listening
// socket as an inherited descriptor, so no port ever closes and no queued connection is reset
// (a closing SO_REUSEPORT socket would reset its queue). The successor loads the config, opens
// everything, runs its first health checks and says it is ready; only then does the old process
// give up its metrics port and stats socket path, and drain. Invariants: until the successor is
// ready nothing of the old process changes; an upgrade that fails leaves it serving; the two
// talk only over the IPC channel (fd 3), the FULCRUM_UPGRADE variable and a pipe that carries the
// TLS ticket keys (secrets stay out of the environment, which /proc shows for the process's
// life); each kernel socket is handed over once (so descriptors stay flat across any number of
// upgrades), and the old process keeps a descriptor of each until it exits, to take the
// listeners back if its successor dies.

import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, existsSync, fstatSync, readFileSync } from 'node:fs';
import { TICKET_KEY_BYTES } from '../config/tls.ts';
import type { Endpoint } from '../config/types.ts';
import type { Logger } from '../log.ts';
import type { InheritedListener, OpenListener } from '../shared/messages.ts';
import { duplicateSockets, release } from './systemd.ts';

/** The variable that tells a process it is a successor, and what it inherits. */
export const UPGRADE_ENV = 'FULCRUM_UPGRADE';
/** Where the inherited sockets start: 0-2 are stdio, 3 the IPC channel. */
export const HANDED_FDS_START = 4;
/** A successor that has not said it is ready by then is stopped, and the upgrade fails. */
export const UPGRADE_READY_TIMEOUT_MS = 60_000;

/** One listening socket handed over: at HANDED_FDS_START + its index. */
export interface HandedSocket {
  readonly host: string;
  readonly port: number;
  /** A socket systemd passed: its FileDescriptorName= (the successor treats it as systemd's). */
  readonly systemd: string | null;
  /** A UDP socket (absent: TCP). */
  readonly udp?: boolean;
}

/** What a successor inherits, in FULCRUM_UPGRADE. */
export interface Handover {
  readonly sockets: readonly HandedSocket[];
  /** `FRONTEND ADDRESS` as written -> as bound: a `:0` listener keeps the port it has. */
  readonly bound: ReadonlyArray<readonly [string, Endpoint]>;
  /** The descriptor the TLS ticket keys come on (after the sockets): the keys, then when they
   *  were made (a double, ms since the epoch). */
  readonly ticketKeysFd?: number;
}

/** Ticket keys handed on: the keys, and when they were made. */
export interface HandedKeys {
  keys: Uint8Array;
  madeAt: number;
}

/**
 * The ticket keys the old process wrote on its pipe, read to its end (it writes them at once and
 * closes); null when none came (it died first), and this process keeps keys of its own.
 */
export function takeTicketKeys(handover: Handover): HandedKeys | null {
  const fd = handover.ticketKeysFd;
  if (fd === undefined) return null;
  try {
    const data = readFileSync(fd);
    if (data.length !== TICKET_KEY_BYTES + 8) return null;
    return {
      keys: new Uint8Array(data.subarray(0, TICKET_KEY_BYTES)),
      madeAt: data.readDoubleBE(TICKET_KEY_BYTES),
    };
  } catch {
    return null;
  } finally {
    try {
      closeSync(fd);
    } catch {
      // not open: nothing to give back
    }
  }
}

/** Messages between the two processes. */
export type UpgradeMessage =
  /** successor -> old: listening, checked, ready to take over. */
  | { type: 'ready' }
  /** successor -> old: it could not start (its one line of error), and exits. */
  | { type: 'failed'; message: string }
  /** old -> successor: the metrics port is free; take the stats socket and metrics. */
  | { type: 'takeover' }
  /** successor -> old: it serves everything now, with its stats socket at `statsSocket`. */
  | { type: 'took-over'; statsSocket: string | null }
  /** old -> successor: how many connections it still drains. */
  | { type: 'draining'; pid: number; live: number };

/** The handover this process was started with, if it is a successor (read once). */
export function handoverFromEnv(): Handover | null {
  const text = process.env[UPGRADE_ENV];
  delete process.env[UPGRADE_ENV];
  if (text === undefined || typeof process.send !== 'function') return null;
  return JSON.parse(text) as Handover;
}

/**
 * The listening sockets to hand over, from every worker's list: each kernel socket once (two
 * descriptors of one socket, such as each worker's of a socket systemd passed, share an inode).
 * A socket closed since its worker listed it is left out.
 */
export function uniqueSockets(listed: readonly OpenListener[]): OpenListener[] {
  const seen = new Set<number>();
  const unique: OpenListener[] = [];
  for (const socket of listed) {
    let inode: number;
    try {
      inode = fstatSync(socket.fd).ino;
    } catch {
      continue;
    }
    if (seen.has(inode)) continue;
    seen.add(inode);
    unique.push(socket);
  }
  return unique;
}

/** A descriptor of each handed-over socket, held (not listened on) by the main thread. */
export interface Reserve {
  readonly sockets: readonly InheritedListener[];
  /** Closes the descriptors; for an upgrade that failed before the handover. */
  release(): void;
}

/** Takes a descriptor of each of `sockets` of its own, so they outlive the workers' listeners. */
export async function reserveSockets(sockets: readonly OpenListener[]): Promise<Reserve> {
  const copies = await duplicateSockets(
    sockets.map((s) => s.fd),
    2,
  );
  const held = sockets.map((s, i) => ({
    host: s.host,
    port: s.port,
    fd: copies[i].fds[1],
    udp: s.udp === true,
  }));
  return { sockets: held, release: () => release(held.map((s) => s.fd)) };
}

/** Sends `message` to the process on the other end of the IPC channel, if there is one. */
export function tell(target: NodeJS.Process | ChildProcess, message: UpgradeMessage): void {
  if (target.connected !== false && typeof target.send === 'function') target.send(message);
}

/**
 * Starts the successor: this process's command line again, the Node binary and the script read
 * afresh from disk (so a newly installed version runs), with `fds` at HANDED_FDS_START and up.
 * Resolves once it says it is ready; rejects with its error if it fails, exits or takes too long
 * (it is then stopped).
 */
export function startSuccessor(
  handover: Handover,
  fds: readonly number[],
  keys: HandedKeys,
  log: Logger,
): { child: ChildProcess; ready: Promise<void> } {
  const node = existsSync(process.execPath) ? process.execPath : 'node';
  const ticketKeysFd = HANDED_FDS_START + fds.length;
  // Some failures (E2BIG, ENOMEM) throw rather than emit 'error': the caller catches them.
  const child = spawn(node, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...fds, 'pipe'],
    env: { ...process.env, [UPGRADE_ENV]: JSON.stringify({ ...handover, ticketKeysFd }) },
  });
  const pipe = child.stdio[ticketKeysFd];
  if (pipe !== null && pipe !== undefined && 'end' in pipe) {
    const data = Buffer.alloc(TICKET_KEY_BYTES + 8);
    data.set(keys.keys);
    data.writeDoubleBE(keys.madeAt, TICKET_KEY_BYTES);
    // A successor gone before it read them: its failure is told elsewhere. Once written, this
    // end closes (the bytes wait in the successor's end): no descriptor kept per upgrade.
    pipe.on('error', () => {});
    pipe.end(data, () => pipe.destroy());
  }
  log.info({ newPid: child.pid, node }, 'upgrade: started the new process');
  const ready = new Promise<void>((resolve, reject) => {
    let failure = '';
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`the new process was not ready within ${UPGRADE_READY_TIMEOUT_MS / 1000}s`));
    }, UPGRADE_READY_TIMEOUT_MS);
    const onMessage = (message: UpgradeMessage) => {
      if (message.type === 'failed') failure = message.message;
      if (message.type === 'ready') {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve();
      }
    };
    const onExit = (code: number | null, signal: string | null) => {
      clearTimeout(timer);
      reject(new Error(failure || `the new process exited (${signal ?? `status ${code}`})`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start the new process: ${err.message}`));
    });
  });
  return { child, ready };
}

/** Resolves with the successor's next message of `type`; rejects if it exits first. */
export function nextMessage<T extends UpgradeMessage['type']>(
  child: ChildProcess,
  type: T,
): Promise<Extract<UpgradeMessage, { type: T }>> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: UpgradeMessage) => {
      if (message.type === 'failed') {
        done();
        reject(new Error(message.message));
      } else if (message.type === type) {
        done();
        resolve(message as Extract<UpgradeMessage, { type: T }>);
      }
    };
    const onExit = () => {
      done();
      reject(new Error('the new process exited'));
    };
    const done = () => {
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });
}
