/**
 * Issue 14, part B, end to end: three real `underpass server` nodes sharing a real redis-server. A
 * placement table sends the proxy, which dialled node c, to node a, and the redirector, which dialled
 * node a, to node b; every tunnel then crosses the node link b → a: redis-cli to a real redis-server,
 * a 50 MB curl download (sha256 equal on both ends), 200 tunnels open at once, and a half-close. When
 * node a dies, the tunnels that crossed it are reset (ECONNRESET at the app). Least load spreads 30
 * endpoints that all dial one node over the three within one of even; affinity sends a redirector whose
 * account's tunnels crossed to a node there at its next session, and one with no tunnels yet to the node
 * its account's proxies are on. Every program is real.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createLogger } from '../../runtime/log';
import { ServerLink } from '../../runtime/server-link';
import { redisServer, TestCluster } from '../cluster';
import { freePort, httpServer, lineEchoServer, Program, PYTHON, run, tmpDir, UNDERPASS } from '../harness';

/**
 * Python opening `count` tunnels at once through the redirector's SOCKS5 listener (its own few lines of
 * SOCKS5, remote name), one line each, all open before any is read; prints how many came back right.
 */
function concurrentEchoes(socksPort: number, host: string, port: number, count: number): string {
  return `import socket, struct
def tunnel():
    s = socket.create_connection(('127.0.0.1', ${socksPort}), timeout=120)
    s.sendall(b'\\x05\\x01\\x00')
    assert s.recv(2) == b'\\x05\\x00'
    name = b'${host}'
    s.sendall(b'\\x05\\x01\\x00\\x03' + bytes([len(name)]) + name + struct.pack('>H', ${port}))
    reply = b''
    while len(reply) < 10: reply += s.recv(10 - len(reply))
    assert reply[1] == 0, reply
    return s
socks = [tunnel() for i in range(${count})]
for i, s in enumerate(socks): s.sendall(b'tunnel %d\\n' % i)
print(sum(1 for i, s in enumerate(socks) if s.makefile('rb').readline() == b'TUNNEL %d\\n' % i))`;
}

describe('cluster: relay between nodes and placement (issue 14)', function () {
  // 50 MB and 200 tunnels through three hops on a loaded 2-core machine.
  this.timeout(300_000);
  let cluster: TestCluster;
  let dir: string;
  let redisPort: number;
  let webPort: number;
  let echoPort: number;
  let socksPort: number;
  let bigSha: string;
  const extra: Program[] = [];
  let proxy: Program;
  let redirector: Program;
  const ipc = (): string => path.join(dir, 'redirector.sock');
  const host = (name: string): string => `${name}.default.underpass.internal`;

  /** `underpass forward` from a free local port to publication `name`'s port. */
  async function forward(name: string, port: number): Promise<number> {
    const local = await freePort();
    const program = new Program(`forward ${name}`, process.execPath, [
      UNDERPASS,
      'forward',
      String(local),
      `${host(name)}:${port}`,
      '--ipc',
      ipc(),
    ]);
    extra.push(program);
    await program.waitFor(/forwarding /);
    return local;
  }

  before(async function () {
    dir = tmpDir('cluster-relay');
    [redisPort, webPort, echoPort, socksPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    const big = crypto.randomBytes(50 * 1024 * 1024);
    fs.mkdirSync(path.join(dir, 'www'));
    fs.writeFileSync(path.join(dir, 'www', 'big.bin'), big);
    bigSha = crypto.createHash('sha256').update(big).digest('hex');
    extra.push(redisServer(redisPort, 'redis-server (published)'));
    extra.push(httpServer(webPort, path.join(dir, 'www')));
    extra.push(lineEchoServer(echoPort, { upper: true }));
    await extra[0]!.waitFor(/Ready to accept connections/);
    await extra[1]!.waitFor(/Serving HTTP/);
    const placement = path.join(dir, 'placement');
    // The proxy announces redis.default, web.default and echo.default; the redirector only its account.
    fs.writeFileSync(placement, '# proxies of account default\n*.default a\n\ndefault b  # its redirectors\n');
    cluster = await new TestCluster(['a', 'b', 'c'], ['--placement', placement]).start();
    proxy = cluster.proxy('c', [
      `redis=127.0.0.1:${redisPort}`,
      `web=127.0.0.1:${webPort}`,
      `echo=127.0.0.1:${echoPort}`,
    ]);
    await proxy.waitFor(/"event":"published","name":"echo"/, 20_000, 'stdout');
    redirector = new Program('redirector', process.execPath, [
      UNDERPASS,
      'redirector',
      ...cluster.endpointArgs('a'),
      '--ipc',
      ipc(),
      '--pseudo-net',
      `127.${90 + (process.pid % 40)}.0.0/16`,
      '--dns',
      'off',
      '--socks',
      `127.0.0.1:${socksPort}`,
    ]);
    await redirector.waitFor(/serving hooks on/);
  });

  after(async function () {
    await Promise.all([proxy, redirector, ...extra].filter(Boolean).map((p) => p.stop()));
    await cluster?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sends the proxy and the redirector to the nodes the table names, and both say so', async function () {
    const a = cluster.node('a').address;
    const b = cluster.node('b').address;
    await proxy.waitFor(new RegExp(`sends this endpoint to ${a}`));
    await redirector.waitFor(new RegExp(`sends this endpoint to ${b}`));
    await cluster.node('c').program.waitFor(/sending an endpoint to node a .*placement line 2 .*matches \w+\.default/);
    await cluster.node('a').program.waitFor(/sending an endpoint to node b .*placement line 4 .*matches default/);
    await cluster.node('a').program.waitFor(/published publication=echo/);
  });

  it('carries redis-cli to a real redis-server across the node link b → a', async function () {
    const local = await forward('redis', redisPort);
    const set = await run('redis-cli', ['-p', String(local), 'SET', 'crossed', 'two nodes']);
    assert.equal(set.stdout.trim(), 'OK', set.stderr);
    const get = await run('redis-cli', ['-p', String(local), 'GET', 'crossed']);
    assert.equal(get.stdout.trim(), 'two nodes', get.stderr);
    await cluster.node('b').program.waitFor(/node link to a up/);
  });

  it('carries a 50 MB curl download whole (sha256 equal on both ends)', async function () {
    const r = await run(
      'curl',
      [
        '-sS',
        '--max-time',
        '120',
        '--socks5-hostname',
        `127.0.0.1:${socksPort}`,
        `http://${host('web')}:${webPort}/big.bin`,
      ],
      { timeoutMs: 150_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdoutBuffer.length, 50 * 1024 * 1024);
    assert.equal(crypto.createHash('sha256').update(r.stdoutBuffer).digest('hex'), bigSha);
  });

  it('carries 200 tunnels open at once, each its own line back', async function () {
    const r = await run(PYTHON, ['-c', concurrentEchoes(socksPort, host('echo'), echoPort, 200)], {
      timeoutMs: 240_000,
    });
    assert.equal(r.stdout.trim(), '200', r.stderr);
  });

  it("carries a half-close: the app's end of writing reaches the target, whose answer still comes back", async function () {
    const local = await forward('echo', echoPort);
    const r = await run(PYTHON, [
      '-c',
      `import socket
s = socket.create_connection(('127.0.0.1', ${local}), timeout=30)
s.sendall(b'last words\\n'); s.shutdown(socket.SHUT_WR)
data = b''
while True:
    chunk = s.recv(100)
    if not chunk: break
    data += chunk
print(data.decode().strip())`,
    ]);
    assert.equal(r.stdout.trim(), 'LAST WORDS', r.stderr);
  });

  it('resets the tunnels that crossed a node that died (ECONNRESET at the app)', async function () {
    const local = await forward('echo', echoPort);
    const app = new Program('app', PYTHON, [
      '-u',
      '-c',
      `import socket
s = socket.create_connection(('127.0.0.1', ${local}), timeout=60)
s.sendall(b'before\\n'); print(s.recv(100).decode().strip(), flush=True)
try:
    print('read %r' % s.recv(100), flush=True)
except ConnectionResetError:
    print('ECONNRESET', flush=True)`,
    ]);
    extra.push(app);
    await app.waitFor(/BEFORE/);
    await cluster.node('a').program.stop('SIGKILL');
    await app.waitFor(/ECONNRESET|read /, 30_000);
    assert.match(app.stdout, /ECONNRESET/);
  });
});

describe('cluster: affinity (issue 14)', function () {
  let cluster: TestCluster;
  let dir: string;
  let echoPort: number;
  const programs: Program[] = [];
  const host = 'echo.default.underpass.internal';

  /** A redirector dialling node b, with a SOCKS5 listener at `socksPort`. */
  async function redirector(name: string, socksPort: number): Promise<Program> {
    const program = new Program(name, process.execPath, [
      UNDERPASS,
      'redirector',
      ...cluster.endpointArgs('b'),
      '--ipc',
      path.join(dir, `${name}.sock`),
      '--pseudo-net',
      `127.${50 + (process.pid % 30) + programs.length}.0.0/16`,
      '--dns',
      'off',
      '--socks',
      `127.0.0.1:${socksPort}`,
    ]);
    programs.push(program);
    await program.waitFor(/serving hooks on/);
    return program;
  }

  before(async function () {
    dir = tmpDir('cluster-affinity');
    echoPort = await freePort();
    programs.push(lineEchoServer(echoPort, { upper: true }));
    cluster = await new TestCluster(['a', 'b']).start();
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop()));
    await cluster?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("sends a redirector to the node its account's tunnels crossed to, at its next session", async function () {
    // The first redirector comes while its account has no proxy anywhere: it stays on node b.
    const first = await freePort();
    const crossing = await redirector('first', first);
    // Its proxy then comes to node a (the least loaded), so the redirector's tunnel crosses b → a.
    const proxy = cluster.proxy('a', [`echo=127.0.0.1:${echoPort}`]);
    programs.push(proxy);
    await proxy.waitFor(/"event":"published","name":"echo"/, 20_000, 'stdout');
    assert.doesNotMatch(proxy.stderr, /sends this endpoint/);
    const r1 = await run(PYTHON, ['-c', concurrentEchoes(first, host, echoPort, 1)]);
    assert.equal(r1.stdout.trim(), '1', r1.stderr);
    await cluster.node('b').program.waitFor(/node link to a up/);
    assert.doesNotMatch(crossing.stderr, /sends this endpoint/);
    await crossing.stop();
    // The next redirector of that account to reach node b is sent to node a, where its tunnels go.
    const second = await freePort();
    const meeting = await redirector('second', second);
    await meeting.waitFor(new RegExp(`sends this endpoint to ${cluster.node('a').address}`));
    await cluster.node('b').program.waitFor(/sending an endpoint to node a .*its account's tunnels go to node a/);
    const r2 = await run(PYTHON, ['-c', concurrentEchoes(second, host, echoPort, 1)]);
    assert.equal(r2.stdout.trim(), '1', r2.stderr);
  });

  it("sends a redirector with no tunnels yet to the node its account's proxies are on", async function () {
    // Node b restarted has relayed nothing; node a's heartbeat says it holds the account's proxy.
    await cluster.node('b').program.stop();
    await cluster.startNode('b');
    const third = await freePort();
    const meeting = await redirector('third', third);
    await meeting.waitFor(new RegExp(`sends this endpoint to ${cluster.node('a').address}`));
    await cluster.node('b').program.waitFor(/sending an endpoint to node a .*its account's proxies are on node a/);
    const r3 = await run(PYTHON, ['-c', concurrentEchoes(third, host, echoPort, 1)]);
    assert.equal(r3.stdout.trim(), '1', r3.stderr);
  });
});

describe('cluster: least load (issue 14)', function () {
  let cluster: TestCluster;
  const links: ServerLink[] = [];

  before(async function () {
    cluster = await new TestCluster(['a', 'b', 'c']).start();
  });

  after(async function () {
    for (const link of links) link.stop();
    await cluster?.stop();
  });

  it('spreads 30 endpoints that all dial node a over the three nodes within one of even', async function () {
    const ca = fs.readFileSync(cluster.ca);
    const a = cluster.node('a');
    for (let i = 0; i < 30; i++) {
      const link = new ServerLink({
        server: { host: '127.0.0.1', port: a.port },
        ca,
        token: cluster.token,
        logger: createLogger('endpoint', 'text', 'error'),
      });
      links.push(link);
      await link.start();
    }
    const count = new Map<string, number>();
    for (const link of links) {
      const name = cluster.nameAt(link.server);
      count.set(name, (count.get(name) ?? 0) + 1);
    }
    for (const name of ['a', 'b', 'c'])
      assert.ok(Math.abs((count.get(name) ?? 0) - 10) <= 1, `uneven: ${JSON.stringify(Object.fromEntries(count))}`);
  });
});
