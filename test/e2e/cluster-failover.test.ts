/**
 * Issue 14, part A, end to end: three real `underpass server` nodes sharing a real redis-server, a proxy
 * given all three (`--server a,c,b`) and placed on node a, a redirector on node b, so that every tunnel
 * crosses the node link. `kill -9` of node a: the proxy is on node c with the same pseudo name and key,
 * the directory says c owns the publication at a higher epoch, and a new tunnel crosses b → c at once.
 * Redis stopped (SIGSTOP) for 10 s: the open tunnel keeps carrying lines, a new cross-node tunnel is
 * refused with UP_ERR_CLUSTER_UNAVAILABLE in one line, and everything works again once Redis is back.
 * Node c paused (SIGSTOP) until the proxy gave it up: on its return it takes nothing back.
 * The endpoint directory (read from Redis with redis-cli, and from a node's status page) follows the
 * proxy from node to node, a killed node's entries go with its heartbeat, and an endpoint that leaves
 * leaves it.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { TestCluster, until } from '../cluster';
import { freePort, lineEchoServer, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';

const OWNER = '{underpass}:owner:default/echo';
const PUBLISHED = /^\{"event":"published","name":"echo".*\}$/gm;

/** A client that keeps one connection and sends a line every 200 ms, printing each answer as it comes. */
const CHATTY = (port: number): string => `import socket, time
s = socket.create_connection(('127.0.0.1', ${port}), timeout=30)
n = 0
while True:
    n += 1
    s.sendall(b'line %d\\n' % n)
    print(s.recv(100).decode().strip(), flush=True)
    time.sleep(0.2)`;

/** One connection, one line, and what came back (or the error). */
const ONCE = (port: number): string => `import socket
try:
    s = socket.create_connection(('127.0.0.1', ${port}), timeout=20)
    s.sendall(b'once\\n'); print(s.recv(100).decode().strip() or 'closed')
except OSError as e:
    print(type(e).__name__)`;

describe('cluster: failover and a Redis outage (issue 14)', function () {
  this.timeout(180_000);
  let cluster: TestCluster;
  let dir: string;
  let echoPort: number;
  let forwardPort: number;
  let proxy: Program;
  let redirector: Program;
  const extra: Program[] = [];
  const ipc = (): string => path.join(dir, 'redirector.sock');
  const redisCli = async (...args: string[]): Promise<string> =>
    (await run('redis-cli', ['-p', String(cluster.redisPort), ...args])).stdout.trim();
  const published = (): string[] => proxy.stdout.match(PUBLISHED) ?? [];
  const once = async (): Promise<string> => (await run(PYTHON, ['-c', ONCE(forwardPort)])).stdout.trim();
  /** The roles node `name`'s endpoint directory lists, as `role:publications`, sorted. */
  const listed = async (name: string): Promise<string[]> =>
    (await cluster.directoryOf(name)).map((e) => `${e.role}:${e.publishes.join(',')}`).sort();
  /** Where the cluster's endpoints are, as node `name`'s status page shows them: `node:role`, sorted. */
  const where = async (name: string): Promise<string[]> =>
    ((await cluster.status(name)).cluster?.endpoints ?? []).map((e) => `${e.node}:${e.role}`).sort();

  /** Every node's directory, for a failure's message. */
  const everywhere = async (): Promise<Record<string, string[]>> =>
    Object.fromEntries(await Promise.all(['a', 'b', 'c'].map(async (n) => [n, await listed(n)] as const)));

  before(async function () {
    dir = tmpDir('cluster-failover');
    [echoPort, forwardPort] = await Promise.all([freePort(), freePort()]);
    extra.push(lineEchoServer(echoPort, { upper: true }));
    const placement = path.join(dir, 'placement');
    fs.writeFileSync(placement, 'echo.default a\ndefault b\n');
    cluster = await new TestCluster(['a', 'b', 'c'], ['--placement', placement]).start();
    const all = ['a', 'c', 'b'].map((n) => cluster.node(n).address).join(',');
    proxy = new Program('proxy', process.execPath, [
      UNDERPASS,
      'proxy',
      ...['--server', all, '--ca', cluster.ca, '--token', cluster.token],
      // A node that stops answering is given up on after two missed PINGs, 2 s.
      '--keepalive',
      '1',
      '--json',
      '--publish',
      `echo=127.0.0.1:${echoPort}`,
    ]);
    await proxy.waitFor(PUBLISHED, 20_000, 'stdout');
    redirector = new Program('redirector', process.execPath, [
      UNDERPASS,
      'redirector',
      ...cluster.endpointArgs('b'),
      '--ipc',
      ipc(),
      '--pseudo-net',
      `127.${140 + (process.pid % 40)}.0.0/16`,
      '--dns',
      'off',
    ]);
    await redirector.waitFor(/serving hooks on/);
    const forward = new Program('forward', process.execPath, [
      UNDERPASS,
      'forward',
      String(forwardPort),
      `echo.default.underpass.internal:${echoPort}`,
      '--ipc',
      ipc(),
    ]);
    extra.push(forward);
    await forward.waitFor(/forwarding /);
  });

  after(async function () {
    await Promise.all([proxy, redirector, ...extra].filter(Boolean).map((p) => p.stop()));
    await cluster?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("lists each endpoint under the node it is on, in Redis and on every node's status page", async function () {
    await cluster.node('a').program.waitFor(/published publication=echo/);
    await until(
      "the proxy in node a's directory",
      async () => (await listed('a')).includes('proxy:echo'),
      15_000,
      everywhere,
    );
    await until(
      "the redirector in node b's directory",
      async () => (await listed('b')).includes('client:'),
      15_000,
      everywhere,
    );
    assert.deepEqual(await listed('c'), [], 'node c holds no endpoint');
    const ttl = Number(await redisCli('PTTL', '{underpass}:endpoints:a'));
    assert.ok(ttl > 0 && ttl <= 5_000, `node a's directory lives as long as its heartbeat (PTTL ${ttl})`);
    assert.deepEqual(await where('c'), ['a:proxy', 'b:client'], 'node c shows where the others are');
    const status = await run(process.execPath, [UNDERPASS, 'status', '--ipc', ipc()]);
    assert.match(status.stdout, /session +up to \S+ \(cluster node b\)/);
  });

  it('moves a proxy whose node was killed to another node, with the same name and key', async function () {
    await cluster.node('a').program.waitFor(/published publication=echo/);
    assert.equal(await redisCli('HGET', OWNER, 'node'), 'a');
    const epochBefore = Number(await redisCli('HGET', OWNER, 'epoch'));
    assert.equal(await once(), 'ONCE', 'the tunnel crosses b → a');

    const killedAt = Date.now();
    await cluster.node('a').program.stop('SIGKILL');
    await proxy.waitFor(/the session moved to the tunnel server/);
    for (;;) {
      if (published().length >= 2) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    process.stdout.write(`      (the proxy published again ${Date.now() - killedAt} ms after kill -9 of its node)\n`);
    const [first, again] = published();
    assert.deepEqual(JSON.parse(again!), JSON.parse(first!), 'same pseudo name and service key');
    assert.match(proxy.stderr, new RegExp(`moved to the tunnel server ${cluster.node('c').address}`));
    await cluster.node('c').program.waitFor(/published publication=echo/);
    assert.equal(await redisCli('HGET', OWNER, 'node'), 'c');
    assert.ok(Number(await redisCli('HGET', OWNER, 'epoch')) > epochBefore, 'the new owner has a higher epoch');
    assert.equal(await once(), 'ONCE', 'a new tunnel crosses b → c');

    // The directory entry moved with it: node c took node a's entry for the proxy's session over at
    // once, before a's heartbeat expired; then a's heartbeat and directory are both gone.
    await until(
      "the proxy in node c's directory",
      async () => (await listed('c')).includes('proxy:echo'),
      15_000,
      everywhere,
    );
    assert.deepEqual(await listed('a'), [], 'node a lists nothing of the proxy any more');
    assert.deepEqual(await where('b'), ['b:client', 'c:proxy']);
    await cluster.node('c').program.waitFor(/an endpoint of node a came here: its directory entry moved/);
    await until(
      "node a's heartbeat and directory gone",
      async () => (await redisCli('EXISTS', '{underpass}:node:a', '{underpass}:endpoints:a')) === '0',
      15_000,
      everywhere,
    );
    process.stdout.write(`      (node a's heartbeat expired ${Date.now() - killedAt} ms after kill -9)\n`);
  });

  it('keeps open tunnels flowing while Redis is stopped, refuses new cross-node ones, and recovers', async function () {
    const app = new Program('chatty app', PYTHON, ['-u', '-c', CHATTY(forwardPort)]);
    extra.push(app);
    await app.waitFor(/LINE 2/);
    const b = cluster.node('b').program;
    cluster.redis!.child.kill('SIGSTOP');
    let stoppedLines: number;
    try {
      await b.waitFor(/lost the cluster's Redis/);
      stoppedLines = app.stdout.split('\n').length;
      assert.notEqual(await once(), 'ONCE', 'a new cross-node tunnel is refused while Redis is away');
      const status = await run(process.execPath, [UNDERPASS, 'status', '--ipc', ipc()]);
      assert.match(status.stdout, /UP_ERR_CLUSTER_UNAVAILABLE .*cannot reach the cluster/);
      await new Promise((r) => setTimeout(r, 10_000));
      assert.ok(app.stdout.split('\n').length > stoppedLines + 5, `the open tunnel went on:\n${app.stdout}`);
    } finally {
      cluster.redis!.child.kill('SIGCONT');
    }
    await b.waitFor(/the cluster's Redis is back/);
    await cluster.node('c').program.waitFor(/the cluster's Redis is back: re-asserted 1 publication/);
    assert.equal(await redisCli('HGET', OWNER, 'node'), 'c');
    assert.equal(await once(), 'ONCE', 'new cross-node tunnels work again');
    assert.equal(app.child.exitCode, null, `the open tunnel still runs:\n${app.stderr}`);
    await app.stop();
  });

  it('does not let a node that was only slow take the publication back when it comes back', async function () {
    const c = cluster.node('c').program;
    const epochBefore = Number(await redisCli('HGET', OWNER, 'epoch'));
    c.child.kill('SIGSTOP');
    try {
      // The proxy gives the silent node up and goes on along its list (a is dead): to b.
      for (;;) {
        if (published().length >= 3) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      assert.equal(await redisCli('HGET', OWNER, 'node'), 'b');
    } finally {
      c.child.kill('SIGCONT');
    }
    // Back, node c finds its proxy session gone and releases nothing that is not its own any more.
    await c.waitFor(/service proxy disconnected|publication moved to another node/);
    assert.equal(await redisCli('HGET', OWNER, 'node'), 'b', 'node c took nothing back');
    assert.ok(Number(await redisCli('HGET', OWNER, 'epoch')) > epochBefore);
    assert.equal(await once(), 'ONCE', 'the tunnel reaches the proxy on node b');
    await until(
      'the proxy listed on node b alone',
      async () => (await where('b')).join() === 'b:client,b:proxy',
      15_000,
      everywhere,
    );
  });

  it('drops an endpoint from the directory when it leaves', async function () {
    await until(
      "the redirector in node b's directory",
      async () => (await listed('b')).includes('client:'),
      15_000,
      everywhere,
    );
    await redirector.stop();
    await until(
      "the redirector gone from node b's directory",
      async () => !(await listed('b')).includes('client:'),
      15_000,
      everywhere,
    );
    assert.deepEqual(await where('c'), ['b:proxy']);
  });
});
