/**
 * Issue 3/5: `hook-run --pid` removed with Ctrl-C while a thread of the hooked process is blocked inside
 * a hooked call. The native gates (hook/agent/gates.ts) stay on that thread's stack while the original
 * runs; an earlier fast path freed them on detach and the thread returned into unmapped code (SIGSEGV).
 * Here the call returns after the detach, and the process must keep running: for an ordinary connect
 * (the gate's own path) and for a pseudo connect waiting for its tunnel (the gate's JS slow path).
 *
 * Calls are held blocked by a listener whose accept queue is full: the kernel drops further SYNs until
 * the listener accepts again, so a blocking connect to it waits, deterministically, for as long as the
 * test wants (bounded by SO_SNDTIMEO, or by the listener starting to accept on SIGUSR1).
 */
import assert from 'node:assert/strict';
import { Chain, HOOK_RUN, PYTHON, Program, freePort } from '../harness';

/** Python: a listener on `port` whose accept queue is full; SIGUSR1 makes it accept from then on. */
const FULL_LISTENER = `import signal, socket, sys, threading
server = socket.socket(); server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(('127.0.0.1', int(sys.argv[1]))); server.listen(0)
fillers = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(server.getsockname()); fillers.append(c)
accepted = []
def accept_forever():
    while True: accepted.append(server.accept()[0])
signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=accept_forever, daemon=True).start())
print('full', server.getsockname()[1], flush=True)
while True: signal.pause()`;

/** Waits until `program`'s stdout past `offset` matches `pattern`. */
async function stdoutAfter(program: Program, offset: number, pattern: RegExp, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tail = (): string => `${program.stderr}${program.stdout.slice(offset).split('\n').slice(-12).join('\n')}`;
  while (!pattern.test(program.stdout.slice(offset))) {
    if (program.child.exitCode !== null || program.child.signalCode !== null) {
      throw new Error(
        `${program.label} ended (${program.child.exitCode ?? program.child.signalCode}) before printing ${pattern}:\n${tail()}`,
      );
    }
    if (Date.now() > deadline)
      throw new Error(`${program.label} did not print ${pattern} within ${timeoutMs} ms:\n${tail()}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

function assertRunning(program: Program): void {
  assert.equal(
    program.child.signalCode,
    null,
    `${program.label} was killed by ${program.child.signalCode}:\n${program.stderr}`,
  );
  assert.equal(program.child.exitCode, null, `${program.label} exited ${program.child.exitCode}:\n${program.stderr}`);
}

describe('detach while a thread is blocked inside a hooked call', function () {
  let chain: Chain;
  let stalled: Program;
  let stalledPort: number;
  const programs: Program[] = [];

  before(async function () {
    stalledPort = await freePort();
    stalled = new Program('full listener', PYTHON, ['-u', '-c', FULL_LISTENER, String(stalledPort)]);
    await stalled.waitFor(/^full \d+$/m);
    chain = await new Chain([`stalled=127.0.0.1:${stalledPort}`]).start();
  });

  after(async function () {
    await Promise.all(programs.map((p) => p.stop('SIGKILL')));
    await chain?.stop();
    await stalled?.stop('SIGKILL');
  });

  it('an ordinary connect in progress returns after the detach, and the process keeps running', async function () {
    // A worker thread connects to its own full listener over and over, each connect held for 4 s by
    // SO_SNDTIMEO (then it fails with EINPROGRESS); the main thread ticks.
    const target = new Program('blocked connect', PYTHON, [
      '-u',
      '-c',
      `import socket, struct, threading, time
server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen(0)
fillers = []
for _ in range(3):
    c = socket.socket(); c.setblocking(False); c.connect_ex(server.getsockname()); fillers.append(c)
def worker():
    n = 0
    while True:
        n += 1
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack('ll', 4, 0))
        print('connect %d start' % n)
        try:
            s.connect(server.getsockname()); print('connect %d returned ok' % n)
        except OSError as e:
            print('connect %d returned %d' % (n, e.errno))
        s.close()
threading.Thread(target=worker, daemon=True).start()
while True:
    time.sleep(0.2); print('tick')`,
    ]);
    programs.push(target);
    await target.waitFor(/^connect 1 start$/m, 20_000, 'stdout');

    const hook = new Program('hook-run --pid', process.execPath, [
      HOOK_RUN,
      '--ipc',
      chain.ipcPath,
      '--pid',
      String(target.child.pid),
    ]);
    programs.push(hook);
    await hook.waitFor(/hooked process \d+/, 20_000, 'stderr');
    // A connect that starts now enters the gate; half a second in, it is blocked inside the original.
    const hookedAt = target.stdout.length;
    await stdoutAfter(target, hookedAt, /^connect (\d+) start$/m, 10_000);
    const n = Number(/^connect (\d+) start$/m.exec(target.stdout.slice(hookedAt))![1]);
    await new Promise((r) => setTimeout(r, 500));
    assert.doesNotMatch(
      target.stdout.slice(hookedAt),
      new RegExp(`^connect ${n} returned`, 'm'),
      'the connect is still in progress when the hook is removed',
    );

    hook.child.kill('SIGINT');
    const exit = await hook.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, hook.stderr);
    assert.match(hook.stderr, /hook removed from process \d+/);

    await stdoutAfter(target, hookedAt, new RegExp(`^connect ${n} returned 115$`, 'm'), 10_000);
    const returnedAt = target.stdout.length;
    await stdoutAfter(target, returnedAt, /^tick\ntick\ntick$/m);
    assertRunning(target);
  });

  it('a pseudo connect waiting for its tunnel completes after the detach, and the process keeps running', async function () {
    // Resolves and connects in a loop; until hooked (and again after the detach) the pseudo name is unknown.
    const host = chain.host('stalled');
    const app = new Program('pseudo connect', PYTHON, [
      '-u',
      '-c',
      `import socket, time
while True:
    try:
        address = socket.getaddrinfo('${host}', ${stalledPort}, socket.AF_INET, socket.SOCK_STREAM)[0][4]
    except socket.gaierror:
        print('noname'); time.sleep(0.1); continue
    s = socket.socket()
    print('connecting')
    try:
        s.connect(address); print('connected')
    except OSError as e:
        print('connect failed %d' % e.errno)
    s.close()
    time.sleep(0.1)`,
    ]);
    programs.push(app);
    await app.waitFor(/^noname$/m, 20_000, 'stdout');
    // Unhooked, the app prints only 'noname': its first 'connecting' from here on is a hooked connect,
    // which may come before this test has even read hook-run's 'hooked process' line.
    const hookedAt = app.stdout.length;

    const hook = new Program('hook-run --pid', process.execPath, [
      HOOK_RUN,
      '--ipc',
      chain.ipcPath,
      '--pid',
      String(app.child.pid),
    ]);
    programs.push(hook);
    await hook.waitFor(/hooked process \d+/, 20_000, 'stderr');
    // The blocking connect asks the redirector, which waits for the proxy, whose connect to the full
    // listener waits: the app's thread sits in the JS slow path, inside the gate.
    await stdoutAfter(app, hookedAt, /^connecting$/m, 10_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.doesNotMatch(
      app.stdout.slice(hookedAt),
      /^connected$|^connect failed/m,
      'the connect is still waiting for its tunnel',
    );

    hook.child.kill('SIGINT');
    // The hook is reverted at once; its removal completes when the blocked call has left it.
    await new Promise((r) => setTimeout(r, 300));
    stalled.child.kill('SIGUSR1');
    await stdoutAfter(app, hookedAt, /^connected$/m, 15_000);
    const exit = await hook.exited;
    assert.deepEqual(exit, { code: 0, signal: null }, hook.stderr);
    assert.match(hook.stderr, /hook removed from process \d+/);

    const connectedAt = app.stdout.length;
    await stdoutAfter(app, connectedAt, /^noname\nnoname$/m);
    assertRunning(app);
  });
});
