// The stats socket: a unix socket on the main thread speaking commands.ts's language. Invariants:
// the file is created with the asked mode (0600 by default) and removed on close; whatever a
// client sends (over-long lines, binary garbage, silence, a thousand clients at once) costs at
// most MAX_CLIENTS * (MAX_LINE + MAX_UNREAD) bytes and never disturbs the balancer or the others.

import { chmodSync, lstatSync, unlinkSync } from 'node:fs';
import net from 'node:net';
import type { StatsLevel } from '../config/types.ts';
import type { Logger } from '../log.ts';
import type { AdminInterface } from './commands.ts';
import { execute } from './commands.ts';
import type { StatsView } from './view.ts';

/** Longest command line: commands are short; anything longer is not one. */
export const MAX_LINE = 4096;
/** Clients served at once; more are told so and closed. Operators and scripts need a handful. */
export const MAX_CLIENTS = 64;
/** A client that says nothing for this long is closed. */
export const IDLE_MS = 30_000;
/** Answers a client has not read yet, at most: one that sends but never reads is closed. */
export const MAX_UNREAD = 256 * 1024;

export class StatsSocketError extends Error {
  readonly code = 'FULCRUM_STATS_SOCKET';
  constructor(path: string, reason: string) {
    super(`--stats-socket ${path}: ${reason}`);
    this.name = 'StatsSocketError';
  }
}

export interface StatsSocketOptions {
  path: string;
  /** File mode, e.g. 0o600; 0o660 lets a group in. */
  mode: number;
  level: StatsLevel;
  version: string;
}

export class StatsServer {
  private readonly options: StatsSocketOptions;
  private readonly view: StatsView;
  private readonly admin: AdminInterface;
  private readonly log: Logger;
  private readonly server: net.Server;
  private clients = 0;

  constructor(options: StatsSocketOptions, view: StatsView, admin: AdminInterface, log: Logger) {
    this.options = options;
    this.view = view;
    this.admin = admin;
    this.log = log;
    this.server = net.createServer((socket) => this.serve(socket));
  }

  async start(): Promise<void> {
    const { path, mode } = this.options;
    await clearStale(path);
    // Created with the mode already: no moment where the socket is wider open than asked.
    const umask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        // A long queue, so a crowd of clients waits to be told "too many" instead of being refused.
        this.server.listen({ path, backlog: 1024 }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      throw new StatsSocketError(path, (err as NodeJS.ErrnoException).code ?? String(err));
    } finally {
      process.umask(umask);
    }
    chmodSync(path, mode);
    this.log.info(
      { path, mode: `0${mode.toString(8)}`, level: this.options.level },
      'stats socket',
    );
  }

  close(): void {
    this.server.close();
    try {
      unlinkSync(this.options.path);
    } catch {
      // Already gone: nothing to clean up.
    }
  }

  private serve(socket: net.Socket): void {
    socket.on('error', () => {});
    if (this.clients >= MAX_CLIENTS) {
      socket.end(`error: too many clients (at most ${MAX_CLIENTS})\n\n`);
      return;
    }
    this.clients++;
    socket.once('close', () => this.clients--);
    socket.setTimeout(IDLE_MS, () => socket.destroy());
    let pending = '';
    // Answers go out in the order the lines came in: each waits for the one before.
    let answered: Promise<void> = Promise.resolve();
    let closing = false;
    socket.setEncoding('latin1');
    socket.on('data', (chunk: string) => {
      pending += chunk;
      for (;;) {
        const nl = pending.indexOf('\n');
        if (nl < 0) break;
        const line = pending.slice(0, nl).replace(/\r$/, '');
        pending = pending.slice(nl + 1);
        if (line.trim() === '') continue;
        answered = answered.then(async () => {
          if (closing) return;
          const answer = await execute(
            line,
            this.view,
            this.admin,
            this.options.level,
            this.options.version,
            this.log,
          ).catch((err: Error) => ({ text: `error: ${err.message}`, close: false }));
          if (socket.destroyed) return;
          if (socket.writableLength > MAX_UNREAD) {
            closing = true;
            socket.destroy();
            return;
          }
          socket.write(`${answer.text}\n\n`);
          if (answer.close) {
            closing = true;
            socket.end();
          }
        });
      }
      if (pending.length > MAX_LINE) {
        closing = true;
        pending = '';
        socket.pause();
        answered = answered.then(() => {
          socket.end(`error: line longer than ${MAX_LINE} bytes\n\n`);
        });
      }
    });
  }
}

/** A socket file left by a crashed run is removed; a live one, or any other file, is an error. */
async function clearStale(path: string): Promise<void> {
  let isSocket: boolean;
  try {
    isSocket = lstatSync(path).isSocket();
  } catch {
    return; // nothing there
  }
  if (!isSocket) throw new StatsSocketError(path, 'exists and is not a socket');
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(path);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live) throw new StatsSocketError(path, 'in use by a running process');
  unlinkSync(path);
}
