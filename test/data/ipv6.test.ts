// IPv6: fulcrum listens on [::1] and reaches a backend on [::1].

import { once } from 'node:events';
import net from 'node:net';
import t from 'tap';
import { readLine, startFulcrum } from '../helpers.ts';

t.test('listen on [::1], backend on [::1]', async (t) => {
  const backend = net.createServer((socket) => {
    // Health probes close without reading the greeting, which resets the connection: ignore it.
    socket.on('error', () => {});
    socket.end(`hello over ${socket.localFamily}\n`);
  });
  backend.listen(0, '::1');
  await once(backend, 'listening');
  const backendPort = (backend.address() as net.AddressInfo).port;
  const fulcrum = await startFulcrum([
    '--listen',
    '[::1]:0',
    '--workers',
    '2',
    '--backend',
    `[::1]:${backendPort}`,
  ]);
  t.teardown(async () => {
    await fulcrum.stop();
    backend.close();
  });
  t.match(fulcrum.address, /^\[::1\]:\d+$/, 'the listening line names the IPv6 address');
  const client = net.connect({ host: '::1', port: fulcrum.port });
  await once(client, 'connect');
  t.equal(await readLine(client), 'hello over IPv6');
  client.destroy();
});
