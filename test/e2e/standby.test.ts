/**
 * Standby streams (PROTOCOL.md §1.2): a tunnel request is given to a stream the proxy holds at the server,
 * with the app's first bytes right behind it, instead of a control line and a stream the proxy opens
 * after its connect. Which way each tunnel went is read from the daemons' own trace of their steps
 * (UNDERPASS_OPEN_TRACE, runtime/open-trace.ts); what the apps see is the same either way.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http2 from 'node:http2';
import path from 'node:path';
import { Chain, freePort, lineEchoServer, Program, PYTHON, tmpDir } from '../harness';

/** Every tunnel's steps in the trace: id → the set of `ROLE STEP` it went through. */
function tunnelSteps(file: string): Map<string, Set<string>> {
  const steps = new Map<string, Set<string>>();
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const [role, step, id] = line.split('\t');
    if (id === undefined) continue;
    if (!steps.has(id)) steps.set(id, new Set());
    steps.get(id)!.add(`${role} ${step}`);
  }
  return steps;
}

/** Waits past the daemons' 200 ms flush, then reads the tunnels traced since `seen` were. */
async function newTunnels(file: string, seen: Set<string>): Promise<Array<Set<string>>> {
  await new Promise((resolve) => setTimeout(resolve, 600));
  const fresh = [...tunnelSteps(file)].filter(([id]) => !seen.has(id));
  for (const [id] of fresh) seen.add(id);
  return fresh.map(([, s]) => s);
}

describe('standby streams: a tunnel request goes down a stream the proxy holds', function () {
  let chain: Chain;
  let echo: Program;
  let banner: Program;
  let echoPort: number;
  let bannerPort: number;
  let deadPort: number;
  const dir = tmpDir('standby');
  const trace = path.join(dir, 'trace.tsv');
  const seen = new Set<string>();

  before(async function () {
    echoPort = await freePort();
    bannerPort = await freePort();
    // Nothing listens there: its tunnels are refused by the target.
    deadPort = await freePort();
    echo = lineEchoServer(echoPort, { upper: true });
    // A service that speaks first, then echoes one line.
    banner = new Program('banner', PYTHON, [
      '-c',
      `import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(b'hello from the service\\n'); self.wfile.write(self.rfile.readline())
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(('127.0.0.1', ${bannerPort}), H).serve_forever()`,
    ]);
    await new Promise((resolve) => setTimeout(resolve, 300));
    process.env.UNDERPASS_OPEN_TRACE = trace;
    try {
      chain = await new Chain([
        `echo=127.0.0.1:${echoPort}`,
        `banner=127.0.0.1:${bannerPort}`,
        `gone=127.0.0.1:${deadPort}`,
      ]).start();
    } finally {
      delete process.env.UNDERPASS_OPEN_TRACE;
    }
  });

  after(async function () {
    await chain?.stop();
    await Promise.all([echo?.stop(), banner?.stop()]);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the server announces the feature, and holds standby streams only beside a control stream, 8 at most', async function () {
    const session = http2.connect(`https://127.0.0.1:${chain.serverPort}`, { ca: fs.readFileSync(chain.ca) });
    session.on('error', () => undefined);
    const auth = { authorization: `Bearer ${chain.token}` };
    const open = (path: string): http2.ClientHttp2Stream => {
      const stream = session.request({ ':method': path === '/v1/session' ? 'GET' : 'POST', ':path': path, ...auth });
      stream.on('error', () => undefined);
      return stream;
    };
    const answer = (stream: http2.ClientHttp2Stream): Promise<http2.IncomingHttpHeaders> =>
      new Promise((resolve) => stream.once('response', resolve));
    try {
      const hello = open('/v1/session');
      let body = '';
      hello.on('data', (d: Buffer) => (body += d.toString()));
      await new Promise((resolve) => hello.once('end', resolve));
      assert.deepEqual((JSON.parse(body) as { features?: string[] }).features, ['standby']);
      // Before this session's control stream: refused.
      const early = await answer(open('/v1/standby'));
      assert.equal(early[':status'], 404);
      assert.equal(early['underpass-error'], 'UP_ERR_NOT_FOUND');
      const control = open('/v1/control');
      assert.equal((await answer(control))[':status'], 200);
      const held = Array.from({ length: 8 }, () => open('/v1/standby'));
      const ninth = await answer(open('/v1/standby'));
      assert.equal(ninth[':status'], 429);
      assert.equal(ninth['underpass-error'], 'UP_ERR_LIMIT');
      // The eight were held, unanswered: they end with the control stream, reset, never answered.
      let answered = 0;
      for (const stream of held) stream.once('response', () => (answered += 1));
      const closed = held.map((stream) => new Promise((resolve) => stream.once('close', resolve)));
      control.close();
      await Promise.all(closed);
      assert.equal(answered, 0);
      assert.ok(held.every((stream) => stream.rstCode === http2.constants.NGHTTP2_CANCEL));
    } finally {
      session.destroy();
    }
  });

  it("carries a non-blocking connect's first bytes, its half-close and the answer on a standby stream", async function () {
    // Non-blocking: the bytes leave before the tunnel is answered, and wait for it at the proxy.
    const script = `import selectors, socket
s = socket.socket(); s.setblocking(False)
s.connect_ex(('${chain.host('echo')}', ${echoPort}))
sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_WRITE); sel.select(20)
s.setblocking(True); s.settimeout(20)
s.sendall(b'first bytes\\n'); s.shutdown(socket.SHUT_WR)
data = b''
while True:
    chunk = s.recv(100)
    if not chunk: break
    data += chunk
print(data.decode().strip())`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.stdout.trim(), 'FIRST BYTES', r.stderr);
    const [tunnel, ...more] = await newTunnels(trace, seen);
    assert.equal(more.length, 0);
    assert.ok(tunnel!.has('server standby-out'), [...tunnel!].join(', '));
    assert.ok(!tunnel!.has('server control-out'));
    assert.ok(tunnel!.has('proxy ready-out') && tunnel!.has('server ready-in'));
  });

  it('passes what the service says first once the tunnel is answered (a blocking connect)', async function () {
    const script = `import socket
s = socket.create_connection(('${chain.host('banner')}', ${bannerPort}), timeout=20)
f = s.makefile('rwb')
first = f.readline().decode().strip()
f.write(b'and back\\n'); f.flush()
print(first + ' / ' + f.readline().decode().strip())`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.stdout.trim(), 'hello from the service / and back', r.stderr);
    const tunnels = await newTunnels(trace, seen);
    assert.equal(tunnels.length, 1);
    assert.ok(tunnels[0]!.has('server standby-out'));
  });

  it('more tunnels at once than standby streams: each carries its own bytes, whichever way it went', async function () {
    const n = 24;
    const script = `import selectors, socket
socks = []
for i in range(${n}):
    s = socket.socket(); s.setblocking(False)
    s.connect_ex(('${chain.host('echo')}', ${echoPort})); socks.append(s)
sel = selectors.DefaultSelector()
for s in socks: sel.register(s, selectors.EVENT_WRITE)
ready = 0
while ready < ${n}:
    for key, _ in sel.select(20):
        sel.unregister(key.fileobj); ready += 1
out = []
for i, s in enumerate(socks):
    s.setblocking(True); s.settimeout(20); s.sendall(b'tunnel %d\\n' % i)
for i, s in enumerate(socks):
    f = s.makefile('rb'); out.append(f.readline().decode().strip())
print(','.join(out))`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.deepEqual(
      r.stdout.trim().split(','),
      Array.from({ length: n }, (_, i) => `TUNNEL ${i}`),
      r.stderr,
    );
    const tunnels = await newTunnels(trace, seen);
    assert.equal(tunnels.length, n);
    const standby = tunnels.filter((t) => t.has('server standby-out')).length;
    const control = tunnels.filter((t) => t.has('server control-out')).length;
    assert.equal(standby + control, n);
    // How many found a standby stream depends on how fast the proxy replaced them; at least the first did.
    assert.ok(standby >= 1, `${standby} on standby streams, ${control} by control line`);
  });

  it("a target that refuses: the blocking connect fails with ECONNREFUSED and the proxy's reason, the standby stream is replaced", async function () {
    // Blocking, with no timeout (a timeout makes Python's connect non-blocking underneath).
    const script = `import socket
try:
    s = socket.socket(); s.connect(('${chain.host('gone')}', ${deadPort})); print('connected')
except ConnectionRefusedError: print('refused')`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.stdout.trim(), 'refused', r.stderr);
    await chain.redirector.waitFor(new RegExp(`gone's target 127\\.0\\.0\\.1:${deadPort} refused the connection`));
    const [refused] = await newTunnels(trace, seen);
    assert.ok(refused!.has('server standby-out') && !refused!.has('server ready-in'), [...refused!].join(', '));
    // The next tunnel still finds a standby stream.
    const again = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket
s = socket.create_connection(('${chain.host('echo')}', ${echoPort}), timeout=20); s.sendall(b'again\\n'); print(s.recv(100).decode().strip())`,
    ]);
    assert.equal(again.stdout.trim(), 'AGAIN', again.stderr);
    const [next] = await newTunnels(trace, seen);
    assert.ok(next!.has('server standby-out'));
  });

  it('a non-blocking connect to a target that refuses is reset', async function () {
    const script = `import selectors, socket
s = socket.socket(); s.setblocking(False)
s.connect_ex(('${chain.host('gone')}', ${deadPort}))
sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_WRITE); sel.select(20)
s.setblocking(True); s.settimeout(20)
try:
    s.sendall(b'lost\\n'); print('read %r' % s.recv(100))
except (ConnectionResetError, BrokenPipeError): print('reset')`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.stdout.trim(), 'reset', r.stderr);
    const [refused] = await newTunnels(trace, seen);
    assert.ok(refused!.has('server standby-out') && !refused!.has('server ready-in'), [...refused!].join(', '));
  });
});
