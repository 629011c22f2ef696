// Reading a file fulcrum is given (the config, the state file) as every such file is read: a
// regular file only, bounded in size, opened without blocking and given up after a timeout, so a
// FIFO, a huge file or a hung filesystem never holds up start, a reload, an admin command or exit.
// Kept apart from file.ts so that reading the state file loads no YAML or schema library.

import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ConfigError } from './parse.ts';

/** A file that could not be read: `reason` is the code or the words (`ENOENT`, `not a regular
 *  file`), for callers that treat some reasons apart (a missing state file is an empty state). */
export class FileReadError extends ConfigError {
  readonly reason: string;
  constructor(file: string, what: string, reason: string) {
    super(file, `cannot read the ${what} (${reason})`);
    this.reason = reason;
  }
}

/** `reading`, or a FileReadError once `ms` pass without an answer. The read itself may go on in
 *  libuv's thread pool, but nobody waits for it: not a reload, not an admin command, not exit. */
export function readBounded(
  reading: Promise<string>,
  file: string,
  ms: number,
  what = 'config file',
): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FileReadError(file, what, `no answer in ${ms}ms`)), ms);
    timer.unref();
  });
  return Promise.race([reading, timeout]).finally(() => clearTimeout(timer));
}

/**
 * The text of `file`, read as every file fulcrum reads is: only a regular file of at most
 * `maxBytes`, opened without blocking (a FIFO would wait for a writer forever) and checked
 * before reading, within `ms`. Anything else is a FileReadError naming `what` and why.
 */
export async function readTextFile(
  file: string,
  what: string,
  maxBytes: number,
  ms: number,
): Promise<string> {
  const reading = (async () => {
    let handle: Awaited<ReturnType<typeof open>> | undefined;
    try {
      handle = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
      const stat = await handle.stat();
      if (!stat.isFile()) throw new FileReadError(file, what, 'not a regular file');
      if (stat.size > maxBytes) {
        throw new FileReadError(file, what, `${stat.size} bytes; at most ${maxBytes}`);
      }
      return await handle.readFile('utf8');
    } catch (err) {
      if (err instanceof FileReadError) throw err;
      throw new FileReadError(file, what, (err as NodeJS.ErrnoException).code ?? 'error');
    } finally {
      await handle?.close();
    }
  })();
  return readBounded(reading, file, ms, what);
}
