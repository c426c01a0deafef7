/**
 * Issue 14: the Redis an operator may already run, end to end. Two real `underpass server` nodes share
 * (1) a primary watched by a real Redis Sentinel (`redis-server --sentinel`), named to the nodes as
 * `redis+sentinel://SENTINEL/mymaster`, and (2) a real three-primary Redis Cluster (`redis-cli --cluster
 * create`), named as `redis+cluster://HOST:PORT,HOST:PORT`. In each, a proxy on node a and a redirector on
 * node b carry a tunnel across the node link b → a, and the cluster's state (heartbeats, the publication's
 * owner) is read back from that Redis with redis-cli. And (3) an endpoint given one name that resolves to
 * both nodes' addresses (`--server localhost:PORT`, run in a mount namespace whose /etc/hosts gives
 * localhost 127.0.0.1 and 127.0.0.2, the nodes' addresses) moves to the other address over TLS when its
 * node is killed.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { redisServer, TestCluster, until } from '../cluster';
import { freePort, lineEchoServer, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';

const OWNER = '{underpass}:owner:default/echo';

/** Python through the redirector's SOCKS5 listener (remote name) to `host:port`: one line, and its echo. */
function throughSocks(socksPort: number, host: string, port: number): string {
  return `import socket, struct
s = socket.create_connection(('127.0.0.1', ${socksPort}), timeout=30)
s.sendall(b'\\x05\\x01\\x00'); assert s.recv(2) == b'\\x05\\x00'
name = b'${host}'
s.sendall(b'\\x05\\x01\\x00\\x03' + bytes([len(name)]) + name + struct.pack('>H', ${port}))
reply = b''
while len(reply) < 10: reply += s.recv(10 - len(reply))
assert reply[1] == 0, reply
s.sendall(b'across the nodes\\n')
print(s.makefile('rb').readline().decode().strip())`;
}

/** A cluster of nodes a and b on the Redis `url` names; a proxy on a, a redirector on b; one tunnel across. */
function crossesOn(label: string, url: () => string, redisCli: (...args: string[]) => Promise<string>): void {
  let cluster: TestCluster;
  let dir: string;
  let echoPort: number;
  let socksPort: number;
  let redirector: Program;
  const programs: Program[] = [];

  before(async function () {
    dir = tmpDir(`cluster-${label.replace(/\W+/g, '-')}`);
    echoPort = await freePort();
    programs.push(lineEchoServer(echoPort, { upper: true }));
    cluster = await new TestCluster(['a', 'b']).start({ url: url() });
    // The redirector comes first, while its account has no proxy anywhere, so that it stays on node b.
    socksPort = await freePort();
    redirector = new Program('redirector', process.execPath, [
      UNDERPASS,
      'redirector',
      ...cluster.endpointArgs('b'),
      '--ipc',
      path.join(dir, 'redirector.sock'),
      '--pseudo-net',
      `127.${90 + (process.pid % 30)}.0.0/16`,
      '--dns',
      'off',
      '--socks',
      `127.0.0.1:${socksPort}`,
    ]);
    programs.push(redirector);
    await redirector.waitFor(/serving hooks on/);
    assert.doesNotMatch(redirector.stderr, /sends this endpoint/, 'the redirector stays on node b');
    const proxy = cluster.proxy('a', [`echo=127.0.0.1:${echoPort}`]);
    programs.push(proxy);
    await proxy.waitFor(/"event":"published","name":"echo"/, 20_000, 'stdout');
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await cluster?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it(`keeps the cluster's state in ${label} and carries a tunnel from node b to the proxy on node a`, async function () {
    await until('node a owning echo in Redis', async () => (await redisCli('HGET', OWNER, 'node')) === 'a');
    await until(
      "both nodes' heartbeats in Redis",
      async () => (await redisCli('EXISTS', '{underpass}:node:a', '{underpass}:node:b')) === '2',
    );
    const echoed = await run(PYTHON, ['-c', throughSocks(socksPort, 'echo.default.underpass.internal', echoPort)]);
    assert.equal(echoed.stdout.trim(), 'ACROSS THE NODES', echoed.stderr);
    await cluster.node('b').program.waitFor(/node link to a up/);
  });
}

describe('cluster: one server name of several addresses (issue 14)', function () {
  this.timeout(120_000);
  let cluster: TestCluster;
  let dir: string;
  let port: number;
  const programs: Program[] = [];
  const redisCli = async (...args: string[]): Promise<string> =>
    (await run('redis-cli', ['-p', String(cluster.redisPort), ...args])).stdout.trim();

  before(async function () {
    dir = tmpDir('cluster-one-name');
    port = await freePort();
    cluster = await new TestCluster(['a', 'b']).start({
      listen: { a: { host: '127.0.0.1', port }, b: { host: '127.0.0.2', port } },
    });
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await cluster?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('dials each address of the name, and moves to the other one over TLS when its node dies', async function () {
    const echoPort = await freePort();
    programs.push(lineEchoServer(echoPort, { upper: true }));
    // The name both nodes' certificates hold (localhost), resolving to both of their addresses.
    const hosts = path.join(dir, 'hosts');
    fs.writeFileSync(hosts, '127.0.0.1 localhost\n127.0.0.2 localhost\n');
    const proxy = new Program('proxy', 'unshare', [
      ...['-m', 'sh', '-c', `mount --bind ${hosts} /etc/hosts && exec "$@"`, 'sh'],
      ...[process.execPath, UNDERPASS, 'proxy', '--server', `localhost:${port}`, '--ca', cluster.ca],
      ...['--token', cluster.token, '--json', '--publish', `echo=127.0.0.1:${echoPort}`],
    ]);
    programs.push(proxy);
    await proxy.waitFor(/"event":"published","name":"echo"/, 20_000, 'stdout');
    assert.match(proxy.stderr, new RegExp(`localhost:${port} \\(127\\.0\\.0\\.1:${port}\\)`));
    assert.equal(await redisCli('HGET', OWNER, 'node'), 'a');

    await cluster.node('a').program.stop('SIGKILL');
    await until('the proxy on node b', async () => (await redisCli('HGET', OWNER, 'node')) === 'b');
    await proxy.waitFor(
      new RegExp(`session moved to the tunnel server localhost:${port} \\(127\\.0\\.0\\.2:${port}\\)`),
    );
    assert.doesNotMatch(proxy.stderr, /WebSocket/, 'the other address is dialled as it is, over TLS');

    const socksPort = await freePort();
    const redirector = new Program('redirector', process.execPath, [
      UNDERPASS,
      'redirector',
      ...cluster.endpointArgs('b'),
      ...['--ipc', path.join(dir, 'redirector.sock'), '--pseudo-net', `127.${60 + (process.pid % 30)}.0.0/16`],
      ...['--dns', 'off', '--socks', `127.0.0.1:${socksPort}`],
    ]);
    programs.push(redirector);
    await redirector.waitFor(/serving hooks on/);
    const echoed = await run(PYTHON, ['-c', throughSocks(socksPort, 'echo.default.underpass.internal', echoPort)]);
    assert.equal(echoed.stdout.trim(), 'ACROSS THE NODES', echoed.stderr);
  });
});

describe('cluster: on Redis Sentinel and on a Redis Cluster (issue 14)', function () {
  this.timeout(120_000);

  describe('a primary watched by Redis Sentinel', function () {
    const programs: Program[] = [];
    let dir: string;
    let primaryPort: number;
    let sentinelPort: number;

    before(async function () {
      dir = tmpDir('sentinel');
      primaryPort = await freePort();
      sentinelPort = await freePort();
      const primary = redisServer(primaryPort, 'redis primary');
      programs.push(primary);
      await primary.waitFor(/Ready to accept connections/);
      // Sentinel rewrites its configuration file, so it gets one of its own.
      const conf = path.join(dir, 'sentinel.conf');
      fs.writeFileSync(
        conf,
        [
          `port ${sentinelPort}`,
          'bind 127.0.0.1',
          `dir ${dir}`,
          `sentinel monitor mymaster 127.0.0.1 ${primaryPort} 1`,
          'sentinel down-after-milliseconds mymaster 5000',
          '',
        ].join('\n'),
      );
      const sentinel = new Program('redis sentinel', 'redis-server', [conf, '--sentinel']);
      programs.push(sentinel);
      await sentinel.waitFor(/\+monitor master mymaster/);
    });

    after(async function () {
      await Promise.all(programs.map((p) => p.stop()));
      fs.rmSync(dir, { recursive: true, force: true });
    });

    crossesOn(
      'Redis Sentinel',
      () => `redis+sentinel://127.0.0.1:${sentinelPort}/mymaster`,
      async (...args) => (await run('redis-cli', ['-p', String(primaryPort), ...args])).stdout.trim(),
    );
  });

  describe('a Redis Cluster of three primaries', function () {
    const programs: Program[] = [];
    let dir: string;
    const ports: number[] = [];

    before(async function () {
      dir = tmpDir('redis-cluster');
      for (let i = 0; i < 3; i++) {
        const port = await freePort();
        ports.push(port);
        const server = new Program(`redis cluster ${i}`, 'redis-server', [
          ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
          ...['--dir', dir, '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`],
        ]);
        programs.push(server);
        await server.waitFor(/Ready to accept connections/);
      }
      const created = await run('redis-cli', [
        '--cluster',
        'create',
        ...ports.map((p) => `127.0.0.1:${p}`),
        '--cluster-replicas',
        '0',
        '--cluster-yes',
      ]);
      assert.equal(created.code, 0, created.stderr + created.stdout);
      await until('the Redis Cluster ok', async () =>
        (await run('redis-cli', ['-p', String(ports[0]), 'CLUSTER', 'INFO'])).stdout.includes('cluster_state:ok'),
      );
    });

    after(async function () {
      await Promise.all(programs.map((p) => p.stop()));
      fs.rmSync(dir, { recursive: true, force: true });
    });

    crossesOn(
      'a Redis Cluster',
      () => `redis+cluster://127.0.0.1:${ports[0]},127.0.0.1:${ports[1]}`,
      // -c follows the cluster's redirections to the primary that holds the {underpass} slot.
      async (...args) => (await run('redis-cli', ['-c', '-p', String(ports[0]), ...args])).stdout.trim(),
    );
  });
});
