/**
 * The directory's epoch rules against a real redis-server (started here on a free loopback port): a new
 * claim always wins, a node that was only slow cannot take an entry back, a claim made while Redis was
 * away wins only over an older one, a release frees only what the node still owns, and an owner whose
 * heartbeat expired is nobody's.
 */
import assert from 'node:assert/strict';
import type { Ownership } from '../../../server/cluster/cluster';
import { Keys } from '../../../server/cluster/keys';
import { Ownerships } from '../../../server/cluster/ownership';
import { RedisLink } from '../../../server/cluster/redis-link';
import { freePort, Program, run } from '../../harness';

const ID = 'default/web';

describe('cluster: ownership epochs in Redis', function () {
  this.timeout(20_000);
  let redis: Program;
  let port: number;
  const links: RedisLink[] = [];

  async function node(name: string, lost: Array<[string, Ownership]> = []): Promise<Ownerships> {
    const link = new RedisLink(`redis://127.0.0.1:${port}`);
    await link.connect();
    links.push(link);
    // Alive as far as ownerOf is concerned: its heartbeat key exists.
    await link.eval(`redis.call('SET', KEYS[1], '{}')`, [Keys.node(name)], []);
    return new Ownerships(link, name, (id, by) => lost.push([id, by]));
  }

  before(async function () {
    port = await freePort();
    redis = new Program('redis-server', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '']);
    await redis.waitFor(/Ready to accept connections/);
  });
  afterEach(async function () {
    for (const link of links.splice(0)) await link.close();
    await run('redis-cli', ['-p', String(port), 'flushall']);
  });
  after(async function () {
    await redis.stop();
  });

  it('gives every claim the next epoch: the newest owner wins over a stale one', async function () {
    const a = await node('a');
    const b = await node('b');
    assert.equal(await a.claim(ID, '1'), 1);
    assert.deepEqual(await b.ownerOf(ID), { node: 'a', epoch: 1 });
    assert.equal(await b.claim(ID, '7'), 2);
    assert.deepEqual(await a.ownerOf(ID), { node: 'b', epoch: 2 });
  });

  it('does not let a node that was only slow take an entry back when it re-asserts', async function () {
    const lost: Array<[string, Ownership]> = [];
    const a = await node('a', lost);
    const b = await node('b');
    await a.claim(ID, '1');
    await b.claim(ID, '1');
    await a.reassertAll();
    assert.deepEqual(await a.ownerOf(ID), { node: 'b', epoch: 2 });
    assert.deepEqual(lost, [[ID, { node: 'b', epoch: 2 }]]);
    assert.equal(a.epochOf(ID), undefined);
  });

  it('re-asserts what nobody took meanwhile with a fresh epoch', async function () {
    const a = await node('a');
    await a.claim(ID, '1');
    await a.reassertAll();
    assert.equal(a.epochOf(ID), 2);
    assert.deepEqual(await a.ownerOf(ID), { node: 'a', epoch: 2 });
  });

  it('frees an entry only for the node that owns it, and keeps its epoch', async function () {
    const a = await node('a');
    const b = await node('b');
    await a.claim(ID, '1');
    await b.claim(ID, '1');
    await a.release(ID);
    assert.deepEqual(await a.ownerOf(ID), { node: 'b', epoch: 2 });
    await b.release(ID);
    assert.equal(await a.ownerOf(ID), null);
    assert.equal(await a.claim(ID, '2'), 3);
  });

  it('takes an owner whose heartbeat expired for nobody', async function () {
    const a = await node('a');
    await a.claim(ID, '1');
    const r = await run('redis-cli', ['-p', String(port), 'del', Keys.node('a')]);
    assert.equal(r.stdout.trim(), '1');
    assert.equal(await a.ownerOf(ID), null);
  });

  it('settles a claim made while Redis was away by when it was made', async function () {
    const lostByA: Array<[string, Ownership]> = [];
    const a = await node('a', lostByA);
    const c = await node('c');
    redis.child.kill('SIGSTOP');
    try {
      assert.equal(await a.claim(ID, '1'), 0, 'a claim Redis did not answer has no epoch yet');
    } finally {
      redis.child.kill('SIGCONT');
    }
    const b = await node('b');
    await b.claim(ID, '1');
    await a.reassertAll();
    // The script Redis did not answer in time may still have run once it was resumed: epochs say nothing.
    assert.deepEqual(
      lostByA.map(([id, by]) => [id, by.node]),
      [[ID, 'b']],
      'b claimed after a: a loses',
    );
    redis.child.kill('SIGSTOP');
    try {
      assert.equal(await c.claim(ID, '1'), 0);
    } finally {
      redis.child.kill('SIGCONT');
    }
    await c.reassertAll();
    assert.equal((await b.ownerOf(ID))?.node, 'c', 'c claimed after b: c wins');
  });

  it('learns from the events channel that another node claimed what it holds', async function () {
    const lost: Array<[string, Ownership]> = [];
    const a = await node('a', lost);
    await a.claim(ID, '1');
    a.handleClaim(ID, 'a', 1);
    assert.deepEqual(lost, []);
    a.handleClaim(ID, 'b', 2);
    assert.deepEqual(lost, [[ID, { node: 'b', epoch: 2 }]]);
  });
});
