// The port picked for a `:0` address stays fulcrum's from the moment it is picked until every
// worker has bound it: no other process can take it in between (a test suite's thousand UDP
// clients beside this one did, and the start failed with "address in use"). Workers bind with
// SO_REUSEPORT beside the reservation; a socket without it is refused until it is released.

import dgram from 'node:dgram';
import net from 'node:net';
import t from 'tap';
import { loaderFromArgs } from '../../src/config/flags.ts';
import { checkFree, Listeners } from '../../src/control/listeners.ts';

/**
 * Binds `port` as another process would (no SO_REUSEPORT), or as a worker does (`reusePort`),
 * and closes it again: the error code, or 'bound'.
 */
async function bindAs(udp: boolean, port: number, reusePort = false): Promise<string> {
  if (udp) {
    const socket = dgram.createSocket({ type: 'udp4', reusePort });
    return new Promise((resolve) => {
      socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      socket.bind({ address: '127.0.0.1', port }, () => socket.close(() => resolve('bound')));
    });
  }
  const server = net.createServer();
  return new Promise((resolve) => {
    server.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
    server.listen({ host: '127.0.0.1', port, reusePort }, () =>
      server.close(() => resolve('bound')),
    );
  });
}

for (const udp of [false, true]) {
  const kind = udp ? 'UDP' : 'TCP';
  t.test(`${kind}: a port picked for :0 is held until the workers have bound it`, async (t) => {
    const listen = udp ? '127.0.0.1:0,udp' : '127.0.0.1:0';
    const config = await loaderFromArgs(['--listen', listen, '--backend', '127.0.0.1:1'])();
    const listeners = new Listeners();
    await listeners.activate(1, config.frontends, null);
    const fixed = await listeners.fixPorts(config);
    const [endpoint] = fixed.frontends[0].listen;
    t.not(endpoint.port, 0, `picked ${endpoint.port}`);
    t.equal(await bindAs(udp, endpoint.port), 'EADDRINUSE', 'another process is refused');
    await checkFree(fixed, (e) => listeners.reserved(e));
    t.equal(await bindAs(udp, endpoint.port, true), 'bound', 'a worker binds beside it');
    const again = await listeners.fixPorts(config);
    t.equal(again.frontends[0].listen[0].port, endpoint.port, 'a reload keeps the port');
    await listeners.release();
    t.equal(await bindAs(udp, endpoint.port), 'bound', 'free once released');
  });
}
