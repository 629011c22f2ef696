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
