// The one logger: pino JSON lines on stdout, where journald keeps them. Invariant: nothing on the
// data path logs; lines here are lifecycle events (listening, stopping, a worker lost).

import pino from 'pino';
import type { LogLevel } from './config.ts';

export type Logger = pino.Logger;

export function createLogger(level: LogLevel): Logger {
  // Synchronous: lines are rare, and none is lost when the process exits right after one.
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 1, sync: true }));
}

/**
 * The access log of one worker thread: synchronous writes of whole lines (each under PIPE_BUF),
 * so lines from several threads sharing stdout never interleave.
 */
export function createAccessLogger(): Logger {
  return pino(
    { base: null, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination({ fd: 1, sync: true }),
  );
}
