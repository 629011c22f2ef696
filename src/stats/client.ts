// The stats socket's client side, for `fulcrum stats` and `fulcrum ctl`: send one command, read
// one answer (it ends with an empty line). Invariant: a socket that cannot be reached is a
// ClientError with one line saying why, never a stack trace.

import net from 'node:net';

export class ClientError extends Error {
  readonly code = 'FULCRUM_STATS_CLIENT';
  constructor(path: string, reason: string) {
    super(`--socket ${path}: ${reason}`);
    this.name = 'ClientError';
  }
}

const REASONS: Record<string, string> = {
  ENOENT: 'no such socket (is fulcrum running with --stats-socket?)',
  ECONNREFUSED: 'nothing listens there (a stale socket file?)',
  EACCES: 'permission denied (the socket is mode 0600 unless --stats-socket-mode widens it)',
};

/** A command's answer, without its closing empty line. */
export async function query(path: string, command: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(path);
    let text = '';
    socket.setEncoding('utf8');
    socket.setTimeout(timeoutMs, () => {
      socket.destroy();
      reject(new ClientError(path, `no answer within ${timeoutMs} ms`));
    });
    socket.once('connect', () => socket.write(`${command}\n`));
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf('\n\n');
      if (end >= 0) {
        socket.end('quit\n');
        socket.destroy();
        resolve(text.slice(0, end));
      }
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      reject(new ClientError(path, REASONS[err.code ?? ''] ?? err.message));
    });
    socket.once('end', () => reject(new ClientError(path, 'closed before answering')));
  });
}

export function isError(answer: string): boolean {
  return answer.startsWith('error: ');
}
