/**
 * Issue 4: one multiplexed, flow-controlled session per endpoint that finds its way out. Client hosts are
 * network namespaces this test builds (veth pair + nftables) that may send only to a real proxy.
 */
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, HOOK_RUN, httpServer, PYTHON, Program, UNDERPASS, freePort, inNetns, run, tmpDir } from '../harness';
import { ClientHost } from '../netns';

const PY_ECHO = (port: number, host = '127.0.0.1'): string[] => [
  '-c',
  `import asyncio
async def handle(r, w):
    while data := await r.read(65536):
        w.write(data); await w.drain()
    w.close()
async def main():
    s = await asyncio.start_server(handle, '${host}', ${port}, backlog=4096)
    print('echo ready', flush=True)
    await s.serve_forever()
asyncio.run(main())`,
];

/** A client under hook-run: connects to the echo service, checks what comes back. */
function pingScript(host: string, port: number): string {
  return `import socket
s = socket.create_connection(('${host}', ${port}), timeout=20)
s.sendall(b'across the firewall\\n'); print(s.recv(100).decode().strip())`;
}

describe('transport: through what the network allows', function () {
  let echoPort: number;
  let echo: Program;

  before(async function () {
    echoPort = await freePort();
    // Listens on every address so the chain's proxy (on our side) reaches it either way.
    echo = new Program('echo', PYTHON, PY_ECHO(echoPort));
    await echo.waitFor(/echo ready/);
  });

  after(async function () {
    await echo?.stop();
  });

  describe('a client host that may send only to an HTTP proxy (tinyproxy, basic auth)', function () {
    let host: ClientHost;
    let chain: Chain;
    let tinyproxy: Program;
    let dir: string;

    before(async function () {
      const proxyPort = await freePort();
      host = ClientHost.create([proxyPort]);
      dir = tmpDir('tinyproxy');
      fs.writeFileSync(
        path.join(dir, 'tinyproxy.conf'),
        `Port ${proxyPort}\nListen ${host.outer}\nTimeout 600\nMaxClients 100\nAllow ${host.inner}\nBasicAuth tester s3cret\nLogLevel Info\n`,
      );
      tinyproxy = new Program('tinyproxy', 'tinyproxy', ['-d', '-c', path.join(dir, 'tinyproxy.conf')]);
      await new Promise((r) => setTimeout(r, 300));
      chain = new Chain([`echo=127.0.0.1:${echoPort}`], {
        serverHost: host.outer,
        clientNetns: host.name,
        redirectorEnv: { HTTPS_PROXY: `http://tester:s3cret@${host.outer}:${proxyPort}`, NO_PROXY: '' },
      });
      await chain.start();
    });

    after(async function () {
      await chain?.stop();
      await tinyproxy?.stop();
      host?.destroy();
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('the direct path is blocked', async function () {
      const [cmd, args] = inNetns(host.name, 'python3', [
        '-c',
        `import socket
try:
    socket.create_connection(('${host.outer}', ${chain.serverPort}), timeout=3); print('open')
except OSError as e: print('blocked', type(e).__name__)`,
      ]);
      const r = await run(cmd, args);
      assert.match(r.stdout, /^blocked/);
    });

    it('the redirector goes through the proxy and an unmodified client reaches the service', async function () {
      await chain.redirector.waitFor(/runs over TLS via HTTP proxy/);
      const r = await chain.hookRun([PYTHON, '-c', pingScript(chain.host('echo'), echoPort)]);
      assert.equal(r.stdout.trim(), 'across the firewall', r.stderr);
    });
  });

  describe('a client host that may send only to a SOCKS5 proxy (microsocks, user/password)', function () {
    let host: ClientHost;
    let chain: Chain;
    let socks: Program;

    before(async function () {
      const socksPort = await freePort();
      host = ClientHost.create([socksPort]);
      socks = new Program('microsocks', 'microsocks', [
        '-i',
        host.outer,
        '-p',
        String(socksPort),
        '-u',
        'tester',
        '-P',
        's3cret',
      ]);
      await new Promise((r) => setTimeout(r, 300));
      chain = new Chain([`echo=127.0.0.1:${echoPort}`], {
        serverHost: host.outer,
        clientNetns: host.name,
        redirectorEnv: { ALL_PROXY: `socks5://tester:s3cret@${host.outer}:${socksPort}`, NO_PROXY: '' },
      });
      await chain.start();
    });

    after(async function () {
      await chain?.stop();
      await socks?.stop();
      host?.destroy();
    });

    it('the direct path is blocked, the SOCKS5 path is taken, and the client gets through', async function () {
      const [cmd, args] = inNetns(host.name, 'python3', [
        '-c',
        `import socket
try:
    socket.create_connection(('${host.outer}', ${chain.serverPort}), timeout=3); print('open')
except OSError as e: print('blocked')`,
      ]);
      assert.equal((await run(cmd, args)).stdout.trim(), 'blocked');
      await chain.redirector.waitFor(/runs over TLS via SOCKS5 proxy/);
      const r = await chain.hookRun([PYTHON, '-c', pingScript(chain.host('echo'), echoPort)]);
      assert.equal(r.stdout.trim(), 'across the firewall', r.stderr);
    });
  });

  describe('one session on loopback', function () {
    let chain: Chain;
    let web: Program;
    let webDir: string;
    let sha50: string;

    before(async function () {
      webDir = tmpDir('web50');
      const big = crypto.randomBytes(50 * 1024 * 1024);
      fs.writeFileSync(path.join(webDir, 'big.bin'), big);
      sha50 = crypto.createHash('sha256').update(big).digest('hex');
      const webPort = await freePort();
      web = httpServer(webPort, webDir);
      await web.waitFor(/Serving HTTP/);
      chain = await new Chain([`echo=127.0.0.1:${echoPort}`, `web=127.0.0.1:${webPort}`], {
        redirectorArgs: ['--keepalive', '1'],
        proxyArgs: ['--transport', 'wss'],
      }).start();
    });

    after(async function () {
      await chain?.stop();
      await web?.stop();
      fs.rmSync(webDir, { recursive: true, force: true });
    });

    it('carries the proxy over WebSocket when told to (--transport wss)', async function () {
      await chain.proxy.waitFor(/runs over WebSocket \(wss\) direct/);
      const r = await chain.hookRun([PYTHON, '-c', pingScript(chain.host('echo'), echoPort)]);
      assert.equal(r.stdout.trim(), 'across the firewall', r.stderr);
    });

    it('a stalled reader holding a 50 MB response does not hold back a second 50 MB transfer', async function () {
      const webPort = chain.published.get('web')!.target.split(':')[1]!;
      const go = path.join(chain.dir, 'go');
      const stalled = chain.adopt(
        new Program('stalled', process.execPath, [
          HOOK_RUN,
          '--ipc',
          chain.ipcPath,
          '--',
          PYTHON,
          '-c',
          `import socket, hashlib, os, time
s = socket.create_connection(('${chain.host('web')}', ${webPort}))
s.sendall(b'GET /big.bin HTTP/1.0\\r\\n\\r\\n')
first = s.recv(1)
print('stalled', flush=True)
while not os.path.exists('${go}'): time.sleep(0.05)
data = first
while chunk := s.recv(1 << 20): data += chunk
body = data.split(b'\\r\\n\\r\\n', 1)[1]
print(len(body), hashlib.sha256(body).hexdigest(), flush=True)`,
        ]),
      );
      await stalled.waitFor(/stalled/);
      // The stalled stream has filled every buffer on its way; the second transfer must still finish
      // while the first one is not read at all.
      const r = await chain.hookRun(['curl', '-sS', '--fail', `http://${chain.host('web')}:${webPort}/big.bin`]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(crypto.createHash('sha256').update(r.stdoutBuffer).digest('hex'), sha50);
      assert.doesNotMatch(stalled.stdout, /\d+ [0-9a-f]{64}/, 'the stalled reader must not have finished yet');
      fs.writeFileSync(go, '');
      const m = await stalled.waitFor(/(\d+) ([0-9a-f]{64})/, 60_000);
      assert.equal(Number(m[1]), 50 * 1024 * 1024);
      assert.equal(m[2], sha50);
    });

    it('1,000 concurrent tunneled connections on one session all complete with correct bytes', async function () {
      const r = await chain.hookRun(
        [
          PYTHON,
          '-c',
          `import asyncio, os, hashlib
async def one(i):
    r, w = await asyncio.open_connection('${chain.host('echo')}', ${echoPort})
    payload = hashlib.sha256(str(i).encode()).digest() * 256
    w.write(payload); await w.drain(); w.write_eof()
    got = await r.read()
    w.close()
    return got == payload
async def main():
    results = await asyncio.gather(*(one(i) for i in range(1000)))
    print(sum(results), 'of', len(results))
asyncio.run(main())`,
        ],
        { timeoutMs: 120_000 },
      );
      assert.equal(r.stdout.trim(), '1000 of 1000', r.stderr);
    });

    it("carries the real server's reset to the app, and the app's half-close to the real server", async function () {
      // A real server that answers one line and, a moment later, resets (SO_LINGER 0); and reports the
      // EOF it saw after a half-close. (A reset that lands in the same instant as the last bytes is read
      // by Linux as end-of-stream on a half-open socket, and travels on as a close.)
      const port = await freePort();
      const rst = chain.adopt(
        new Program('rst', PYTHON, [
          '-c',
          `import socket, struct, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', ${port})); s.listen(8)
print('ready', flush=True)
while True:
    c, _ = s.accept()
    line = c.recv(100)
    if line.startswith(b'half'):
        rest = c.recv(100)
        print('eof seen' if rest == b'' else 'no eof', flush=True)
        c.sendall(b'after half-close\\n'); c.close(); continue
    c.sendall(b'bye\\n'); time.sleep(0.2)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); c.close()`,
        ]),
      );
      await rst.waitFor(/ready/);
      const proxy = chain.adopt(
        new Program('proxy-rst', process.execPath, [
          UNDERPASS,
          'proxy',
          ...chain.endpointArgs(),
          '--json',
          '--publish',
          `rst=127.0.0.1:${port}`,
        ]),
      );
      const published = JSON.parse((await proxy.waitFor(/^(\{"event":"published".*\})$/m, 20_000, 'stdout'))[1]!) as {
        host: string;
      };
      const r = await chain.hookRun([
        PYTHON,
        '-c',
        `import socket, time
s = socket.create_connection(('${published.host}', ${port}))
s.sendall(b'hello'); print(s.recv(100).decode().strip())
time.sleep(0.5)
try:
    while s.recv(100): pass
    print('clean close')
except ConnectionResetError: print('reset')
h = socket.create_connection(('${published.host}', ${port}))
h.sendall(b'half'); time.sleep(0.2); h.shutdown(socket.SHUT_WR)
print(h.recv(100).decode().strip())`,
      ]);
      assert.equal(r.stdout, 'bye\nreset\nafter half-close\n', r.stderr);
      await rst.waitFor(/eof seen/);
    });

    it('notices a server that stops answering and reconnects', async function () {
      const pid = chain.server.child.pid!;
      process.kill(pid, 'SIGSTOP');
      try {
        await chain.redirector.waitFor(/stopped answering keepalives; reconnecting/, 15_000);
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      await chain.redirector.waitFor(/reconnected to the tunnel server/, 30_000);
      const r = await chain.hookRun([PYTHON, '-c', pingScript(chain.host('echo'), echoPort)]);
      assert.equal(r.stdout.trim(), 'across the firewall', r.stderr);
    });
  });
});
