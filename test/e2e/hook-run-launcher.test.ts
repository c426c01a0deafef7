/**
 * Issue 5's start-up work: hook-run as npm installs it is the shell launcher bin/hook-run, which execs
 * the sidecar without starting Node, and the sidecar starts a command parked at its entry point so that
 * Frida attaches once (hook/parking.py). Both must be invisible: the same answers and messages as
 * `node bin/hook-run.js`, the same stdio and exit status as the stub's exec gating they shortcut, Node
 * still chosen whenever a Node `frida` package could load, and a sidecar that dies while its command is
 * parked must leave nothing running unhooked.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  Chain,
  HOOK_RUN,
  HOOK_RUN_LAUNCHER,
  PYTHON,
  Program,
  ROOT,
  lineEchoServer,
  freePort,
  run,
  tmpDir,
} from '../harness';

/** Both entries with the same arguments and environment: code, stdout and stderr. */
async function bothEntries(args: string[], env: NodeJS.ProcessEnv = {}): Promise<[string, string]> {
  const launcher = await run(HOOK_RUN_LAUNCHER, args, { env });
  const node = await run(process.execPath, [HOOK_RUN, ...args], { env });
  const show = (r: { code: number | null; stdout: string; stderr: string }): string =>
    `status ${r.code}\nstdout ${r.stdout}\nstderr ${r.stderr}`;
  return [show(launcher), show(node)];
}

describe('hook-run as installed: the launcher and the parked start', function () {
  let chain: Chain;
  let echo: Program;
  let echoPort: number;
  let dir: string;

  before(async function () {
    echoPort = await freePort();
    echo = lineEchoServer(echoPort, { upper: true });
    chain = await new Chain([`echo=127.0.0.1:${echoPort}`]).start();
    dir = tmpDir('launcher');
  });

  after(async function () {
    await chain?.stop();
    await echo?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers every command line it hands to Node exactly as `node bin/hook-run.js` does', async function () {
    const noRedirector = path.join(dir, 'xdg');
    const cases: Array<[string[], NodeJS.ProcessEnv]> = [
      [['--help'], {}],
      [[], {}],
      [['--bogus', '--', 'true'], {}],
      [['--ipc'], {}],
      [['--ipc', '', '--', 'true'], {}],
      [['--pid', 'abc'], {}],
      [['--pid', '0'], {}],
      [['--pid', '12', '--', 'true'], {}],
      [['--ipc', chain.ipcPath, 'stray', '--', 'true'], {}],
      // The default endpoint, computed by the launcher, or left to Node where path.join would normalise.
      [['--', 'true'], { XDG_RUNTIME_DIR: noRedirector }],
      [['--', 'true'], { XDG_RUNTIME_DIR: `${noRedirector}/` }],
      [['--', 'true'], { XDG_RUNTIME_DIR: '', TMPDIR: `${dir}/` }],
      [['--', 'true'], { XDG_RUNTIME_DIR: '', TMPDIR: '', TMP: dir }],
      [['--ipc', path.join(dir, 'none.sock'), '--pid', '999999999'], {}],
    ];
    for (const [args, env] of cases) {
      const [launcher, node] = await bothEntries(args, env);
      assert.equal(launcher, node, `hook-run ${args.join(' ')} with ${JSON.stringify(env)}`);
    }
  });

  for (const [label, env] of [
    ['parked at its entry point', {}],
    ["through the stub's exec gating (UNDERPASS_HOOK_PARKING=0)", { UNDERPASS_HOOK_PARKING: '0' }],
  ] as const) {
    it(`passes stdin, stdout, stderr and the exit status through, started ${label}`, async function () {
      const r = await chain.hookRun(['sh', '-c', 'read line; echo "got $line"; echo err >&2; exit 3'], {
        input: 'hello\n',
        env,
      });
      assert.deepEqual([r.code, r.stdout, r.stderr], [3, 'got hello\n', 'err\n']);
      const killed = await chain.hookRun(['sh', '-c', 'kill -TERM $$'], { env });
      assert.equal(killed.code, 128 + 15, killed.stderr);
    });

    it(`hooks the command and its grandchildren, started ${label}`, async function () {
      const client = `import socket; s = socket.create_connection(('${chain.host('echo')}', ${echoPort})); s.sendall(b'through\\n'); print(s.makefile().readline().strip())`;
      const r = await chain.hookRun([PYTHON, '-c', client], { env });
      assert.deepEqual([r.code, r.stdout], [0, 'THROUGH\n'], r.stderr);
      const piped = await chain.hookRun(['sh', '-c', `${PYTHON} -c "${client.replace(/"/g, '\\"')}" | cat`], { env });
      assert.deepEqual([piped.code, piped.stdout], [0, 'THROUGH\n'], piped.stderr);
    });
  }

  it('defers to Node when a Node `frida` package is in reach, unless told to use the sidecar', async function () {
    // A stand-in package on NODE_PATH: loading it leaves a mark and fails, so Node falls back to the sidecar.
    const modules = path.join(dir, 'node-path');
    fs.mkdirSync(path.join(modules, 'frida'), { recursive: true });
    fs.writeFileSync(
      path.join(modules, 'frida', 'index.js'),
      "require('fs').writeFileSync(process.env.FRIDA_MARK, 'loaded'); throw new Error('stand-in');\n",
    );
    const mark = path.join(dir, 'mark');
    const env = { NODE_PATH: modules, FRIDA_MARK: mark };
    const r = await chain.hookRun(['true'], { env });
    assert.equal(r.code, 0, r.stderr);
    assert.ok(fs.existsSync(mark), 'Node was asked first');
    fs.rmSync(mark);
    const forced = await chain.hookRun(['true'], { env: { ...env, UNDERPASS_HOOK_CONTROLLER: 'sidecar' } });
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok(!fs.existsSync(mark), 'UNDERPASS_HOOK_CONTROLLER=sidecar skips Node');
  });

  it('hooks a running process with --pid and removes the hook on Ctrl-C', async function () {
    const sleeper = new Program('sleeper', PYTHON, ['-u', '-c', "import time\nprint('up')\ntime.sleep(600)"]);
    await sleeper.waitFor(/up/);
    const hook = new Program('launcher --pid', HOOK_RUN_LAUNCHER, [
      '--ipc',
      chain.ipcPath,
      '--pid',
      String(sleeper.child.pid),
    ]);
    try {
      await hook.waitFor(/hooked process \d+/, 20_000, 'stderr');
      hook.child.kill('SIGINT');
      assert.deepEqual(await hook.exited, { code: 0, signal: null }, hook.stderr);
      assert.match(hook.stderr, /hook removed from process \d+/);
    } finally {
      await hook.stop();
      await sleeper.stop();
    }
  });

  it('a sidecar that dies while its command is parked leaves it neither parked nor running unhooked', async function () {
    const supported = await run(PYTHON, [
      '-c',
      `import sys; sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'hook'))}); import parking; print(parking.supported())`,
    ]);
    if (supported.stdout.trim() !== 'True') this.skip();
    const mark = path.join(dir, 'ran-unhooked');
    // Parks `sh -c 'touch MARK'` as the sidecar would, then dies before the agent is in and the command released.
    const r = await run(PYTHON, [
      '-c',
      `import os, sys
sys.path.insert(0, ${JSON.stringify(path.join(ROOT, 'hook'))})
import launch, parking
gate_read, gate_write = os.pipe()
pid = os.posix_spawn('/bin/sh', ['sh', '-c', launch.STUB, '/bin/sh', '-c', 'touch ${mark}'], os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, gate_read, 3)])
os.close(gate_read)
parking.trace_before_exec(pid)
os.write(gate_write, b'go\\n')
parking.park_after_exec(pid, lambda pid: False)
print(pid, flush=True)
os._exit(0)`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const pid = Number(r.stdout.trim());
    assert.ok(pid > 0, r.stdout);
    const gone = (): boolean => {
      try {
        return fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
      } catch {
        return true;
      }
    };
    const deadline = Date.now() + 5000;
    while (!gone() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(gone(), `the parked process ${pid} is still there`);
    assert.ok(!fs.existsSync(mark), 'the parked command never ran');
  });
});
