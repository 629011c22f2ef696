// The listening sockets of one worker: one per address the frontends name (with SO_REUSEPORT,
// so every worker has its own), whichever frontends share it, and the sockets systemd passed;
// a UDP address is a datagram socket of one frontend (data/udp.ts), handed over the same way.
// Each socket carries the Route that says which frontend takes its clients (data/routes.ts).
// Sockets a replaced fulcrum handed over (an upgrade), or taken back from a successor that died,
// are listened on as they are, this worker's share of them, so the connections queued in each
// are accepted. Invariant: an address that stays across a reload keeps its sockets, even when the
// frontends on it change (only its Route is replaced); only added addresses open and removed ones
// close; a descriptor systemd passed is listened on only until close() closes it, never again;
// and the accept hook (or the public 'connection' path) is set before the first accept.

import { closeSync } from 'node:fs';
import net from 'node:net';
import type {
  ActivatedListener,
  InheritedListener,
  ListenFailure,
  OpenListener,
} from '../shared/messages.ts';
import { acceptHandle, acceptSocket } from './accept.ts';
import { PEER_HIGH_WATER_MARK } from './connection.ts';
import type { Frontend } from './frontend.ts';
import { hookAccept, raw } from './internals.ts';
import { Route } from './routes.ts';
import type { UdpListener } from './udp.ts';
import { openUdp } from './udp.ts';

/** An open socket and the route its clients take; the route is swapped by a reload. */
interface Listener {
  readonly server: net.Server;
  route: Route<Frontend>;
  /** A socket systemd passed: the frontend it was named after. */
  readonly systemd: string | null;
}

/** An address as the frontends name it, with every frontend that names it. */
interface Wanted {
  readonly text: string;
  readonly options: net.ListenOptions | { fd: number };
  readonly acceptProxy: boolean;
  readonly frontends: Frontend[];
  readonly systemd: string | null;
}

export class Listeners {
  /** Open listeners by address (several where a replaced process handed over several). */
  readonly open = new Map<string, Listener[]>();
  /** Open UDP sockets by `udp HOST PORT`, the same way. */
  readonly udp = new Map<string, UdpListener[]>();
  /** close() has closed the descriptors systemd passed: they are never listened on again. */
  private activatedClosed = false;
  /** Whether the accept hook is in use (false: Node's public 'connection' path). */
  hooked = raw !== null && process.env.FULCRUM_NO_ACCEPT_HOOK !== '1';
  private readonly backlog: number;
  /** Handed-over sockets by address, until the first sync takes (or closes) them. */
  private inherited: Map<string, number[]> | null;

  constructor(backlog: number, inherited: readonly InheritedListener[] = []) {
    this.backlog = backlog;
    this.inherited = null;
    this.adopt(inherited);
  }

  /** Sockets to listen on, as they are, at the next sync: handed over by the process this one
   *  replaces, or taken back after a drain from the successor that died. */
  adopt(inherited: readonly InheritedListener[]): void {
    this.inherited = new Map();
    for (const socket of inherited) {
      const key = `${socket.udp === true ? 'udp ' : ''}${socket.host} ${socket.port}`;
      this.inherited.set(key, [...(this.inherited.get(key) ?? []), socket.fd]);
    }
  }

  /**
   * Brings the sockets to what `frontends` (in config order) name: new addresses open, those no
   * frontend names close, and every kept one takes a new Route. Returns the ones that could not
   * be opened.
   */
  async sync(frontends: readonly Frontend[]): Promise<ListenFailure[]> {
    const wanted = new Map<string, Wanted>();
    /** UDP addresses: one frontend each (the build lets no two share one). */
    const wantedUdp = new Map<
      string,
      { text: string; host: string; port: number; frontend: Frontend }
    >();
    const want = (key: string, entry: Omit<Wanted, 'frontends'>, frontend: Frontend) => {
      const found = wanted.get(key);
      if (found === undefined) wanted.set(key, { ...entry, frontends: [frontend] });
      else found.frontends.push(frontend);
    };
    for (const frontend of frontends) {
      // Closed by close() (a drain): the number may be another file's by now.
      const activated = this.activatedClosed ? [] : frontend.activated;
      for (const socket of activated) {
        const key = `systemd ${frontend.config.name} ${socket.text} ${socket.fd}`;
        want(key, activatedEntry(socket, frontend.config.name), frontend);
      }
      for (const endpoint of frontend.config.listen) {
        if (endpoint.udp) {
          const key = `udp ${endpoint.host} ${endpoint.port}`;
          wantedUdp.set(key, { ...endpoint, frontend });
          continue;
        }
        // The build lets frontends share an address only with the same accept-proxy.
        const key = `${endpoint.host} ${endpoint.port}`;
        const options = {
          host: endpoint.host,
          port: endpoint.port,
          reusePort: true,
          backlog: this.backlog,
        };
        const entry = { text: endpoint.text, options, acceptProxy: endpoint.acceptProxy };
        want(key, { ...entry, systemd: null }, frontend);
      }
    }
    for (const [key, listeners] of this.open) {
      if (!wanted.has(key)) {
        for (const listener of listeners) listener.server.close();
        this.open.delete(key);
      }
    }
    for (const [key, listeners] of this.udp) {
      if (!wantedUdp.has(key)) {
        for (const listener of listeners) listener.close();
        this.udp.delete(key);
      }
    }
    // Handed-over sockets are taken once, at the first sync; those no frontend names now close.
    const inherited = this.inherited ?? new Map<string, number[]>();
    this.inherited = null;
    for (const [key, fds] of inherited) {
      if (!wanted.has(key) && !wantedUdp.has(key)) for (const fd of fds) closeSync(fd);
    }
    const failures: ListenFailure[] = [];
    for (const [key, entry] of wantedUdp) {
      const listeners = this.udp.get(key);
      if (listeners !== undefined) {
        for (const listener of listeners) listener.frontend = entry.frontend;
        continue;
      }
      const opened: UdpListener[] = [];
      try {
        const fds = inherited.get(key) ?? [];
        if (fds.length === 0)
          opened.push(await openUdp(entry.host, entry.port, null, entry.frontend));
        for (const fd of fds)
          opened.push(await openUdp(entry.host, entry.port, fd, entry.frontend));
        this.udp.set(key, opened);
      } catch (err) {
        for (const listener of opened) listener.close();
        const e = err as NodeJS.ErrnoException;
        failures.push({ endpoint: entry.text, code: e.code ?? 'ERROR', message: e.message });
      }
    }
    for (const [key, entry] of wanted) {
      const route = new Route(entry.frontends, entry.acceptProxy);
      const listeners = this.open.get(key);
      if (listeners !== undefined) {
        for (const listener of listeners) listener.route = route;
        continue;
      }
      try {
        const fds = inherited.get(key) ?? [];
        const opened: Listener[] = [];
        if (fds.length === 0) opened.push(await this.listen(entry.options, route, entry.systemd));
        for (const fd of fds) opened.push(await this.listen({ fd }, route, entry.systemd));
        this.open.set(key, opened);
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
    systemd: string | null,
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
    const listener: Listener = { server, route, systemd };
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
    this.activatedClosed = true;
    for (const listeners of this.open.values()) for (const l of listeners) l.server.close();
    this.open.clear();
    for (const listeners of this.udp.values()) for (const l of listeners) l.close();
    this.udp.clear();
  }

  /** Every open listening socket with its descriptor, for an upgrade to hand over. */
  sockets(): OpenListener[] {
    const out: OpenListener[] = [];
    for (const listeners of this.open.values()) {
      for (const { server, systemd } of listeners) {
        const fd = (server as unknown as { _handle?: { fd?: number } })._handle?.fd;
        const address = server.address() as net.AddressInfo | null;
        if (fd === undefined || fd < 0 || address === null) continue;
        out.push({ host: address.address, port: address.port, fd, systemd });
      }
    }
    for (const listeners of this.udp.values()) {
      for (const { socket, handle } of listeners) {
        const address = socket.address();
        if (handle.fd < 0) continue;
        out.push({
          host: address.address,
          port: address.port,
          fd: handle.fd,
          systemd: null,
          udp: true,
        });
      }
    }
    return out;
  }

  /** The port of the first open listener (for in-process tests and benchmarks). */
  firstPort(): number {
    const first = this.open.values().next().value?.[0];
    return first === undefined ? 0 : (first.server.address() as net.AddressInfo).port;
  }
}

function activatedEntry(socket: ActivatedListener, frontend: string): Omit<Wanted, 'frontends'> {
  return {
    text: socket.text,
    options: { fd: socket.fd },
    acceptProxy: socket.acceptProxy === true,
    systemd: frontend,
  };
}
