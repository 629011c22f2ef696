// The listening sockets of one worker: one per address the frontends name (with SO_REUSEPORT,
// so every worker has its own), whichever frontends share it, and the sockets systemd passed.
// Each socket carries the Route that says which frontend takes its clients (data/routes.ts).
// Invariant: an address that stays across a reload keeps its socket, even when the frontends on
// it change (only its Route is replaced); only added addresses open and removed ones close, and
// the accept hook (or the public 'connection' path) is set before the first accept.

import net from 'node:net';
import type { ActivatedListener, ListenFailure } from '../shared/messages.ts';
import { acceptHandle, acceptSocket } from './accept.ts';
import { PEER_HIGH_WATER_MARK } from './connection.ts';
import type { Frontend } from './frontend.ts';
import { hookAccept } from './internals.ts';
import { Route } from './routes.ts';

/** An open socket and the route its clients take; the route is swapped by a reload. */
interface Listener {
  readonly server: net.Server;
  route: Route<Frontend>;
}

/** An address as the frontends name it, with every frontend that names it. */
interface Wanted {
  readonly text: string;
  readonly options: net.ListenOptions | { fd: number };
  readonly acceptProxy: boolean;
  readonly frontends: Frontend[];
}

export class Listeners {
  /** Open listeners by address. */
  readonly open = new Map<string, Listener>();
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  hooked = false;
  private readonly backlog: number;

  constructor(backlog: number) {
    this.backlog = backlog;
  }

  /**
   * Brings the sockets to what `frontends` (in config order) name: new addresses open, those no
   * frontend names close, and every kept one takes a new Route. Returns the ones that could not
   * be opened.
   */
  async sync(frontends: readonly Frontend[]): Promise<ListenFailure[]> {
    const wanted = new Map<string, Wanted>();
    const want = (key: string, entry: Omit<Wanted, 'frontends'>, frontend: Frontend) => {
      const found = wanted.get(key);
      if (found === undefined) wanted.set(key, { ...entry, frontends: [frontend] });
      else found.frontends.push(frontend);
    };
    for (const frontend of frontends) {
      for (const socket of frontend.activated) {
        const key = `systemd ${frontend.config.name} ${socket.text}`;
        want(key, activatedEntry(socket), frontend);
      }
      for (const endpoint of frontend.config.listen) {
        // The build lets frontends share an address only with the same accept-proxy.
        const key = `${endpoint.host} ${endpoint.port}`;
        const options = {
          host: endpoint.host,
          port: endpoint.port,
          reusePort: true,
          backlog: this.backlog,
        };
        want(key, { text: endpoint.text, options, acceptProxy: endpoint.acceptProxy }, frontend);
      }
    }
    for (const [key, listener] of this.open) {
      if (!wanted.has(key)) {
        listener.server.close();
        this.open.delete(key);
      }
    }
    const failures: ListenFailure[] = [];
    for (const [key, entry] of wanted) {
      const route = new Route(entry.frontends, entry.acceptProxy);
      const listener = this.open.get(key);
      if (listener !== undefined) {
        listener.route = route;
        continue;
      }
      try {
        this.open.set(key, await this.listen(entry.options, route));
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        failures.push({ endpoint: entry.text, code: e.code ?? 'ERROR', message: e.message });
      }
    }
    return failures;
  }

  private async listen(
    options: net.ListenOptions | { fd: number },
    route: Route<Frontend>,
  ): Promise<Listener> {
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
    const listener: Listener = { server, route };
    // Runs before any connection is accepted: 'listening' comes before the next poll phase.
    // One closure per listener (not per connection) reads the route current at each accept.
    this.hooked = hookAccept(server, (status, handle) =>
      acceptHandle(listener.route, status, handle),
    );
    if (!this.hooked) server.on('connection', (socket) => acceptSocket(listener.route, socket));
    return listener;
  }

  /** Stops accepting; live connections carry on. */
  close(): void {
    for (const listener of this.open.values()) listener.server.close();
    this.open.clear();
  }

  /** The port of the first open listener (for in-process tests and benchmarks). */
  firstPort(): number {
    const first = this.open.values().next().value;
    return first === undefined ? 0 : (first.server.address() as net.AddressInfo).port;
  }
}

function activatedEntry(socket: ActivatedListener): Omit<Wanted, 'frontends'> {
  return {
    text: socket.text,
    options: { fd: socket.fd },
    acceptProxy: socket.acceptProxy === true,
  };
}
