// The ceiling for any terminator written on node:tls: a bare node:tls server that answers each
// request itself (no backend, no relay), with the certificate bench/tls.ts gives fulcrum and
// HAProxy. bench/tls.ts runs it beside them in the handshake run: fulcrum cannot do more full
// handshakes a second than this, whatever its own code costs.
// Run by bench/tls.ts: node bench/tls-alone.ts PORT CERT KEY

import { readFileSync } from 'node:fs';
import tls from 'node:tls';

const [port, cert, key] = process.argv.slice(2);
// What nginx serves as /small in the benches: 100 bytes.
const body = 'ok\n'.padEnd(100, '.');
const response = `HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`;

tls
  .createServer({ cert: readFileSync(cert), key: readFileSync(key) }, (socket) => {
    socket.on('error', () => {});
    let request = '';
    socket.on('data', (chunk: Buffer) => {
      request += chunk.toString('latin1');
      if (request.includes('\r\n\r\n')) socket.end(response);
    });
  })
  .listen(Number(port), '127.0.0.1');
