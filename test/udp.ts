// What the UDP tests share: datagram backends that answer with their name, clients that ask and
// wait for the answer, and the UDP sockets a process holds, read from the kernel's tables.

import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { socketInodes } from './helpers.ts';

export interface UdpBackend {
  readonly name: string;
  readonly host: string;
  port: number;
  readonly address: string;
  /** Datagrams received so far. */
  received: number;
  /** Client address:port (as fulcrum's session sockets appear to it) -> datagrams. */
  readonly peers: Map<string, number>;
  close(): Promise<void>;
}

/**
 * A backend that answers each datagram with `NAME:PAYLOAD` (after `delayMs`, `replies` times), on
 * 127.0.0.1 or ::1, at `port` (0: any free one).
 */
export async function udpBackend(
  name: string,
  options: { host?: string; delayMs?: number; replies?: number; port?: number } = {},
): Promise<UdpBackend> {
  const host = options.host ?? '127.0.0.1';
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const backend: UdpBackend = {
    name,
    host,
    port: 0,
    address: '',
    received: 0,
    peers: new Map(),
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
  socket.on('message', (message, rinfo) => {
    backend.received++;
    const peer = `${rinfo.address}:${rinfo.port}`;
    backend.peers.set(peer, (backend.peers.get(peer) ?? 0) + 1);
    const reply = () => {
      for (let k = 0; k < (options.replies ?? 1); k++) {
        socket.send(Buffer.concat([Buffer.from(`${name}:`), message]), rinfo.port, rinfo.address);
      }
    };
    if ((options.delayMs ?? 0) > 0) setTimeout(reply, options.delayMs);
    else reply();
  });
  await new Promise<void>((resolve) => socket.bind(options.port ?? 0, host, resolve));
  backend.port = socket.address().port;
  (backend as { address: string }).address = host.includes(':')
    ? `[${host}]:${backend.port}`
    : `${host}:${backend.port}`;
  return backend;
}

export interface Answer {
  readonly text: string;
  readonly from: { address: string; port: number };
}

/** A client socket on 127.0.0.1 or ::1 (one client address:port). */
export async function udpClient(host = '127.0.0.1'): Promise<dgram.Socket> {
  const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  await new Promise<void>((resolve) => socket.bind(0, host, resolve));
  return socket;
}

/** Sends `payload` to fulcrum and resolves with the next datagram back; rejects after `ms`. */
export function ask(
  socket: dgram.Socket,
  port: number,
  payload: string | Buffer,
  ms = 2000,
  host = socket.address().address,
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.off('message', onMessage);
      reject(new Error(`no answer to "${String(payload).slice(0, 20)}" within ${ms} ms`));
    }, ms);
    const onMessage = (message: Buffer, rinfo: dgram.RemoteInfo) => {
      clearTimeout(timer);
      socket.off('message', onMessage);
      resolve({ text: message.toString(), from: { address: rinfo.address, port: rinfo.port } });
    };
    socket.on('message', onMessage);
    socket.send(payload, port, host);
  });
}

/** Sends and asks again (a new datagram) until an answer comes, at most `tries` times. */
export async function askUntilAnswered(
  socket: dgram.Socket,
  port: number,
  payload: string,
  tries: number,
  ms = 300,
): Promise<Answer> {
  for (let k = 1; ; k++) {
    try {
      return await ask(socket, port, payload, ms);
    } catch (err) {
      if (k >= tries) throw err;
    }
  }
}

/** The backend's name in an answer (`b1:payload` -> `b1`). */
export function answeredBy(answer: Answer): string {
  return answer.text.slice(0, answer.text.indexOf(':'));
}

/**
 * Connected UDP sockets process `pid` holds (its sessions' sockets, and any UDP probe in flight),
 * from the kernel's tables: a session fulcrum lost track of still holds its socket.
 */
export function heldUdpSockets(pid: number): number {
  return udpSockets(pid, (fields) => fields[3] === '01');
}

/** UDP sockets process `pid` holds bound to local `port` and not connected (its listeners). */
export function listeningUdpSockets(pid: number, port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  return udpSockets(pid, (fields) => fields[3] === '07' && fields[1].endsWith(hex));
}

/** UDP sockets of process `pid` whose /proc/net/udp line (split in fields) `matches`. */
function udpSockets(pid: number, matches: (fields: string[]) => boolean): number {
  const inodes = socketInodes(pid);
  let count = 0;
  for (const table of ['/proc/net/udp', '/proc/net/udp6']) {
    for (const line of readFileSync(table, 'utf8').split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      // fields[1] is the local address, [3] the state (01: connected, 07: not), [9] the inode.
      if (fields.length > 9 && inodes.has(fields[9]) && matches(fields)) count++;
    }
  }
  return count;
}
