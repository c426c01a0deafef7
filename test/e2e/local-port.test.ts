/**
 * Issue 12: a local server that holds a publication's port on the wildcard address must not take the
 * publication away from hooked apps. The client host is a network namespace built by the test: there a
 * local server listens on *:P (iperf3 -s, a developer's own PostgreSQL, a Python server that answers
 * "local"), so the redirector cannot listen on PSEUDO:P; the real servers, published on that same port P,
 * run on this side. Hooked clients — iperf3 itself, psql, Python's blocking, non-blocking, Fast Open and
 * AF_INET6 connects — must reach the real ones, see
 * port P as their peer, and be admitted by their claims; an unhooked client meets the local server, which
 * is what the redirector's one warning line says, naming that server and the fixes; the DNS responder
 * does not hand such a name to programs without the hook, and `underpass forward` serves them.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Chain, PYTHON, Program, UNDERPASS, freePort, inNetns, lineEchoServer, run, tmpDir, which } from '../harness';
import { ClientHost } from '../netns';
import { startPostgres } from '../postgres';

describe('a local server on the published port (issue 12)', function () {
  let host: ClientHost;
  let chain: Chain;
  let echoPort: number;
  let iperfPort: number;
  let pgPort: number;
  const dirs: string[] = [];
  const extra: Program[] = [];

  before(async function () {
    assert.ok(which('iperf3') !== null, "iperf3 is missing: run 'npm run prerequisites'");
    echoPort = await freePort();
    iperfPort = await freePort();
    pgPort = await freePort();
    const serverPort = await freePort();
    host = ClientHost.create([serverPort]);
    // The real servers, on this side: upper-casing echo and an iperf3 server, both on 127.0.0.1.
    const echo = lineEchoServer(echoPort, { upper: true });
    const iperf = new Program('iperf3 (published)', 'iperf3', [
      '-s',
      '--forceflush',
      '-B',
      '127.0.0.1',
      '-p',
      String(iperfPort),
    ]);
    // The local servers, on the client host's wildcard address, on the same ports.
    const [py, pyArgs] = inNetns(host.name, PYTHON, [
      '-u',
      '-c',
      `import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self): self.wfile.write(b'local\\n')
socketserver.ThreadingTCPServer.allow_reuse_address = True
server = socketserver.ThreadingTCPServer(('0.0.0.0', ${echoPort}), H)
print('local ready', flush=True)
server.serve_forever()`,
    ]);
    const local = new Program('local server', py, pyArgs);
    const [ip, ipArgs] = inNetns(host.name, 'iperf3', ['-s', '--forceflush', '-p', String(iperfPort)]);
    const localIperf = new Program('iperf3 (local)', ip, ipArgs);
    extra.push(echo, iperf, local, localIperf);
    await local.waitFor(/local ready/);
    await iperf.waitFor(/Server listening/);
    await localIperf.waitFor(/Server listening/);
    // The everyday case: the remote PostgreSQL is published on 5432 (say), and a local one holds *:5432.
    dirs.push(tmpDir('pg-remote'), tmpDir('pg-local'));
    extra.push(await startPostgres(dirs[0]!, pgPort, { name: 'remote' }));
    extra.push(await startPostgres(dirs[1]!, pgPort, { name: 'local', listen: '*', netns: host.name }));
    chain = new Chain([`echo=127.0.0.1:${echoPort}`, `iperf=127.0.0.1:${iperfPort}`, `pg=127.0.0.1:${pgPort}`], {
      serverHost: host.outer,
      clientNetns: host.name,
      redirectorEnv: { UNDERPASS_LOG_LEVEL: 'debug' },
    });
    chain.serverPort = serverPort;
    await chain.start();
  });

  after(async function () {
    await chain?.stop();
    await Promise.all(extra.map((p) => p.stop()));
    host?.destroy();
    for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('hooked psql reaches the published PostgreSQL while a local one listens on *:P; unhooked psql gets the local one', async function () {
    const query = (hostName: string): string[] => [
      'psql',
      '-h',
      hostName,
      '-p',
      String(pgPort),
      '-U',
      'postgres',
      '-XAtc',
      "select current_setting('cluster_name')",
    ];
    const env = { PGCONNECT_TIMEOUT: '20', PGSSLMODE: 'disable' };
    const hooked = await chain.hookRun(query(chain.host('pg')), { env });
    assert.equal(hooked.stdout, 'remote\n', hooked.stderr);
    assert.equal(hooked.code, 0);
    const [cmd, args] = inNetns(host.name, 'env', [
      ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
      ...query('127.0.0.1'),
    ]);
    const plain = await run(cmd, args);
    assert.equal(plain.stdout, 'local\n', plain.stderr);
  });

  it('hooked iperf3 reaches the published iperf3 server, not the local one on *:P', async function () {
    const [, iperf, , localIperf] = extra as [Program, Program, Program, Program];
    const r = await chain.hookRun(['iperf3', '-c', chain.host('iperf'), '-p', String(iperfPort), '-t', '1', '-J'], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, `${r.stdout}${r.stderr}`);
    const report = JSON.parse(r.stdout) as { end?: { sum_received?: { bytes?: number } } };
    assert.ok((report.end?.sum_received?.bytes ?? 0) > 0, r.stdout);
    await iperf.waitFor(/Accepted connection from/);
    assert.doesNotMatch(localIperf.stdout, /Accepted connection/, localIperf.stdout);
    // The redirector said, in one line, why the listener moved and what programs without the hook meet.
    await chain.redirector.waitFor(
      new RegExp(
        `port ${iperfPort} is held by iperf3 \\(pid \\d+, uid \\d+\\) on every local address: hooked apps reach ` +
          `${chain.host('iperf').replace(/\./g, '\\.')}:${iperfPort} through 127\\.\\d+\\.\\d+\\.\\d+:\\d+; a program without the hook`,
      ),
    );
  });

  it('blocking, non-blocking, TCP Fast Open and AF_INET6 connects from Python reach the real server, see port P as their peer, and are admitted by their claims', async function () {
    const script = `import selectors, socket, sys
name, port = sys.argv[1], int(sys.argv[2])
def show(tag, s):
    s.sendall(b'through the tunnel\\n')
    print(tag, s.makefile().readline().strip(), s.getpeername()[1], s.getsockname()[1], sep='|', flush=True)
show('blocking', socket.create_connection((name, port), timeout=20))
address = socket.gethostbyname(name)
s = socket.socket(); s.setblocking(False)
s.connect_ex((address, port))
sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_WRITE); sel.select(20)
assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
s.setblocking(True); show('non-blocking', s)
for tag, send in (('sendto', lambda s, m: s.sendto(m, socket.MSG_FASTOPEN, (name, port))), ('sendmsg', lambda s, m: s.sendmsg([m], [], socket.MSG_FASTOPEN, (name, port)))):
    s = socket.socket(); send(s, b'fast open by %s\\n' % tag.encode())
    print(tag, s.makefile().readline().strip(), s.getpeername()[1], s.getsockname()[1], sep='|', flush=True)
s = socket.socket(socket.AF_INET6); s.connect(('::ffff:' + address, port))
show('v4-mapped', s)`;
    const r = await chain.hookRun([PYTHON, '-c', script, chain.host('echo'), String(echoPort)]);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const expected: Array<[string, string]> = [
      ['blocking', 'THROUGH THE TUNNEL'],
      ['non-blocking', 'THROUGH THE TUNNEL'],
      ['sendto', 'FAST OPEN BY SENDTO'],
      ['sendmsg', 'FAST OPEN BY SENDMSG'],
      ['v4-mapped', 'THROUGH THE TUNNEL'],
    ];
    assert.equal(lines.length, expected.length, r.stdout);
    for (const [i, [tag, text]] of expected.entries()) {
      const [seen, reply, peerPort, ownPort] = lines[i]!.split('|');
      assert.equal(seen, tag);
      assert.equal(reply, text, r.stdout);
      assert.equal(Number(peerPort), echoPort, `getpeername() must answer the port the app asked for: ${r.stdout}`);
      await chain.redirector.waitFor(new RegExp(`admitted 127\\.0\\.0\\.1:${ownPort} to 127\\.[\\d.]+:\\d+ by claim`));
    }
  });

  it("Node.js (libuv's non-blocking connect) and Ruby reach the real server too, and see port P as their peer", async function () {
    const node = `const net = require('net');
const s = net.connect(${echoPort}, '${chain.host('echo')}', () => s.write('from node\\n'));
s.setEncoding('utf8').once('data', (d) => { console.log(d.trim(), s.remotePort); s.end(); });
s.on('error', (e) => { console.log('error', e.code); process.exitCode = 1; });`;
    const fromNode = await chain.hookRun([process.execPath, '-e', node]);
    assert.equal(fromNode.stdout, `FROM NODE ${echoPort}\n`, fromNode.stderr);
    const ruby = await chain.hookRun([
      'ruby',
      '-rsocket',
      '-e',
      's = TCPSocket.new(ARGV[0], ARGV[1].to_i); s.write("from ruby\\n"); puts "#{s.gets.strip} #{s.remote_address.ip_port}"',
      chain.host('echo'),
      String(echoPort),
    ]);
    assert.equal(ruby.stdout, `FROM RUBY ${echoPort}\n`, ruby.stderr);
  });

  it('a hooked process that never resolved the name (an exec\u2019d child given the address) still gets there', async function () {
    const resolved = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket, sys; print(socket.gethostbyname(sys.argv[1]))`,
      chain.host('echo'),
    ]);
    const address = resolved.stdout.trim();
    assert.match(address, /^127\.\d+\.\d+\.\d+$/, resolved.stderr);
    // Non-blocking, so nothing but the listener's whereabouts is asked before the connect.
    const script = `import selectors, socket, sys
s = socket.socket(); s.setblocking(False); s.connect_ex((sys.argv[1], int(sys.argv[2])))
sel = selectors.DefaultSelector(); sel.register(s, selectors.EVENT_WRITE); sel.select(20)
s.setblocking(True); s.sendall(b'numeric\\n'); print(s.makefile().readline().strip(), s.getpeername()[1])`;
    const r = await chain.hookRun([PYTHON, '-c', script, address, String(echoPort)]);
    assert.equal(r.stdout, `NUMERIC ${echoPort}\n`, r.stderr);
  });

  it('without the hook, PSEUDO:P is the local server: what the warning said', async function () {
    const resolved = await chain.hookRun([
      PYTHON,
      '-c',
      `import socket, sys; print(socket.gethostbyname(sys.argv[1]))`,
      chain.host('echo'),
    ]);
    const address = resolved.stdout.trim();
    const [cmd, args] = inNetns(host.name, PYTHON, [
      '-c',
      `import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20); print(s.makefile().readline().strip())`,
      address,
      String(echoPort),
    ]);
    const r = await run(cmd, args);
    assert.equal(r.stdout, 'local\n', r.stderr);
    await chain.redirector.waitFor(
      new RegExp(
        `port ${echoPort} is held by python3[.\\d]* \\(pid \\d+, uid \\d+\\) on every local address: hooked apps reach .* ` +
          `a program without the hook that connects to ${address.replace(/\./g, '\\.')}:${echoPort} reaches that program instead`,
      ),
    );
  });

  it('the DNS responder answers SERVFAIL for that name (a program without the hook would reach the local server), and underpass forward carries it', async function () {
    assert.ok(which('dig') !== null, "dig is missing: run 'npm run prerequisites'");
    const m = await chain.redirector.waitFor(/DNS responder for the zone on ([\d.]+):53/);
    const [dig, digArgs] = inNetns(host.name, 'dig', ['+tries=1', '+time=5', `@${m[1]!}`, chain.host('echo'), 'A']);
    const answer = await run(dig, digArgs);
    assert.match(answer.stdout, /status: SERVFAIL/, answer.stdout + answer.stderr);
    await chain.redirector.waitFor(
      new RegExp(
        `DNS: no address for ${chain.host('echo').replace(/\./g, '\\.')} to a program without the hook: port ${echoPort} of [\\d.]+ is held by another program`,
      ),
    );
    // iperf3 holds its publication's port on *:P as well: no address for that name either.
    const iperfAnswer = await run(...inNetns(host.name, 'dig', ['+short', `@${m[1]!}`, chain.host('iperf'), 'A']));
    assert.equal(iperfAnswer.stdout, '', iperfAnswer.stderr);

    const local = await freePort();
    const [node, forwardArgs] = inNetns(host.name, process.execPath, [
      UNDERPASS,
      'forward',
      String(local),
      `${chain.host('echo')}:${echoPort}`,
      '--ipc',
      chain.ipcPath,
    ]);
    const forward = new Program('forward', node, forwardArgs);
    extra.push(forward);
    await forward.waitFor(/forwarding 127\.0\.0\.1:\d+ to /);
    const [py, pyArgs] = inNetns(host.name, PYTHON, [
      '-c',
      `import socket, sys
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=20); s.sendall(b'forwarded\\n'); print(s.makefile().readline().strip())`,
      String(local),
    ]);
    const r = await run(py, pyArgs);
    assert.equal(r.stdout, 'FORWARDED\n', r.stderr + forward.stderr);
    forward.child.kill('SIGINT');
    assert.deepEqual(await forward.exited, { code: 0, signal: null });
  });
});
