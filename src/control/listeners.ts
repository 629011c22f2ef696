// Where the frontends listen, as the control plane decides it: the sockets systemd passed
// (matched to frontends by FileDescriptorName=), the port picked once for a `:0` address so every
// worker binds the same, and a trial bind of each address a reload adds. Invariant: nothing here
// accepts a connection; a port a reload cannot have is found before anything changes.

import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import { ConfigError } from '../config/parse.ts';
import type { Config, Endpoint, FrontendConfig, ListenEndpoint } from '../config/types.ts';
import type { ActivatedListener, InheritedListener } from '../shared/messages.ts';
import type { ActivatedSocket } from './systemd.ts';
import { ActivationError, duplicateSockets, takeActivatedSockets } from './systemd.ts';
import type { Handover } from './upgrade.ts';
import { HANDED_FDS_START } from './upgrade.ts';

/** A listener could not be opened: the CLI reports it as bad input (exit status 2). */
export class ListenError extends Error {
  readonly code = 'FULCRUM_LISTEN';
  constructor(endpoint: string, reason: string, flag = '--listen') {
    super(`${flag} ${endpoint}: ${reason}`);
    this.name = 'ListenError';
  }
}

const REASONS = new Map([
  ['EADDRINUSE', 'address in use by another process'],
  ['EACCES', 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)'],
  ['EADDRNOTAVAIL', 'address not available on this host'],
]);

/** Why a listener could not open, in words, from its error code. */
export function listenReason(code: string | undefined, message: string): string {
  return REASONS.get(code ?? '') ?? message;
}

/** A host as it is written before `:PORT`: IPv6 in brackets. */
export function hostText(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

export class Listeners {
  /** Sockets systemd passed, by frontend: taken once at start, kept across reloads. */
  private activated = new Map<string, ActivatedSocket[]>();
  /** `FRONTEND ADDRESS` as written (port 0 included) -> as bound, so a reload keeps the port. */
  private bound = new Map<string, Endpoint>();

  /** Listening sockets the process this one replaces handed over: each kernel socket once, its
   *  descriptor at HANDED_FDS_START + its index, to be listened on by one worker (spread). */
  private inherited: InheritedListener[] = [];

  /** Ports picked for `:0` addresses, held until the workers have bound them (`release`). */
  private held = new Map<string, Held>();

  /**
   * Takes the sockets systemd passed, or those the process this one replaces handed over, and
   * gives systemd's to frontends. A systemd socket is one kernel socket every worker listens on
   * (a descriptor of it each); a handed-over reuseport socket keeps its own accept queue and goes
   * to one worker only, so each is held once, however many upgrades come after.
   */
  async activate(
    workers: number,
    frontends: readonly FrontendConfig[],
    handover: Handover | null,
  ): Promise<void> {
    if (handover === null) {
      this.activated = assignActivated(await takeActivatedSockets(workers), frontends);
      return;
    }
    const systemdFds: number[] = [];
    const names: string[] = [];
    handover.sockets.forEach((socket, i) => {
      const fd = HANDED_FDS_START + i;
      if (socket.systemd === null)
        this.inherited.push({ host: socket.host, port: socket.port, fd, udp: socket.udp });
      else {
        systemdFds.push(fd);
        names.push(socket.systemd);
      }
    });
    const systemd = systemdFds.length === 0 ? [] : await duplicateSockets(systemdFds, workers);
    this.activated = assignActivated(
      systemd.map((socket, i) => ({ ...socket, name: names[i] })),
      frontends,
    );
    this.bound = new Map(handover.bound);
  }

  /** The handed-over listening sockets worker `index` of `workers` listens on. */
  inheritedFor(index: number, workers: number): InheritedListener[] {
    return spread(this.inherited, index, workers);
  }

  /** `FRONTEND ADDRESS` as written -> as bound, for a successor to keep the same ports. */
  boundEntries(): Array<[string, Endpoint]> {
    return [...this.bound];
  }

  /** Checks every frontend has something to listen on. */
  checkEveryFrontendListens(config: Config): void {
    for (const frontend of config.frontends) {
      if (frontend.listen.length === 0 && !this.activated.has(frontend.name)) {
        throw new ConfigError(
          `frontend ${frontend.name}`,
          'nothing to listen on (no listen address, and no socket from systemd named after it)',
        );
      }
    }
  }

  /** Worker `index`'s descriptors of the passed sockets, by frontend; `loaded` says which take
   *  PROXY headers. */
  forWorker(index: number, loaded: Config): Map<string, ActivatedListener[]> {
    return new Map(
      [...this.activated].map(([name, sockets]) => [
        name,
        sockets.map((s) => ({
          text: s.address,
          fd: s.fds[index],
          acceptProxy:
            loaded.frontends
              .find((f) => f.name === name)
              ?.listen.some((l) => l.host === s.host && l.port === s.port && l.acceptProxy) ??
            false,
        })),
      ]),
    );
  }

  /** The addresses systemd passed for a frontend, for the log. */
  activatedFor(frontend: string): string[] {
    return (this.activated.get(frontend) ?? []).map((s) => s.address);
  }

  /**
   * Port 0 means "any free port", but each worker binding port 0 would get a different one. Pick
   * the port here, once, and give every worker the same; a reload keeps the port picked before.
   * The picked port stays held (a socket with SO_REUSEPORT, which the workers bind beside) until
   * `release`, once the workers have bound it: no other process can take it in between.
   */
  async fixPorts(config: Config): Promise<Config> {
    const bound = new Map<string, Endpoint>();
    const frontends: FrontendConfig[] = [];
    for (const frontend of config.frontends) {
      const listen: ListenEndpoint[] = [];
      const activated = this.activated.get(frontend.name) ?? [];
      for (const endpoint of frontend.listen) {
        // The socket systemd passed for this address takes the place of binding it here.
        if (activated.some((s) => s.host === endpoint.host && s.port === endpoint.port)) continue;
        const key = `${frontend.name} ${endpoint.text}`;
        let fixed = this.bound.get(key) ?? endpoint;
        if (fixed.port === 0) {
          const held = await reserve(endpoint, endpoint.udp);
          this.held.set(`${endpoint.udp ? 'udp' : 'tcp'} ${endpoint.host} ${held.port}`, held);
          fixed = {
            text: `${hostText(endpoint.host)}:${held.port}`,
            host: endpoint.host,
            port: held.port,
          };
        }
        bound.set(key, fixed);
        listen.push({ ...fixed, acceptProxy: endpoint.acceptProxy, udp: endpoint.udp });
      }
      frontends.push({ ...frontend, listen });
    }
    this.bound = bound;
    return { ...config, frontends };
  }

  /** Whether `endpoint`'s port is one `fixPorts` picked and holds: free of others already. */
  reserved(endpoint: ListenEndpoint): boolean {
    return this.held.has(`${endpoint.udp ? 'udp' : 'tcp'} ${endpoint.host} ${endpoint.port}`);
  }

  /** Lets go of the ports `fixPorts` picked, once the workers have bound them (or failed to). */
  async release(): Promise<void> {
    const held = [...this.held.values()];
    this.held.clear();
    await Promise.all(held.map((h) => h.close()));
  }
}

/**
 * The share of `sockets` worker `index` of `workers` listens on: of each address's sockets, the
 * k-th goes to worker k mod `workers`. Every socket has one worker; a worker left without one
 * for an address opens its own (a successor with more workers than the process it replaces).
 */
export function spread(
  sockets: readonly InheritedListener[],
  index: number,
  workers: number,
): InheritedListener[] {
  const seen = new Map<string, number>();
  const mine: InheritedListener[] = [];
  for (const socket of sockets) {
    const key = `${socket.udp === true ? 'udp' : 'tcp'} ${socket.host} ${socket.port}`;
    const k = seen.get(key) ?? 0;
    seen.set(key, k + 1);
    if (k % workers === index) mine.push(socket);
  }
  return mine;
}

/** Binds each listener `next` adds to `current`, once, to find a taken port before changing
 *  anything; ports `fixPorts` picked and holds are free of others already. */
export async function checkNewListeners(
  current: Config,
  next: Config,
  reserved: (endpoint: ListenEndpoint) => boolean,
): Promise<void> {
  const key = (l: ListenEndpoint) => `${l.udp ? 'udp' : 'tcp'} ${l.text}`;
  const open = new Set(current.frontends.flatMap((f) => f.listen.map(key)));
  await checkFree(next, (endpoint) => open.has(key(endpoint)) || reserved(endpoint));
}

/**
 * Binds each listener of `config` that `ours` does not claim, once, without SO_REUSEPORT: an
 * address another process listens on (another fulcrum, whose reuseport sockets would let ours
 * bind beside them and silently split the traffic) is refused before anything starts. Sockets
 * handed over by an upgrade or passed by systemd are ours, and not bound here.
 */
export async function checkFree(
  config: Config,
  ours: (endpoint: ListenEndpoint) => boolean = () => false,
): Promise<void> {
  for (const frontend of config.frontends) {
    for (const endpoint of frontend.listen) {
      if (ours(endpoint)) continue;
      const probe = await bindOnce(endpoint, endpoint.port, endpoint.udp);
      await probe.close();
    }
  }
}

/**
 * A socket bound to `endpoint` at `port` (TCP listening, or UDP), to try an address or to hold
 * one. Without `share`, no SO_REUSEPORT: it fails where any other socket is bound, ours included.
 * With it, SO_REUSEPORT: the workers' sockets (same user, SO_REUSEPORT too) bind beside it, any
 * other is refused. It takes no connection (one that came would be dropped) and reads nothing.
 */
async function bindOnce(
  endpoint: Endpoint,
  port: number,
  udp: boolean,
  share = false,
): Promise<Held> {
  try {
    if (udp) {
      const type = endpoint.host.includes(':') ? 'udp6' : 'udp4';
      const socket = dgram.createSocket({ type, reusePort: share });
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject);
        socket.bind({ address: endpoint.host, port, exclusive: true }, () => resolve());
      });
      return {
        port: socket.address().port,
        close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
      };
    }
    const probe = net.createServer({ pauseOnConnect: true }, (socket) => socket.destroy());
    probe.listen({ host: endpoint.host, port, exclusive: true, reusePort: share, backlog: 1 });
    await once(probe, 'listening');
    return {
      port: (probe.address() as net.AddressInfo).port,
      close: async () => {
        probe.close();
        await once(probe, 'close');
      },
    };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ListenError(endpoint.text, listenReason(e.code, e.message));
  }
}

/** A socket bound, or a port held. */
interface Held {
  port: number;
  close(): Promise<void>;
}

/**
 * A free port for `endpoint`, held by a socket the workers bind beside (see bindOnce) until they
 * have: nobody knows the port before the listening line, so nobody is turned away meanwhile.
 */
function reserve(endpoint: Endpoint, udp: boolean): Promise<Held> {
  return bindOnce(endpoint, 0, udp, true);
}

/**
 * Gives each socket systemd passed to the frontend named by its FileDescriptorName=; unnamed
 * sockets go to the only frontend, if there is only one.
 */
function assignActivated(
  sockets: readonly ActivatedSocket[],
  frontends: readonly FrontendConfig[],
): Map<string, ActivatedSocket[]> {
  const byFrontend = new Map<string, ActivatedSocket[]>();
  for (const socket of sockets) {
    let name = socket.name;
    if (name === '') {
      if (frontends.length !== 1) {
        throw new ActivationError(
          `${socket.address} has no FileDescriptorName= and there are ${frontends.length} frontends: name it after one`,
        );
      }
      name = frontends[0].name;
    } else if (!frontends.some((f) => f.name === name)) {
      throw new ActivationError(
        `${socket.address} is named "${name}" (FileDescriptorName=), but no frontend is`,
      );
    }
    byFrontend.set(name, [...(byFrontend.get(name) ?? []), socket]);
  }
  return byFrontend;
}
