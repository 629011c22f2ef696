// The two ends of bench/udp.ts, as child processes on raw UDP handles (Node's dgram would spend
// more than the proxy under test on each datagram):
//   backend PORTS...                  echo every datagram (or, with ONEWAY=1, only count it)
//                                     and count all but 4-byte ones (the is-it-up probes)
//   client PORT SIZE SECONDS CLIENTS  request/response: each client port keeps one datagram in
//                                     flight and sends the next when its reply comes back
//   oneway PORT SIZE SECONDS CLIENTS RATE   send RATE datagrams a second, spread over the ports
// Each prints one JSON line when done (a backend: when it receives 'report' on stdin).

import dgram from 'node:dgram';
import type { RawUdp } from '../src/data/internals.ts';
import { rawUdp, udpHandleOf } from '../src/data/internals.ts';

const [role, ...args] = process.argv.slice(2);
if (rawUdp === null) throw new Error('no udp_wrap binding');
const udp = rawUdp;
let req = udp.newSend();
const one: Uint8Array[] = [new Uint8Array(0)];

function sendTo(handle: RawUdp, buffer: Uint8Array, port: number): void {
  one[0] = buffer;
  if (handle.send(req, one, 1, port, '127.0.0.1', false) === 0) req = udp.newSend();
}

async function bound(): Promise<{ socket: dgram.Socket; handle: RawUdp }> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  socket.setRecvBufferSize(8 * 1024 * 1024);
  socket.setSendBufferSize(8 * 1024 * 1024);
  const handle = udpHandleOf(socket) as RawUdp;
  return { socket, handle };
}

if (role === 'backend') {
  const echo = process.env.ONEWAY !== '1';
  let received = 0;
  for (const port of args.map(Number)) {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(port, '127.0.0.1', resolve));
    socket.setRecvBufferSize(8 * 1024 * 1024);
    const handle = udpHandleOf(socket) as RawUdp;
    handle.onmessage = function (nread, _h, buffer, rinfo) {
      if (nread < 0 || buffer === undefined || rinfo === undefined) return;
      // One-way: only the orchestrator's 4-byte "is it up" probe is answered.
      if (echo || nread === 4) sendTo(this, buffer.subarray(0, nread), rinfo.port);
      if (nread !== 4) received++;
    };
  }
  process.stdout.write('ready\n');
  process.stdin.on('data', () => process.stdout.write(`${JSON.stringify({ received })}\n`));
} else if (role === 'client') {
  const [port, size, seconds, count] = args.map(Number);
  const payload = Buffer.alloc(size, 'x');
  let received = 0;
  let lost = 0;
  let measuring = false;
  const clients: Array<{ handle: RawUdp; sentAt: number }> = [];
  for (let c = 0; c < count; c++) {
    const { handle } = await bound();
    const client = { handle, sentAt: performance.now() };
    clients.push(client);
    handle.onmessage = function (nread) {
      if (nread < 0) return;
      if (measuring) received++;
      client.sentAt = performance.now();
      sendTo(this, payload, port);
    };
  }
  // A request without its reply for 200 ms is lost: counted, and sent again.
  const resend = setInterval(() => {
    const now = performance.now();
    for (const client of clients) {
      if (now - client.sentAt > 200) {
        if (measuring) lost++;
        client.sentAt = now;
        sendTo(client.handle, payload, port);
      }
    }
  }, 50);
  for (const client of clients) sendTo(client.handle, payload, port);
  // Warm up for a second (sessions start, the JIT settles), then measure.
  await new Promise((resolve) => setTimeout(resolve, 1000));
  measuring = true;
  const started = performance.now();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
  measuring = false;
  const elapsed = (performance.now() - started) / 1000;
  clearInterval(resend);
  process.stdout.write(`${JSON.stringify({ rate: received / elapsed, received, lost })}\n`);
  process.exit(0);
} else if (role === 'oneway') {
  const [port, size, seconds, count, rate] = args.map(Number);
  const payload = Buffer.alloc(size, 'x');
  const clients: RawUdp[] = [];
  for (let c = 0; c < count; c++) clients.push((await bound()).handle);
  let sent = 0;
  const started = performance.now();
  const until = started + seconds * 1000;
  // Paced: every millisecond, as many as the rate says should have gone by now.
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const now = performance.now();
      const due = Math.min(rate * ((Math.min(now, until) - started) / 1000), rate * seconds);
      while (sent < due) sendTo(clients[sent++ % count], payload, port);
      if (now >= until) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  const elapsed = (performance.now() - started) / 1000;
  process.stdout.write(`${JSON.stringify({ sent, rate: sent / elapsed })}\n`);
  process.exit(0);
}
