/**
 * splice() between real sockets: how an abort on one side reaches the other.
 */
import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { ensureIdentity } from '../../server/certificate';
import { splice } from '../../runtime/splice';
import { tmpDir } from '../harness';

/** A connected pair of plain TCP sockets on loopback: [the dialling side, the accepted side]. */
async function tcpPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const [peer] = await accepted;
  await once(client, 'connect');
  server.close();
  return [client, peer];
}

describe('splice', function () {
  it('closes a TLS socket when the plain socket it is joined to is reset (a TLS handle cannot send a TCP reset)', async function () {
    const dir = tmpDir('splice');
    try {
      const identity = await ensureIdentity(path.join(dir, 'data'), '127.0.0.1');
      const server = tls.createServer({ cert: identity.cert, key: identity.key });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const secured = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
      const tlsClient = tls.connect({
        host: '127.0.0.1',
        port: (server.address() as net.AddressInfo).port,
        ca: identity.cert,
      });
      const [tlsServerSide] = await secured;
      server.close();
      const [app, appPeer] = await tcpPair();
      splice(appPeer, tlsServerSide);
      const closed = once(tlsClient, 'close');
      tlsClient.on('error', () => undefined);
      app.resetAndDestroy();
      await closed;
      assert.equal(tlsServerSide.destroyed, true);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
