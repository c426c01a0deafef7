/**
 * Issue 2's "done when": unmodified clients (redis-cli, curl, python) reach real servers through
 * hook-run → redirector → tunnel server → service proxy, each a real process.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { redisServer } from '../cluster';
import { Chain, freePort, httpServer, lineEchoServer, Program, PYTHON, tmpDir } from '../harness';

describe('the spine: an unmodified client reaches a published service', function () {
  let chain: Chain;
  let redisPort: number;
  let webPort: number;
  let echoPort: number;
  let webDir: string;
  let bigSha: string;
  const extra: Program[] = [];

  before(async function () {
    redisPort = await freePort();
    webPort = await freePort();
    echoPort = await freePort();
    webDir = tmpDir('web');
    const big = crypto.randomBytes(20 * 1024 * 1024);
    fs.writeFileSync(path.join(webDir, 'big.bin'), big);
    bigSha = crypto.createHash('sha256').update(big).digest('hex');
    extra.push(redisServer(redisPort));
    extra.push(httpServer(webPort, webDir, 'http.server'));
    // A real echo server, upper-casing what it reads.
    extra.push(lineEchoServer(echoPort, { upper: true }));
    await extra[0]!.waitFor(/Ready to accept connections/);
    await extra[1]!.waitFor(/Serving HTTP/);
    chain = await new Chain([
      `redis=127.0.0.1:${redisPort}`,
      `web=127.0.0.1:${webPort}`,
      `echo=127.0.0.1:${echoPort}`,
    ]).start();
  });

  after(async function () {
    await chain?.stop();
    await Promise.all(extra.map((p) => p.stop()));
    fs.rmSync(webDir, { recursive: true, force: true });
  });

  it('publishes each service with a pseudo name under the zone and a service key', function () {
    for (const name of ['redis', 'web', 'echo']) {
      const p = chain.published.get(name)!;
      assert.equal(p.host, `${name}.default.underpass.internal`);
      assert.match(p.key, /^[A-Za-z0-9_-]{32}$/);
    }
  });

  it('redis-cli ping is answered by the real redis-server behind the proxy', async function () {
    const r = await chain.hookRun(['redis-cli', '-h', chain.host('redis'), '-p', String(redisPort), 'ping']);
    assert.equal(r.stderr.trim(), '', r.stderr);
    assert.equal(r.stdout.trim(), 'PONG');
    assert.equal(r.code, 0);
  });

  it('curl fetches a 20 MB file byte-identical', async function () {
    const r = await chain.hookRun(['curl', '-sS', '--fail', `http://${chain.host('web')}:${webPort}/big.bin`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdoutBuffer.length, 20 * 1024 * 1024);
    assert.equal(crypto.createHash('sha256').update(r.stdoutBuffer).digest('hex'), bigSha);
  });

  it('a Python socket.create_connection client talks both ways (blocking connect)', async function () {
    const script = `import socket,sys
s = socket.create_connection(('${chain.host('echo')}', ${echoPort}))
peer = s.getpeername()
s.sendall(b'hello underpass\\n'); s.shutdown(socket.SHUT_WR)
data = b''
while True:
    chunk = s.recv(65536)
    if not chunk: break
    data += chunk
print(data.decode().strip(), peer[0].startswith('127.'))`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'HELLO UNDERPASS True');
  });

  it("passes the command's exit status, stdin and stdout through", async function () {
    const exit = await chain.hookRun(['sh', '-c', 'exit 7']);
    assert.equal(exit.code, 7);
    const cat = await chain.hookRun(['cat'], { input: 'through stdin\n' });
    assert.equal(cat.stdout, 'through stdin\n');
    assert.equal(cat.code, 0);
  });

  it('leaves plain names and addresses alone', async function () {
    const script = `import socket
print(sorted({a[4][0] for a in socket.getaddrinfo('localhost', ${webPort}, socket.AF_INET)}))
s = socket.create_connection(('127.0.0.1', ${webPort})); s.sendall(b'HEAD / HTTP/1.0\\r\\n\\r\\n'); print(s.recv(12).decode())`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "['127.0.0.1']\nHTTP/1.0 200\n");
  });

  it('refuses a port that is not the published one, and names that are not publications', async function () {
    const script = `import socket
try:
    socket.create_connection(('${chain.host('redis')}', ${redisPort + 1 === webPort ? redisPort + 2 : redisPort + 1}), timeout=5)
    print('connected')
except ConnectionRefusedError:
    print('refused')
try:
    socket.getaddrinfo('nothing.default.underpass.internal', 80)
    print('resolved')
except socket.gaierror as e:
    print('gaierror', e.errno == socket.EAI_NONAME)`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'refused\ngaierror True\n');
  });

  it('a server restart keeps every pseudo name and service key, and tunnels work again', async function () {
    const before = new Map(chain.published);
    const seen = chain.proxy.stdout.split('\n').filter((l) => l.includes('"published"')).length;
    await chain.server.stop('SIGTERM');
    await chain.startServer();
    // The proxy reconnects on its own and republishes: the server answers with the stored key.
    for (let i = 0; chain.proxy.stdout.split('\n').filter((l) => l.includes('"published"')).length < seen + 3; i++) {
      assert.ok(i < 300, `the proxy did not republish:\n${chain.proxy.stderr}`);
      await new Promise((res) => setTimeout(res, 100));
    }
    const again = chain.proxy.stdout
      .split('\n')
      .filter((l) => l.includes('"published"'))
      .slice(seen)
      .map((l) => JSON.parse(l) as { name: string; host: string; key: string });
    for (const p of again) {
      assert.equal(p.host, before.get(p.name)!.host);
      assert.equal(p.key, before.get(p.name)!.key);
    }
    // The redirector reconnects too; poll until its session is back.
    let last = '';
    for (let i = 0; i < 60; i++) {
      const r = await chain.hookRun(['redis-cli', '-h', chain.host('redis'), '-p', String(redisPort), 'ping']);
      last = r.stdout.trim() + r.stderr;
      if (r.stdout.trim() === 'PONG') return;
      await new Promise((res) => setTimeout(res, 500));
    }
    assert.fail(`no PONG after the restart: ${last}`);
  });

  it('refuses connects while the service is offline, and a restarted proxy gets the same name and key back', async function () {
    const before = chain.published.get('redis')!;
    await chain.proxy.stop('SIGTERM');
    chain.published.clear();
    // Seed steps 630-640: a blocking connect fails with ECONNREFUSED; a non-blocking one sees its
    // connection reset or closed without data.
    const offline = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket, asyncio
try:
    socket.create_connection(('${before.host}', ${redisPort})); print('connected')
except ConnectionRefusedError: print('refused')
async def nonblocking():
    try:
        r, w = await asyncio.open_connection('${before.host}', ${redisPort})
        w.write(b'PING\\r\\n'); await w.drain()
        print('read', await r.read(100))
    except (ConnectionResetError, ConnectionRefusedError): print('reset')
asyncio.run(nonblocking())`,
    ]);
    assert.equal(offline.stdout, 'refused\nreset\n', offline.stderr);
    await chain.startProxy();
    assert.deepEqual(chain.published.get('redis'), before);
    const r = await chain.hookRun(['redis-cli', '-h', chain.host('redis'), '-p', String(redisPort), 'ping']);
    assert.equal(r.stdout.trim(), 'PONG', r.stderr);
  });
});
