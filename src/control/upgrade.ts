// Upgrading fulcrum itself without dropping a connection (HAProxy's -x/-sf, nginx's USR2): the
// running process starts its successor with the same command line and hands it every listening
// socket as an inherited descriptor, so no port ever closes and no queued connection is reset
// (a closing SO_REUSEPORT socket would reset its queue). The successor loads the config, opens
// everything, runs its first health checks and says it is ready; only then does the old process
// give up its metrics port and stats socket path, and drain. Invariants: until the successor is
// ready nothing of the old process changes; an upgrade that fails leaves it serving; the two
// talk only over the IPC channel (fd 3) and the FULCRUM_UPGRADE variable.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import type { Endpoint } from '../config/types.ts';
import type { Logger } from '../log.ts';

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
}

/** What a successor inherits, in FULCRUM_UPGRADE. */
export interface Handover {
  readonly sockets: readonly HandedSocket[];
  /** `FRONTEND ADDRESS` as written -> as bound: a `:0` listener keeps the port it has. */
  readonly bound: ReadonlyArray<readonly [string, Endpoint]>;
}

/** Messages between the two processes. */
export type UpgradeMessage =
  /** successor -> old: listening, checked, ready to take over. */
  | { type: 'ready' }
  /** successor -> old: it could not start (its one line of error), and exits. */
  | { type: 'failed'; message: string }
  /** old -> successor: the metrics port is free; take the stats socket and metrics. */
  | { type: 'takeover' }
  /** successor -> old: it serves everything now. */
  | { type: 'took-over' }
  /** old -> successor: how many connections it still drains. */
  | { type: 'draining'; pid: number; live: number };

/** The handover this process was started with, if it is a successor (read once). */
export function handoverFromEnv(): Handover | null {
  const text = process.env[UPGRADE_ENV];
  delete process.env[UPGRADE_ENV];
  if (text === undefined || typeof process.send !== 'function') return null;
  return JSON.parse(text) as Handover;
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
  log: Logger,
): { child: ChildProcess; ready: Promise<void> } {
  const node = existsSync(process.execPath) ? process.execPath : 'node';
  const child = spawn(node, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['ignore', 'inherit', 'inherit', 'ipc', ...fds],
    env: { ...process.env, [UPGRADE_ENV]: JSON.stringify(handover) },
  });
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
export function nextMessage(child: ChildProcess, type: UpgradeMessage['type']): Promise<void> {
  return new Promise((resolve, reject) => {
    const onMessage = (message: UpgradeMessage) => {
      if (message.type === 'failed') {
        done();
        reject(new Error(message.message));
      } else if (message.type === type) {
        done();
        resolve();
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
