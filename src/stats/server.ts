// The stats socket: a unix socket on the main thread speaking commands.ts's language. Invariants:
// the file is created with the asked mode (0600 by default) and removed on close; whatever a
// client sends (over-long lines, binary garbage, silence, a thousand clients at once) costs at
// most MAX_CLIENTS * (MAX_QUEUED * MAX_LINE + MAX_UNREAD + one answer) bytes and never disturbs
// the balancer or the others; a client that half-closes (a FIN after its commands) still gets
// every answer; a client that does not read its answers is slowed (back-pressure), not reset.

import { chmodSync, lstatSync, renameSync, unlinkSync } from 'node:fs';
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
/** Answers a client has not read yet, at most: past it, its next commands wait (back-pressure). */
export const MAX_UNREAD = 256 * 1024;
/** Commands read ahead of their answers, at most: past it, the client is not read from. */
export const MAX_QUEUED = 64;

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
    // allowHalfOpen: `echo CMD | socat - UNIX-CONNECT:SOCK` sends its FIN before the answer.
    this.server = net.createServer({ allowHalfOpen: true }, (socket) => this.serve(socket));
  }

  /**
   * Opens the socket. `replace`: another fulcrum (the one this process upgrades) serves the path
   * now; bind beside it and rename over it, so the path never stops answering.
   */
  async start(replace = false): Promise<void> {
    const { path, mode } = this.options;
    const at = replace ? `${path}.${process.pid}` : path;
    await clearStale(at);
    // Created with the mode already: no moment where the socket is wider open than asked.
    const umask = process.umask(0o777 & ~mode);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        // A long queue, so a crowd of clients waits to be told "too many" instead of being refused.
        this.server.listen({ path: at, backlog: 1024 }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      throw new StatsSocketError(path, (err as NodeJS.ErrnoException).code ?? String(err));
    } finally {
      process.umask(umask);
    }
    chmodSync(at, mode);
    if (replace) renameSync(at, path);
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
    socket.setEncoding('latin1');
    let pending = '';
    /** Commands read and not yet answered, oldest first; answered one at a time, in order. */
    const lines: (string | typeof LINE_TOO_LONG)[] = [];
    let working = false;
    /** The client has sent its last command (a FIN): answer what is left, then end. */
    let ended = false;
    /** No more commands are read: a line was too long, or an answer closes the connection. */
    let closing = false;
    /** An answer that closes the connection was sent: nothing more is answered. */
    let finished = false;

    const pump = async (): Promise<void> => {
      if (working) return;
      working = true;
      while (lines.length > 0 && !finished && !socket.destroyed) {
        // Back-pressure: a client that does not read its answers is not read from either.
        if (socket.writableLength > MAX_UNREAD) await drained(socket);
        if (socket.destroyed) break;
        const line = lines.shift() as string | typeof LINE_TOO_LONG;
        if (lines.length < MAX_QUEUED) socket.resume();
        const answer = await this.answer(line);
        if (socket.destroyed) break;
        socket.write(`${answer.text}\n\n`);
        if (answer.close) finished = closing = true;
      }
      working = false;
      if ((finished || ((closing || ended) && lines.length === 0)) && !socket.destroyed) {
        socket.end();
      }
    };

    socket.on('data', (chunk: string) => {
      if (closing) return;
      pending += chunk;
      for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
        const line = pending.slice(0, nl).replace(/\r$/, '');
        pending = pending.slice(nl + 1);
        if (line.trim() !== '') lines.push(line);
      }
      if (pending.length > MAX_LINE) {
        pending = '';
        lines.push(LINE_TOO_LONG);
        closing = true; // once the commands before it are answered
        socket.pause();
      } else if (lines.length >= MAX_QUEUED) {
        socket.pause();
      }
      void pump();
    });
    socket.on('end', () => {
      ended = true;
      void pump();
    });
  }

  /** One command's answer; an admin command that throws is logged and answered as an error. */
  private async answer(
    line: string | typeof LINE_TOO_LONG,
  ): Promise<{ text: string; close: boolean }> {
    if (line === LINE_TOO_LONG) {
      return { text: `error: line longer than ${MAX_LINE} bytes`, close: true };
    }
    const control = controlCharacter(line);
    if (control !== null) {
      return { text: `error: control character in the command (${control})`, close: false };
    }
    try {
      return await execute(
        line,
        this.view,
        this.admin,
        this.options.level,
        this.options.version,
        this.log,
      );
    } catch (err) {
      this.log.error({ command: line.split(' ', 1)[0], err }, 'stats command failed');
      return { text: `error: ${(err as Error).message}`, close: false };
    }
  }
}

/** Stands in the queue for a line that was too long: not a string, so no command can be it. */
const LINE_TOO_LONG: unique symbol = Symbol('line too long');

/** Resolves when `socket` has written what it holds, or is gone. */
function drained(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/**
 * The first control character in `text`, named, or null. Words are printable: a control
 * character in one is a mistake or an attempt to smuggle something (a second command through a
 * carriage return, an escape sequence into a terminal or a log). Tabs separate words like spaces.
 */
export function controlCharacter(text: string): string | null {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if ((code < 0x20 && code !== 0x09) || code === 0x7f) {
      if (code === 0x0a) return 'newline';
      if (code === 0x0d) return 'carriage return';
      return `0x${code.toString(16).padStart(2, '0')}`;
    }
  }
  return null;
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
