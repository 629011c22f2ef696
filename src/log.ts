// The one logger: pino JSON lines on stdout, where journald keeps them. Invariant: nothing on the
// data path logs; lines here are lifecycle events (listening, stopping, a worker lost).

import pino from 'pino';
import pretty from 'pino-pretty';
import type { LogFormat, LogLevel } from './config/types.ts';

export type Logger = pino.Logger;

/** Where lines go: JSON for journald and log shippers, or pino-pretty's text for a terminal. */
function destination(format: LogFormat): pino.DestinationStream {
  // Synchronous: lines are rare, and none is lost when the process exits right after one.
  return format === 'pretty'
    ? pretty({ sync: true, colorize: process.stdout.isTTY === true, destination: 1 })
    : pino.destination({ fd: 1, sync: true });
}

export function createLogger(level: LogLevel, format: LogFormat): Logger {
  return pino({ level, base: { pid: process.pid } }, destination(format));
}

/**
 * The access log of one worker thread: synchronous writes of whole lines (each under PIPE_BUF),
 * so lines from several threads sharing stdout never interleave.
 */
export function createAccessLogger(format: LogFormat): Logger {
  return pino({ base: null, timestamp: pino.stdTimeFunctions.isoTime }, destination(format));
}
