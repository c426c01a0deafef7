/**
 * A server without `--cluster` is a cluster of one: it is the only live node, at the address it listens
 * on, and it owns exactly the publications a proxy of its own holds.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import { encodeControl } from '../../../protocol/control';
import { createLogger } from '../../../runtime/log';
import { TunnelServer } from '../../../server/server';
import { tmpDir } from '../../harness';

const TOKEN = 'a-valid-token-of-the-default-account';

describe('server: a cluster of one', function () {
  let dir: string;
  let server: TunnelServer;
  let port: number;

  beforeEach(async function () {
    dir = tmpDir('local-cluster');
    server = new TunnelServer({
      host: '127.0.0.1',
      port: 0,
      dataDir: dir,
      token: TOKEN,
      logger: createLogger('test', 'text', 'error'),
    });
    port = (await server.start()).port;
  });
  afterEach(async function () {
    await server.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('lists itself alone, at its address, and owns what its proxy publishes', async function () {
    const nodes = await server.cluster.nodes();
    assert.deepEqual(nodes, [
      { name: 'local', advertise: `127.0.0.1:${port}`, sessions: 0, tunnels: 0, load: 0, proxies: {} },
    ]);
    assert.equal(server.cluster.available, true);
    assert.equal(await server.cluster.ownerOf('default/web'), null);

    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: fs.readFileSync(server.certPath) });
    session.on('error', () => undefined);
    const control = session.request({ ':method': 'POST', ':path': '/v1/control', authorization: `Bearer ${TOKEN}` });
    control.write(encodeControl({ type: 'publish', name: 'web', port: 80 }));
    await new Promise<void>((resolve) => control.once('data', () => resolve()));
    assert.deepEqual(await server.cluster.ownerOf('default/web'), { node: 'local', epoch: 1 });
    assert.equal((await server.cluster.nodes())[0]?.sessions, 1);
    session.destroy();
    assert.notEqual(server.cluster.nodeSecret(), '');
  });
});
