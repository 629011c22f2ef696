// `fulcrum ready --socket PATH`: whether this fulcrum should get traffic, as an exit status, for
// keepalived's vrrp_script and the like (0 ready, 1 not ready, 2 cannot ask), with one line
// saying so. keepalived runs it every second on every balancer, so it loads nothing but the
// stats client: bin/fulcrum comes here directly, without the rest of the CLI (a tenth of the
// CPU; `fulcrum ready --help` still goes through the CLI).

import { ClientError, query } from './stats/client.ts';

/** Asks the stats socket at `socket`: ready or not, and the line to print. Throws ClientError
 *  when it cannot be asked or does not answer as a fulcrum would. */
export async function askReady(socket: string): Promise<{ ready: boolean; line: string }> {
  const answer = await query(socket, 'show info json');
  let ready: unknown;
  try {
    ready = (JSON.parse(answer) as { ready?: unknown }).ready;
  } catch {
    throw new ClientError(socket, `not an answer to show info: ${answer.slice(0, 80)}`);
  }
  if (typeof ready !== 'string') {
    throw new ClientError(socket, 'show info does not say whether it is ready');
  }
  return ready === 'yes'
    ? { ready: true, line: 'ready' }
    : { ready: false, line: `not ready: ${ready.replace(/^no: /, '')}` };
}

/** `fulcrum ready` from its arguments (after the word `ready`): prints and sets the exit status. */
export async function runReady(args: readonly string[]): Promise<void> {
  let socket: string | undefined;
  if (args.length === 2 && (args[0] === '--socket' || args[0] === '-s')) socket = args[1];
  else if (args.length === 1 && args[0].startsWith('--socket=')) socket = args[0].slice(9);
  if (socket === undefined || socket === '') {
    process.stderr.write('fulcrum: usage: fulcrum ready --socket PATH\n');
    process.exitCode = 2;
    return;
  }
  try {
    const { ready, line } = await askReady(socket);
    process.stdout.write(`${line}\n`);
    process.exitCode = ready ? 0 : 1;
  } catch (err) {
    if (!(err instanceof ClientError)) throw err;
    process.stderr.write(`fulcrum: ${err.message}\n`);
    process.exitCode = 2;
  }
}
