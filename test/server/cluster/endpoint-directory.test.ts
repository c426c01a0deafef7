/**
 * The endpoint directory against a real redis-server (started here on a free loopback port): a sync
 * writes what changed and gives the hash the heartbeat's lifetime, a rewrite replaces what a previous
 * run left, readers see only nodes with a heartbeat, and an entry moves to another node only for the
 * holder of the session's resumption secret.
 */
import assert from 'node:assert/strict';
import { EndpointDirectory, proofOf, type LocalEndpoint } from '../../../server/cluster/endpoint-directory';
import { HEARTBEAT_TTL_MS, Keys } from '../../../server/cluster/keys';
import { RedisLink } from '../../../server/cluster/redis-link';
import { freePort, Program, run } from '../../harness';

function endpoint(id: string, role: 'proxy' | 'client' = 'client'): LocalEndpoint {
  return {
    id,
    account: 'default',
    role,
    publishes: role === 'proxy' ? ['web'] : [],
    remote: '127.0.0.1',
    since: 1,
    proof: proofOf(`secret-of-${id}`),
  };
}

describe('cluster: the endpoint directory in Redis', function () {
  this.timeout(20_000);
  let redis: Program;
  let port: number;
  const links: RedisLink[] = [];
  const cli = async (...args: string[]): Promise<string> =>
    (await run('redis-cli', ['-p', String(port), ...args])).stdout.trim();

  /** A node's directory, alive as far as readers are concerned (its heartbeat key exists). */
  async function node(name: string): Promise<EndpointDirectory> {
    const link = new RedisLink(`redis://127.0.0.1:${port}`);
    await link.connect();
    links.push(link);
    await link.eval(
      `redis.call('SET', KEYS[1], '{}') redis.call('SADD', KEYS[2], ARGV[1])`,
      [Keys.node(name), Keys.nodes],
      [name],
    );
    return new EndpointDirectory(link, name);
  }

  before(async function () {
    port = await freePort();
    redis = new Program('redis-server', 'redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '']);
    await redis.waitFor(/Ready to accept connections/);
  });
  afterEach(async function () {
    for (const link of links.splice(0)) await link.close();
    await cli('flushall');
  });
  after(async function () {
    await redis.stop();
  });

  it("writes what changed at each sync, with the heartbeat's lifetime, and drops what left", async function () {
    const a = await node('a');
    await cli('HSET', Keys.endpoints('a'), 'left-by-a-crashed-run', '{}');
    await a.sync([endpoint('p1', 'proxy'), endpoint('r1')]);
    assert.deepEqual((await cli('HKEYS', Keys.endpoints('a'))).split('\n').sort(), ['p1', 'r1']);
    const ttl = Number(await cli('PTTL', Keys.endpoints('a')));
    assert.ok(ttl > 0 && ttl <= HEARTBEAT_TTL_MS, `PTTL ${ttl}`);
    await a.sync([endpoint('p1', 'proxy'), endpoint('r2')]);
    assert.deepEqual((await cli('HKEYS', Keys.endpoints('a'))).split('\n').sort(), ['p1', 'r2']);
    const entry = JSON.parse(await cli('HGET', Keys.endpoints('a'), 'p1')) as LocalEndpoint;
    assert.equal(entry.role, 'proxy');
    assert.deepEqual(entry.publishes, ['web']);
    await a.sync([]);
    assert.equal(await cli('EXISTS', Keys.endpoints('a')), '0');
  });

  it('lists the endpoints of live nodes only, each with its node', async function () {
    const a = await node('a');
    const b = await node('b');
    await a.sync([endpoint('p1', 'proxy')]);
    await b.sync([endpoint('r1')]);
    assert.deepEqual(
      (await b.all()).map((e) => `${e.node}:${e.id}:${e.role}`),
      ['a:p1:proxy', 'b:r1:client'],
    );
    assert.equal('proof' in (await b.all())[0]!, false, 'readers never see the proof');
    await cli('DEL', Keys.node('a')); // a's heartbeat expired
    assert.deepEqual(
      (await b.all()).map((e) => e.node),
      ['b'],
    );
  });

  it("moves an entry to the node its session's secret is presented at, and to nobody else", async function () {
    const a = await node('a');
    const c = await node('c');
    await a.sync([endpoint('p1', 'proxy')]);
    assert.equal(await c.takeOver('p1', 'a guess'), null);
    assert.equal(await cli('HEXISTS', Keys.endpoints('a'), 'p1'), '1');
    assert.equal(await c.takeOver('p1', 'secret-of-p1'), 'a');
    assert.equal(await cli('HEXISTS', Keys.endpoints('a'), 'p1'), '0');
    assert.equal(await c.takeOver('p1', 'secret-of-p1'), null, 'once');
  });
});
