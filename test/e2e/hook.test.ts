/**
 * Issue 3's "done when": the hook wherever an unmodified client may resolve and connect — shell children
 * and grandchildren, libpq (psql) against a real PostgreSQL, Node's libuv, Python threads, many connects
 * in one process, attach to and detach from a running process, reverse lookups — and the one-line notice
 * for a program it cannot serve. Every program is real and runs as its own process.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, HOOK_RUN, PYTHON, Program, freePort, run, tmpDir, which } from '../harness';

/** An echo service that upper-cases each line it reads (python's socketserver, one thread a client). */
function echoServer(port: number): Program {
  return new Program('echo', PYTHON, [
    '-c',
    `import socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile: self.wfile.write(line.upper())
socketserver.ThreadingTCPServer.allow_reuse_address=True
socketserver.ThreadingTCPServer.request_queue_size=128
socketserver.ThreadingTCPServer(('127.0.0.1', ${port}), H).serve_forever()`,
  ]);
}

/**
 * A server that numbers the connections it accepts and answers every line with its connection's number:
 * what a client reads says how many connections reached the real server before its own.
 */
function countingServer(port: number): Program {
  return new Program('counter', PYTHON, [
    '-c',
    `import socketserver, threading
lock = threading.Lock()
accepted = 0
class H(socketserver.StreamRequestHandler):
    def handle(self):
        global accepted
        with lock:
            accepted += 1
            number = accepted
        for line in self.rfile: self.wfile.write(b'%d\\n' % number)
socketserver.ThreadingTCPServer.allow_reuse_address=True
socketserver.ThreadingTCPServer(('127.0.0.1', ${port}), H).serve_forever()`,
  ]);
}

/** The bin directory of Debian's PostgreSQL server (initdb, postgres), or null. */
function postgresBin(): string | null {
  const base = '/usr/lib/postgresql';
  if (!fs.existsSync(base)) return null;
  const versions = fs
    .readdirSync(base)
    .filter((v) => fs.existsSync(path.join(base, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length === 0 ? null : path.join(base, versions[0]!, 'bin');
}

/** `command args` as the postgres user when we are root (the server refuses to run as root). */
function asPostgresUser(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

/** Waits until `text()` past `offset` matches `pattern`. */
async function waitForAfter(program: Program, offset: number, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(program.stdout.slice(offset))) {
    if (program.child.exitCode !== null || program.child.signalCode !== null)
      throw new Error(
        `${program.label} exited before printing ${pattern}:\n${program.stderr}${program.stdout.slice(offset)}`,
      );
    if (Date.now() > deadline)
      throw new Error(
        `${program.label} did not print ${pattern} within ${timeoutMs} ms:\n${program.stderr}${program.stdout.slice(offset)}`,
      );
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('the hook everywhere an app may call it', function () {
  let chain: Chain;
  let redisPort: number;
  let echoPort: number;
  let countPort: number;
  let deadPort: number;
  let pgPort: number;
  let pgDir: string;
  const extra: Program[] = [];

  before(async function () {
    redisPort = await freePort();
    echoPort = await freePort();
    countPort = await freePort();
    deadPort = await freePort(); // published, but nothing listens there: every tunnel to it is refused
    pgPort = await freePort();
    const pgBin = postgresBin();
    assert.ok(pgBin !== null, "PostgreSQL's server (initdb) is missing: run 'npm run prerequisites'");

    // A throw-away cluster with trust auth on 127.0.0.1, owned by the user the server runs as.
    pgDir = tmpDir('pg');
    const data = path.join(pgDir, 'data');
    if (process.getuid?.() === 0) fs.chmodSync(pgDir, 0o777);
    const [initdb, initArgs] = asPostgresUser(path.join(pgBin, 'initdb'), [
      '-D',
      data,
      '-U',
      'postgres',
      '--auth=trust',
      '--no-sync',
      '-E',
      'UTF8',
      '--locale=C',
    ]);
    const init = await run(initdb, initArgs, { cwd: pgDir });
    assert.equal(init.code, 0, `initdb failed:\n${init.stderr}${init.stdout}`);
    const [postgres, pgArgs] = asPostgresUser(path.join(pgBin, 'postgres'), [
      '-D',
      data,
      '-p',
      String(pgPort),
      '-k',
      pgDir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
    ]);
    extra.push(new Program('postgres', postgres, pgArgs, { cwd: pgDir }));
    extra.push(
      new Program('redis-server', 'redis-server', [
        '--port',
        String(redisPort),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
      ]),
    );
    extra.push(echoServer(echoPort));
    extra.push(countingServer(countPort));
    await extra[0]!.waitFor(/ready to accept connections/);
    await extra[1]!.waitFor(/Ready to accept connections/);
    chain = await new Chain([
      `redis=127.0.0.1:${redisPort}`,
      `echo=127.0.0.1:${echoPort}`,
      `count=127.0.0.1:${countPort}`,
      `dead=127.0.0.1:${deadPort}`,
      `pg=127.0.0.1:${pgPort}`,
    ]).start();
  });

  after(async function () {
    await chain?.stop();
    await Promise.all(extra.map((p) => p.stop()));
    if (pgDir) fs.rmSync(pgDir, { recursive: true, force: true });
  });

  it('a shell child and a grandchild in a pipeline reach the service', async function () {
    // Children are what this test is about, so the shells and redis-cli run as the user would run them.
    const ping = `redis-cli -h ${chain.host('redis')} -p ${redisPort} ping`;
    const child = await chain.hookRun(['sh', '-c', `${ping} | cat`]);
    assert.equal(child.stdout, 'PONG\n', child.stderr);
    assert.equal(child.stderr, '');
    assert.equal(child.code, 0);
    const grandchild = await chain.hookRun(['sh', '-c', `sh -c '${ping} | tr A-Z a-z' | cat; echo done`]);
    assert.equal(grandchild.stdout, 'pong\ndone\n', grandchild.stderr);
    assert.equal(grandchild.stderr, '');
    assert.equal(grandchild.code, 0);
  });

  it('a program that forks without exec: parent and child reach the service, one tunnel per connect (no double hook)', async function () {
    // The forked child inherits the parent's hooked memory and is then hooked again by the controller
    // (child gating): it must end up with exactly one working hook, so each connect opens exactly one
    // tunnel. The counting server numbers what reaches it: a second hook in the child would open a second
    // tunnel for one connect, and the real server would count one connection more.
    const script = `import os, socket
def ask(tag):
    s = socket.create_connection(('${chain.host('count')}', ${countPort}))
    s.sendall(b'hello\\n'); print(tag, s.makefile().readline().strip(), flush=True); s.close()
ask('parent-before')
pid = os.fork()
if pid == 0:
    ask('child'); os._exit(0)
os.waitpid(pid, 0)
ask('parent-after')`;
    const r = await chain.hookRun([PYTHON, '-c', script], { env: { UNDERPASS_HOOK_DEBUG: '1' } });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'parent-before 1\nchild 2\nparent-after 3\n', r.stderr);
    // One agent loaded into each of the two processes, no more (the controller's debug line per hook).
    const hooked = [...r.stderr.matchAll(/^hook-run: hooked process (\d+) /gm)].map((m) => m[1]);
    assert.equal(hooked.length, 2, r.stderr);
    assert.equal(new Set(hooked).size, 2, r.stderr);
    // And nothing else reached the server meanwhile: the next connection, unhooked and direct, is the 4th.
    const direct = await run(PYTHON, [
      '-c',
      `import socket
s = socket.create_connection(('127.0.0.1', ${countPort})); s.sendall(b'x\\n'); print(s.makefile().readline().strip())`,
    ]);
    assert.equal(direct.stdout, '4\n', direct.stderr);
  });

  it('a client that sends its first bytes with MSG_FASTOPEN (sendto, sendmsg) reaches the service; a refused tunnel fails that send', async function () {
    // TCP Fast Open connects inside sendto()/sendmsg(), without connect(): the hook must open the tunnel
    // there. The dead service shows it does: its tunnel is refused, so the send fails with ECONNREFUSED,
    // where an unhooked send would have connected to the redirector's listener and been reset later.
    const script = `import socket
def first(send):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    send(s)
    print(s.makefile('rb').readline().decode().strip(), flush=True); s.close()
first(lambda s: s.sendto(b'fast open by sendto\\n', socket.MSG_FASTOPEN, ('${chain.host('echo')}', ${echoPort})))
first(lambda s: s.sendmsg([b'fast open by ', b'sendmsg\\n'], [], socket.MSG_FASTOPEN, ('${chain.host('echo')}', ${echoPort})))
try:
    socket.socket().sendto(b'lost\\n', socket.MSG_FASTOPEN, ('${chain.host('dead')}', ${deadPort})); print('sent')
except ConnectionRefusedError: print('refused')`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'FAST OPEN BY SENDTO\nFAST OPEN BY SENDMSG\nrefused\n', r.stderr);
    // The refused send is the one thing said on stderr, in one line (issue 12).
    assert.match(r.stderr, /^hook-run: process \d+: dead's target \S+ refused the connection[^\n]*\n$/);
  });

  it("psql reaches a real PostgreSQL behind the proxy (libpq's non-blocking connect)", async function () {
    const r = await chain.hookRun(
      [
        'psql',
        '-h',
        chain.host('pg'),
        '-p',
        String(pgPort),
        '-U',
        'postgres',
        '-d',
        'postgres',
        '-X',
        '-A',
        '-t',
        '-c',
        'select 42',
        '-c',
        'select inet_server_port()',
      ],
      {
        env: { PGCONNECT_TIMEOUT: '20', PGSSLMODE: 'disable' },
      },
    );
    assert.equal(r.stderr, '');
    assert.equal(r.stdout, `42\n${pgPort}\n`);
    assert.equal(r.code, 0);
  });

  it("a Node.js client reaches the service (libuv's thread-pool getaddrinfo, non-blocking connect)", async function () {
    const script = `const net = require('net');
let peer = '';
const s = net.connect(${echoPort}, '${chain.host('echo')}', () => { peer = s.remoteAddress; s.end('from node\\n'); });
let data = '';
s.setEncoding('utf8').on('data', (d) => (data += d));
s.on('close', () => console.log(data.trim(), peer.startsWith('127.')));
s.on('error', (e) => { console.log('error', e.code); process.exitCode = 1; });`;
    const r = await chain.hookRun([process.execPath, '-e', script]);
    assert.equal(r.stdout, 'FROM NODE true\n', r.stderr);
    assert.equal(r.code, 0);
  });

  it('50 concurrent connects from Python threads all get their own bytes back', async function () {
    const script = `import socket, threading
N = 50
barrier = threading.Barrier(N)
results = [None] * N
def client(i):
    try:
        barrier.wait()
        s = socket.create_connection(('${chain.host('echo')}', ${echoPort}), timeout=30)
        s.sendall(b'thread %d of underpass\\n' % i)
        results[i] = s.makefile('rb').readline(); s.close()
    except Exception as e:
        results[i] = repr(e).encode()
threads = [threading.Thread(target=client, args=(i,)) for i in range(N)]
for t in threads: t.start()
for t in threads: t.join()
wrong = [(i, r) for i, r in enumerate(results) if r != b'THREAD %d OF UNDERPASS\\n' % i]
print('correct', N - len(wrong), wrong[:3])`;
    const r = await chain.hookRun([PYTHON, '-c', script], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'correct 50 []\n');
  });

  it('200 sequential connects in one process all get their own bytes back', async function () {
    const script = `import socket
ok = 0
for i in range(200):
    s = socket.create_connection(('${chain.host('echo')}', ${echoPort}), timeout=30)
    s.sendall(b'connect %d\\n' % i)
    if s.makefile('rb').readline() == b'CONNECT %d\\n' % i: ok += 1
    s.close()
print('correct', ok)`;
    const r = await chain.hookRun([PYTHON, '-c', script], { timeoutMs: 90_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'correct 200\n');
  });

  it('attach to a running Python loop: it begins to reach the service, and after detach goes back to plain lookups', async function () {
    // Started plainly, not under hook-run: until hooked, the pseudo name is unknown to the real resolver.
    const loop = new Program('loop', PYTHON, [
      '-u',
      '-c',
      `import socket, time
while True:
    try:
        s = socket.create_connection(('${chain.host('echo')}', ${echoPort}), timeout=10)
        s.sendall(b'attached\\n'); print('reply', s.makefile().readline().strip()); s.close()
    except socket.gaierror as e:
        print('noname' if e.errno == socket.EAI_NONAME else 'gaierror %d' % e.errno)
    except OSError as e:
        print('oserror', e)
    time.sleep(0.1)`,
    ]);
    extra.push(loop);
    await loop.waitFor(/^noname$/m, 20_000, 'stdout');

    const hook = new Program('hook-run --pid', process.execPath, [
      HOOK_RUN,
      '--ipc',
      chain.ipcPath,
      '--pid',
      String(loop.child.pid),
    ]);
    try {
      await hook.waitFor(/hooked process \d+/, 20_000, 'stderr');
      const attachedAt = loop.stdout.length;
      await waitForAfter(loop, attachedAt, /^reply ATTACHED$/m);
      hook.child.kill('SIGINT');
      const exit = await hook.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, hook.stderr);
      assert.match(hook.stderr, /hook removed from process \d+/);
      const detachedAt = loop.stdout.length;
      await waitForAfter(loop, detachedAt, /^noname\nnoname$/m);
      assert.equal(loop.child.exitCode, null, 'the loop keeps running after detach');
      assert.equal(loop.child.signalCode, null);
      assert.doesNotMatch(loop.stdout, /oserror|gaierror/, loop.stdout);
    } finally {
      await hook.stop();
      await loop.stop();
    }
  });

  it('a process that exits while attached ends hook-run --pid cleanly', async function () {
    const sleeper = new Program('sleeper', PYTHON, ['-u', '-c', "import time\nprint('up')\ntime.sleep(600)"]);
    extra.push(sleeper);
    await sleeper.waitFor(/up/);
    const hook = new Program('hook-run --pid', process.execPath, [
      HOOK_RUN,
      '--ipc',
      chain.ipcPath,
      '--pid',
      String(sleeper.child.pid),
    ]);
    try {
      await hook.waitFor(/hooked process \d+/, 20_000, 'stderr');
      await sleeper.stop('SIGKILL');
      const exit = await hook.exited;
      assert.deepEqual(exit, { code: 0, signal: null }, hook.stderr);
      assert.match(hook.stderr, new RegExp(`process ${sleeper.child.pid} exited`));
    } finally {
      await hook.stop();
    }
  });

  it('a reverse lookup of the pseudo address answers the pseudo name (gethostbyaddr, getnameinfo)', async function () {
    const host = chain.host('echo');
    const script = `import socket
address = socket.gethostbyname('${host}')
print(socket.gethostbyaddr(address)[0])
print(socket.getnameinfo((address, ${echoPort}), 0)[0])
print(socket.getnameinfo((address, ${echoPort}), socket.NI_NUMERICHOST)[0] == address)`;
    const r = await chain.hookRun([PYTHON, '-c', script]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${host}\n${host}\nTrue\n`);
  });

  describe('programs the hook cannot serve', function () {
    let dir: string;
    before(function () {
      dir = tmpDir('static');
    });
    after(function () {
      fs.rmSync(dir, { recursive: true, force: true });
    });

    it('a static binary: one line saying so, and the program still runs with its own status', async function () {
      const gcc = which('gcc') ?? which('cc');
      assert.ok(gcc !== null, "a C compiler is needed to build the static test program: run 'npm run prerequisites'");
      fs.writeFileSync(
        path.join(dir, 'static.c'),
        '#include <stdio.h>\nint main(int argc, char **argv) { printf("static %s ran\\n", argv[1]); return 3; }\n',
      );
      const cc = await run(gcc, ['-static', '-O0', '-o', path.join(dir, 'static'), path.join(dir, 'static.c')]);
      assert.equal(cc.code, 0, cc.stderr);
      const r = await chain.hookRun([path.join(dir, 'static'), 'alone']);
      assert.equal(r.stdout, 'static alone ran\n');
      assert.equal(r.code, 3);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(
        lines[0]!,
        // The rest says how it still reaches pseudo names (hook/unhookable.py): the redirector's DNS responder.
        /^hook-run: static \(process \d+\) is statically linked: its lookups and connects cannot be hooked; [^\n]*it runs unhooked$/,
      );

      // As the child of a hooked shell, too.
      const child = await chain.hookRun(['sh', '-c', `${path.join(dir, 'static')} child; echo status $?`]);
      assert.equal(child.stdout, 'static child ran\nstatus 3\n');
      assert.equal(child.code, 0);
      assert.match(child.stderr.trim(), /^hook-run: static \(process \d+\) is statically linked: [^\n]*$/);
    });

    it('a Go program: one line saying so, and the program still runs', async function () {
      const go = which('go');
      if (go === null) this.skip();
      fs.mkdirSync(path.join(dir, 'gohello'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'gohello', 'go.mod'), 'module gohello\n\ngo 1.21\n');
      // net makes a cgo build link libc dynamically: the hook must still see that Go resolves by itself.
      fs.writeFileSync(
        path.join(dir, 'gohello', 'main.go'),
        'package main\n\nimport (\n\t"fmt"\n\t"net"\n)\n\nfunc main() {\n\t_, err := net.LookupHost("localhost")\n\tfmt.Println("go ran", err == nil)\n}\n',
      );
      const build = await run(go!, ['build', '-o', path.join(dir, 'gohello', 'gohello'), '.'], {
        cwd: path.join(dir, 'gohello'),
        env: { GOTOOLCHAIN: 'local', GOFLAGS: '' },
        timeoutMs: 120_000,
      });
      assert.equal(build.code, 0, build.stderr);
      const r = await chain.hookRun([path.join(dir, 'gohello', 'gohello')]);
      assert.equal(r.stdout, 'go ran true\n');
      assert.equal(r.code, 0);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, r.stderr);
      assert.match(
        lines[0]!,
        /^hook-run: (process \d+: gohello is a Go program|gohello \(process \d+\) is statically linked)[^\n]*runs unhooked$/,
      );
    });
  });

  it('a missing redirector: one line saying what to do, and a non-zero status', async function () {
    const missing = path.join(chain.dir, 'no-such.sock');
    const r = await run(process.execPath, [HOOK_RUN, '--ipc', missing, '--', PYTHON, '-c', "print('ran')"]);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '', 'the command does not run unhooked');
    assert.match(
      r.stderr,
      new RegExp(
        `^hook-run: no redirector at ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: start one with [^\n]*\n$`,
      ),
    );
  });
});
