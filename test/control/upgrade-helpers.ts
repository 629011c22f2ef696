// What the upgrade tests share: short connections as a client would make them, whether a process
// is alive, `show info`, and a teardown that stops whichever process serves at the end.

import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import type { Test } from 'tap';
import { query } from '../../src/stats/client.ts';
import { type Fulcrum, waitFor } from '../helpers.ts';

/** Short connections, one every 20 ms: each sends a line and must get it echoed whole. */
export function shortConnections(port: number): {
  stop(): Promise<void>;
  ok: number;
  failed: string[];
} {
  const state = { ok: 0, failed: [] as string[], stop: async () => {} };
  let stopped = false;
  const one = async () => {
    const socket = net.connect({ host: '127.0.0.1', port });
    try {
      await once(socket, 'connect');
      socket.write('ping\n');
      let got = '';
      await new Promise<void>((resolve, reject) => {
        socket.on('data', (chunk: Buffer) => {
          got += chunk.toString();
          if (got === 'ping\n') resolve();
        });
        socket.once('error', reject);
        socket.once('close', () => reject(new Error(`closed after "${got}"`)));
      });
      state.ok++;
    } catch (err) {
      state.failed.push((err as Error).message);
    } finally {
      socket.destroy();
    }
  };
  const running: Promise<void>[] = [];
  const timer = setInterval(() => {
    if (!stopped) running.push(one());
  }, 20);
  state.stop = async () => {
    stopped = true;
    clearInterval(timer);
    await Promise.all(running);
  };
  return state;
}

/** Whether process `pid` exists. */
/** Whether process `pid` runs: a zombie (exited, not yet reaped by an init that reaps slowly,
 *  as a process whose parent has exited is) has exited. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // The state is the field after the command name, which is in parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

export async function info(stats: string): Promise<Record<string, string | number>> {
  return JSON.parse(await query(stats, 'show info json')) as Record<string, string | number>;
}

/** Stops, when the test ends, the process serving `stats` and every successor `fulcrum` started
 *  (not our children: the helper that spawned fulcrum does not know them). */
export function stopServing(t: Test, stats: string, fulcrum?: Fulcrum): void {
  t.teardown(async () => {
    const serving = await info(stats).then(
      (i) => Number(i.pid),
      () => 0,
    );
    const started = (fulcrum?.logs ?? [])
      .filter((l) => l.msg === 'upgrade: started the new process')
      .map((l) => Number(l.newPid));
    for (const pid of new Set([serving, ...started])) {
      if (pid > 0 && pid !== process.pid && alive(pid)) {
        process.kill(pid, 'SIGTERM');
        await waitFor(() => !alive(pid), 10_000, 'a successor to stop');
      }
    }
  });
}
