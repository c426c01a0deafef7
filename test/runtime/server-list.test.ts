/**
 * The servers an endpoint fails over between: dialled from the one that worked last, the others after
 * in the order given; a name of several addresses is one candidate per address, each still checked
 * under the name.
 */
import assert from 'node:assert/strict';
import { ServerList } from '../../runtime/server-list';

const A = { host: '127.0.0.1', port: 7001 };
const B = { host: '127.0.0.2', port: 7002 };
const C = { host: '127.0.0.3', port: 7003 };

describe('ServerList (failover between nodes)', function () {
  it('starts from the first server, and after a move from the one that worked last', async function () {
    const list = new ServerList([A, B, C]);
    assert.deepEqual(
      (await list.candidates()).map((c) => c.where),
      ['127.0.0.1:7001', '127.0.0.2:7002', '127.0.0.3:7003'],
    );
    const [, b] = await list.candidates();
    assert.equal(list.use(b!), true, 'another server than before');
    assert.equal(list.use(b!), false);
    assert.equal(list.where, '127.0.0.2:7002');
    assert.deepEqual(
      (await list.candidates()).map((c) => c.where),
      ['127.0.0.2:7002', '127.0.0.3:7003', '127.0.0.1:7001'],
    );
  });

  it('makes a name of several addresses one candidate per address, under its name', async function () {
    const resolved: string[] = [];
    const list = new ServerList([{ host: 'nodes.example.org', port: 7443 }], (host) => {
      resolved.push(host);
      return Promise.resolve(['192.0.2.1', '192.0.2.2']);
    });
    const candidates = await list.candidates();
    assert.deepEqual(resolved, ['nodes.example.org']);
    assert.deepEqual(
      candidates.map((c) => [c.server.host, c.address]),
      [
        ['nodes.example.org', '192.0.2.1'],
        ['nodes.example.org', '192.0.2.2'],
      ],
    );
    list.use(candidates[1]!);
    assert.equal(list.several, true);
    assert.deepEqual(
      (await list.candidates()).map((c) => c.address),
      ['192.0.2.2', '192.0.2.1'],
    );
  });

  it('leaves a name of one address, or one that does not resolve, to the dial', async function () {
    const one = new ServerList([{ host: 'one.example.org', port: 7443 }], () => Promise.resolve(['192.0.2.9']));
    assert.deepEqual(
      (await one.candidates()).map((c) => [c.where, c.address]),
      [['one.example.org:7443', undefined]],
    );
    const none = new ServerList([{ host: 'none.example.org', port: 7443 }], () =>
      Promise.reject(new Error('ENOTFOUND')),
    );
    assert.deepEqual(
      (await none.candidates()).map((c) => c.where),
      ['none.example.org:7443'],
    );
  });
});
