/**
 * Issue 6, "nothing lost": tunneled connections survive a dropped session link. The link between an
 * endpoint and the server runs through a TCP relay the test owns; cutting it resets both of the relay's
 * connections and refuses new ones, which is what a pulled cable and a NAT that forgot the flow look like
 * to the two ends. A real curl moves 100 MB through the whole chain meanwhile and must finish with the
 * same bytes.
 */
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { Chain, freePort, HOOK_RUN, lineEchoServer, Program, PYTHON, run, tmpDir } from '../harness';

/** A TCP relay standing for the network between one endpoint and the server, which the test can cut. */
class Link {
  port = 0;
  private server: net.Server | null = null;
  private readonly sockets = new Set<net.Socket>();
  cuts = 0;

  constructor(private readonly target: () => number) {}

  async open(): Promise<this> {
    if (this.port === 0) this.port = await freePort();
    const server = net.createServer((inbound) => {
      const outbound = net.connect(this.target(), '127.0.0.1');
      for (const s of [inbound, outbound]) {
        this.sockets.add(s);
        s.on('error', () => undefined);
        s.once('close', () => this.sockets.delete(s));
      }
      inbound.pipe(outbound).pipe(inbound);
      inbound.once('close', () => outbound.destroy());
      outbound.once('close', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.server = server;
    return this;
  }

  /** Both ends see their connection reset; new connections are refused until `open()`. Answers how many were cut. */
  async cut(): Promise<number> {
    this.cuts += 1;
    const carried = this.sockets.size / 2;
    const server = this.server;
    this.server = null;
    // close() waits for the open connections, so they go first.
    const closed = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    for (const s of this.sockets) s.resetAndDestroy();
    await closed;
    return carried;
  }

  async close(): Promise<void> {
    await this.cut();
  }

  /**
   * The link goes silent and stays so, as when a peer's machine froze or a middlebox started dropping
   * packets: nothing is forwarded or closed any more, and new connections are refused.
   */
  async freeze(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) {
      s.unpipe();
      s.pause();
      s.removeAllListeners('close');
    }
    // close() waits for the connections it no longer accepts; these stay open until the test ends.
    server?.close();
    if (server) server.unref();
  }

  /** Cuts a link that carries a session, and waits until `endpoint` noticed. */
  async cutSessionOf(endpoint: Program): Promise<void> {
    const before = (endpoint.stdout + endpoint.stderr).split('lost the session').length;
    assert.ok((await this.cut()) > 0, `the link on port ${this.port} carried no connection to cut`);
    const deadline = Date.now() + 20_000;
    while ((endpoint.stdout + endpoint.stderr).split('lost the session').length === before) {
      if (Date.now() > deadline)
        throw new Error(
          `${endpoint.label} did not notice the cut of its link on port ${this.port}:\n${endpoint.stderr}`,
        );
      await new Promise((r) => setTimeout(r, 25));
    }
  }
}

/**
 * A real HTTP server (Python's http.server): GET serves files from `dir`; PUT answers the body's sha256
 * and prints `received N MB` as the body arrives, so a test can tell the upload is under way.
 */
function httpServer(port: number, dir: string): Program {
  return new Program('http', PYTHON, [
    '-c',
    `import hashlib, http.server, functools
class H(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_PUT(self):
        left = int(self.headers['Content-Length']); h = hashlib.sha256()
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk: break
            h.update(chunk); left -= len(chunk); self.seen = getattr(self, 'seen', 0) + len(chunk)
            if self.seen >= 20 << 20 and not getattr(self, 'told', False): print('received 20 MB', flush=True); self.told = True
        body = h.hexdigest().encode()
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(('127.0.0.1', ${port}), functools.partial(H, directory=${JSON.stringify(dir)})).serve_forever()`,
  ]);
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Resolves once `file` holds at least `bytes` (the transfer is under way). */
async function grown(file: string, bytes: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (fs.existsSync(file) && fs.statSync(file).size >= bytes) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${file} did not reach ${bytes} bytes`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface HookedCurl {
  done: Promise<{ code: number | null; out: string }>;
  kill(): void;
}

/** Runs curl under hook-run against the redirector at `ipcPath`; resolves with its exit status and what it printed. */
function hookedCurl(ipcPath: string, args: string[]): HookedCurl {
  const child = spawn(process.execPath, [HOOK_RUN, '--ipc', ipcPath, '--', 'curl', '-sS', '--fail', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
  return {
    done: new Promise((resolve) => child.once('exit', (code) => resolve({ code, out }))),
    kill: () => child.kill('SIGKILL'),
  };
}

describe('resume: connections survive a dropped session link', function () {
  const dir = tmpDir('resume');
  const payload = path.join(dir, 'payload.bin');
  let httpPort = 0;
  let http: Program;

  before(async function () {
    // 100 MB of random bytes, written in pieces so the test process never holds it at once.
    const fd = fs.openSync(payload, 'w');
    for (let i = 0; i < 100; i += 1) fs.writeSync(fd, crypto.randomBytes(1024 * 1024));
    fs.closeSync(fd);
    httpPort = await freePort();
    http = httpServer(httpPort, dir);
  });

  after(async function () {
    await http?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('with each endpoint behind a link the test cuts', function () {
    let chain: Chain;
    const proxyLink = new Link(() => chain.serverPort);
    const redirectorLink = new Link(() => chain.serverPort);

    before(async function () {
      await proxyLink.open();
      await redirectorLink.open();
      // A reset reaches an endpoint only while it reads its socket; one that stopped reading for
      // backpressure learns of the cut from its keepalive (two intervals), so those are shorter here
      // than the default, yet long enough that a loaded machine does not drop a live session.
      const quick = ['--keepalive', '5'];
      chain = new Chain([`files=127.0.0.1:${httpPort}`], {
        proxyVia: proxyLink.port,
        redirectorVia: redirectorLink.port,
        proxyArgs: quick,
        redirectorArgs: quick,
      });
      await chain.start();
    });

    after(async function () {
      await chain?.stop();
      await proxyLink.close();
      await redirectorLink.close();
    });

    const curl = (args: string[]): HookedCurl => hookedCurl(chain.ipcPath, args);

    it("a 100 MB download stays byte-identical while the redirector's link is cut for 5 s", async function () {
      const output = path.join(dir, 'download.bin');
      // Rate-limited so that the cut falls in the middle of the transfer.
      const transfer = curl([
        '--limit-rate',
        '25M',
        '-o',
        output,
        `http://${chain.host('files')}:${httpPort}/payload.bin`,
      ]);
      await grown(output, 20 * 1024 * 1024);
      await redirectorLink.cutSessionOf(chain.redirector);
      await sleep(5000);
      await redirectorLink.open();
      const { code, out } = await transfer.done;
      assert.equal(code, 0, `curl failed: ${out}`);
      await chain.redirector.waitFor(/session resumed: re-opening 1 tunnel/);
      assert.equal(sha256(output), sha256(payload), 'the download differs from the file served');
    });

    it("a 100 MB upload stays byte-identical while the proxy's link is cut for 5 s", async function () {
      const transfer = curl(['--limit-rate', '25M', '-T', payload, `http://${chain.host('files')}:${httpPort}/upload`]);
      // The proxy's session must be carrying the upload when it is cut.
      await http.waitFor(/received 20 MB/, 60_000);
      await proxyLink.cutSessionOf(chain.proxy);
      await sleep(5000);
      await proxyLink.open();
      const { code, out } = await transfer.done;
      assert.equal(code, 0, `curl failed: ${out}`);
      assert.equal(out.trim(), sha256(payload), 'the server received other bytes than curl sent');
      await chain.proxy.waitFor(/session resumed: re-opening 1 tunnel/);
    });
  });

  for (const transport of ['tls', 'wss'] as const) {
    describe(`when an endpoint's link goes silent under a transfer and stays so (${transport})`, function () {
      let chain: Chain;
      const redirectorLink = new Link(() => chain.serverPort);

      before(async function () {
        await redirectorLink.open();
        // Only the server's keepalive is short: the endpoint must not come back to supersede its session.
        chain = new Chain([`files=127.0.0.1:${httpPort}`], {
          redirectorVia: redirectorLink.port,
          redirectorArgs: ['--transport', transport],
          serverArgs: ['--keepalive', '2', '--grace', '2'],
        });
        await chain.start();
      });

      after(async function () {
        await chain?.stop();
        await redirectorLink.close();
      });

      it('the server drops the session though it cannot flush to it, and resets its tunnels after the grace period', async function () {
        const output = path.join(dir, `silent-${transport}.bin`);
        // The server is sending to the redirector when the link freezes, so its socket's buffers are full.
        const transfer = hookedCurl(chain.ipcPath, [
          '--limit-rate',
          '25M',
          '-o',
          output,
          `http://${chain.host('files')}:${httpPort}/payload.bin`,
        ]);
        try {
          await grown(output, 10 * 1024 * 1024);
          await redirectorLink.freeze();
          await chain.server.waitFor(/dropped a session that stopped answering keepalives/, 20_000);
          await chain.server.waitFor(/the session did not come back within 2 s: resetting 1 tunnel/, 20_000);
        } finally {
          transfer.kill();
        }
      });
    });
  }

  /** A chain publishing a line-echo service, with idle connections through it that report how they end. */
  class IdleChain {
    chain!: Chain;
    echo!: Program;
    echoPort = 0;

    async start(options: ConstructorParameters<typeof Chain>[1] = {}): Promise<this> {
      this.echoPort = await freePort();
      this.echo = lineEchoServer(this.echoPort);
      this.chain = new Chain([`echo=127.0.0.1:${this.echoPort}`], options);
      await this.chain.start();
      return this;
    }

    async stop(): Promise<void> {
      await this.chain?.stop();
      await this.echo?.stop();
    }

    /**
     * An idle connection: `ready` once it has its echo, with the pseudo address it reached; `ended` says
     * how it ended (reset, eof, data).
     */
    idleClient(): { ready: Promise<string>; ended: Promise<string> } {
      const child = spawn(
        process.execPath,
        [
          HOOK_RUN,
          '--ipc',
          this.chain.ipcPath,
          '--',
          PYTHON,
          '-c',
          `import socket, sys
s = socket.create_connection(('${this.chain.host('echo')}', ${this.echoPort}))
s.sendall(b'hi\\n'); assert s.recv(10) == b'hi\\n'
print('ready', s.getpeername()[0], flush=True)
try:
    print('eof' if s.recv(10) == b'' else 'data')
except ConnectionResetError:
    print('reset')`,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (out += d));
      const ready = new Promise<string>((resolve, reject) => {
        child.stdout.setEncoding('utf8').on('data', (d: string) => {
          out += d;
          const m = out.match(/ready (\S+)\n/);
          if (m) resolve(m[1]!);
        });
        child.once('exit', () => reject(new Error(`the client ended before it was ready: ${out}`)));
      });
      const ended = new Promise<string>((resolve) =>
        child.once('exit', () => resolve(out.replace(/ready \S+\n/, '').trim())),
      );
      return { ready, ended };
    }

    async assertNewTunnelWorks(): Promise<void> {
      const r = await this.chain.hookRun([
        PYTHON,
        '-c',
        `import socket
s = socket.create_connection(('${this.chain.host('echo')}', ${this.echoPort}), timeout=20); s.sendall(b'again\\n'); print(s.recv(100).decode().strip())`,
      ]);
      assert.equal(r.stdout.trim(), 'again', r.stderr);
    }
  }

  describe('when the session does not come back within the grace period', function () {
    const idle = new IdleChain();
    const redirectorLink = new Link(() => idle.chain.serverPort);

    before(async function () {
      await redirectorLink.open();
      await idle.start({
        redirectorVia: redirectorLink.port,
        redirectorArgs: ['--grace', '2'],
        serverArgs: ['--grace', '2'],
      });
    });

    after(async function () {
      await idle.stop();
      await redirectorLink.close();
    });

    it('the app sees ECONNRESET, and new tunnels work once the link is back', async function () {
      const client = idle.idleClient();
      const address = await client.ready;
      await redirectorLink.cutSessionOf(idle.chain.redirector);
      assert.equal(await client.ended, 'reset');
      await idle.chain.redirector.waitFor(/did not come back within 2 s: resetting 1 tunnel/);
      // A connection that comes while there is no session is reset, and the redirector goes on.
      const late = await run(PYTHON, [
        '-c',
        `import socket
s = socket.create_connection(('${address}', ${idle.echoPort}), timeout=20)
try:
    s.sendall(b'late\\n'); print(s.recv(10).decode().strip() or 'closed')
except ConnectionError: print('reset')`,
      ]);
      assert.equal(late.stdout.trim(), 'reset', late.stderr);
      await idle.chain.redirector.waitFor(/refused: no session to the tunnel server/);
      assert.equal(idle.chain.redirector.child.exitCode, null, idle.chain.redirector.stderr);
      await redirectorLink.open();
      await idle.chain.redirector.waitFor(/reconnected to the tunnel server/);
      await idle.assertNewTunnelWorks();
    });
  });

  describe('a server restart', function () {
    const idle = new IdleChain();

    before(async function () {
      await idle.start();
    });

    after(async function () {
      await idle.stop();
    });

    it('in the middle of idle tunnels resets them, and new tunnels work without restarting anything', async function () {
      const clients = [idle.idleClient(), idle.idleClient(), idle.idleClient()];
      await Promise.all(clients.map((c) => c.ready));
      await idle.chain.server.stop();
      await idle.chain.startServer();
      // The restarted server does not know the endpoints' sessions, so their tunnels cannot come back.
      for (const c of clients) assert.equal(await c.ended, 'reset');
      await idle.chain.redirector.waitFor(/the tunnel server no longer knows this session: resetting 3 tunnel/);
      await idle.chain.proxy.waitFor(/"event":"reconnected"/);
      await idle.assertNewTunnelWorks();
    });
  });
});
