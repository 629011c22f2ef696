// A frontend's listening sockets in one worker: the addresses its config names (each with
// SO_REUSEPORT, so every worker has its own socket) and the sockets systemd passed. Invariant: a
// listener that stays across a reload keeps its socket; only added ones open and removed ones
// close, and the accept hook (or the public 'connection' path) is set before the first accept.

import net from 'node:net';
import type { ListenEndpoint } from '../config/types.ts';
import type { ActivatedListener, ListenFailure } from '../shared/messages.ts';
import { acceptHandle, acceptSocket } from './accept.ts';
import { PEER_HIGH_WATER_MARK } from './connection.ts';
import type { Frontend } from './frontend.ts';
import { hookAccept } from './internals.ts';

function listenKey(endpoint: ListenEndpoint): string {
  return endpoint.acceptProxy ? `${endpoint.text},accept-proxy` : endpoint.text;
}

function activatedKey(socket: ActivatedListener): string {
  return `systemd ${socket.text}`;
}

export class Listeners {
  /** Open listeners by address. */
  readonly servers = new Map<string, net.Server>();
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  hooked = false;
  private readonly frontend: Frontend;
  private readonly backlog: number;
  /** Sockets systemd passed for this frontend: opened once, never closed by a reload. */
  private readonly activated: readonly ActivatedListener[];

  constructor(frontend: Frontend, backlog: number, activated: readonly ActivatedListener[]) {
    this.frontend = frontend;
    this.backlog = backlog;
    this.activated = activated;
  }

  /**
   * Opens the listeners the config names that are not open yet, and closes those it no longer
   * names; an unchanged listener keeps its socket. Returns the ones that could not be opened.
   */
  async sync(listen: readonly ListenEndpoint[]): Promise<ListenFailure[]> {
    const wanted = new Set(listen.map(listenKey));
    for (const socket of this.activated) wanted.add(activatedKey(socket));
    for (const [text, server] of this.servers) {
      if (!wanted.has(text)) {
        server.close();
        this.servers.delete(text);
      }
    }
    const failures: ListenFailure[] = [];
    for (const socket of this.activated) {
      await this.openOnce(
        activatedKey(socket),
        socket.text,
        { fd: socket.fd },
        socket.acceptProxy === true,
        failures,
      );
    }
    for (const endpoint of listen) {
      const options = {
        host: endpoint.host,
        port: endpoint.port,
        reusePort: true,
        backlog: this.backlog,
      };
      await this.openOnce(
        listenKey(endpoint),
        endpoint.text,
        options,
        endpoint.acceptProxy,
        failures,
      );
    }
    return failures;
  }

  /** Opens a listener under `key` unless it is open already; a failure is added to `failures`. */
  private async openOnce(
    key: string,
    text: string,
    options: net.ListenOptions | { fd: number },
    acceptProxy: boolean,
    failures: ListenFailure[],
  ): Promise<void> {
    if (this.servers.has(key)) return;
    try {
      this.servers.set(key, await this.open(options, acceptProxy));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      failures.push({ endpoint: text, code: e.code ?? 'ERROR', message: e.message });
    }
  }

  private async open(
    options: net.ListenOptions | { fd: number },
    acceptProxy: boolean,
  ): Promise<net.Server> {
    const server = net.createServer({
      pauseOnConnect: true,
      allowHalfOpen: true,
      noDelay: true,
      // Only the public fallback path uses sockets built by the server: see PEER_HIGH_WATER_MARK.
      highWaterMark: PEER_HIGH_WATER_MARK,
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options, resolve);
    });
    // Runs before any connection is accepted: 'listening' comes before the next poll phase.
    // One closure per listener (not per connection) carries whether it takes PROXY headers.
    this.hooked = hookAccept(server, (status, handle) =>
      acceptHandle(this.frontend, status, handle, acceptProxy),
    );
    if (!this.hooked) {
      server.on('connection', (socket) => acceptSocket(this.frontend, socket, acceptProxy));
    }
    return server;
  }

  /** Stops accepting; live connections carry on. */
  close(): void {
    for (const server of this.servers.values()) server.close();
    this.servers.clear();
  }
}
