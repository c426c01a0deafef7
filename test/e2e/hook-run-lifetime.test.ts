/**
 * Issue 12: hook-run never outlives its command and never leaves it behind. It passes SIGINT, SIGTERM,
 * SIGHUP and SIGQUIT on and exits with the command's status; `timeout` around a command that never ends
 * leaves no process (neither the command nor the sidecar, found by a /proc scan for a marker in their
 * command lines); the sidecar killed alone with SIGKILL takes the command with it; and a child the command
 * forks just before it exits is resumed, not killed or left suspended.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, HOOK_RUN_LAUNCHER, PYTHON, run, tmpDir } from '../harness';

/** Pids of the processes whose command line contains `marker` (zombies excluded); `argv0` also
 * requires the first argument to be that. */
function processesWith(marker: string, argv0?: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (argv0 !== undefined && cmdline.split('\0')[0] !== argv0) continue;
      if (cmdline.includes(marker) && stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z') {
        found.push(Number(entry));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}

/** Waits (up to `ms`) until `condition` holds; false if it never did. */
async function eventually(condition: () => boolean, ms = 10_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (condition()) return true;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return condition();
}

let markers = 0;
/** A `sleep` argument no other process has: 1000 seconds and a fraction unique to this test run. */
function marker(): string {
  return `1000.${process.pid}${markers++}`;
}

describe('hook-run and the lifetime of its command (issue 12)', function () {
  let chain: Chain;
  const dir = tmpDir('lifetime');

  before(async function () {
    chain = await new Chain([]).start();
  });

  after(async function () {
    await chain?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('timeout around a command that never ends leaves no process behind', async function () {
    const seconds = marker();
    const r = await run('timeout', ['3', HOOK_RUN_LAUNCHER, '--ipc', chain.ipcPath, '--', '/bin/sleep', seconds], {
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 124, r.stderr);
    assert.ok(
      await eventually(() => processesWith(seconds).length === 0),
      `left behind: ${processesWith(seconds).join(' ')}`,
    );
  });

  it('timeout -s KILL around a command that ignores SIGTERM leaves no process behind', async function () {
    const seconds = marker();
    const command = ['/bin/sh', '-c', `trap '' TERM; /bin/sleep ${seconds}; true`];
    const r = await run('timeout', ['-s', 'KILL', '3', HOOK_RUN_LAUNCHER, '--ipc', chain.ipcPath, '--', ...command], {
      timeoutMs: 30_000,
    });
    // timeout sends the signal to its whole process group, itself included.
    assert.ok(r.code === 137 || r.signal === 'SIGKILL', r.stderr);
    assert.ok(
      await eventually(() => processesWith(seconds).length === 0),
      `left behind: ${processesWith(seconds).join(' ')}`,
    );
  });

  it('timeout -k 2 3 around a command that ignores SIGTERM leaves nothing behind either', async function () {
    const seconds = marker();
    const r = await run(
      'timeout',
      [
        '-k',
        '2',
        '3',
        HOOK_RUN_LAUNCHER,
        '--ipc',
        chain.ipcPath,
        '--',
        '/bin/sh',
        '-c',
        `trap '' TERM; /bin/sleep ${seconds}; true`,
      ],
      { timeoutMs: 30_000 },
    );
    // timeout sends the signal to its whole process group, itself included.
    assert.ok(r.code === 137 || r.signal === 'SIGKILL', r.stderr);
    assert.ok(
      await eventually(() => processesWith(seconds).length === 0),
      `left behind: ${processesWith(seconds).join(' ')}`,
    );
  });

  it('the sidecar killed alone with SIGKILL takes its command with it', async function () {
    const seconds = marker();
    const child = spawn(
      HOOK_RUN_LAUNCHER,
      ['--ipc', chain.ipcPath, '--', '/bin/sh', '-c', `trap '' TERM; /bin/sleep ${seconds}; true`],
      {
        stdio: 'ignore',
      },
    );
    // The launcher execs the sidecar, so this pid is the sidecar's; its command is the shell.
    try {
      assert.ok(await eventually(() => processesWith(seconds, '/bin/sh').length === 1), 'the command did not start');
      process.kill(child.pid!, 'SIGKILL');
      assert.ok(
        await eventually(() => processesWith(seconds, '/bin/sh').length === 0),
        'the command outlived the sidecar',
      );
    } finally {
      // The shell's own child (sleep) lives on, as after any kill -9 of a shell: not ours to keep.
      for (const pid of processesWith(seconds)) process.kill(pid, 'SIGKILL');
    }
  });

  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'] as const) {
    it(`${signal} sent to hook-run reaches the command, and hook-run exits with the command's status`, async function () {
      const script = `import signal, sys, time
def on(signo, frame):
    print(signal.Signals(signo).name, flush=True)
    sys.exit(40)
signal.signal(signal.${signal}, on)
sys.stdout.write('ready\\n'); sys.stdout.flush()
time.sleep(1000)
sys.exit(1)`;
      const child = spawn(HOOK_RUN_LAUNCHER, ['--ipc', chain.ipcPath, '--', PYTHON, '-c', script], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      assert.ok(await eventually(() => stdout.includes('ready\n'), 20_000), stderr);
      child.kill(signal);
      const code = await exited;
      assert.equal(stdout, `ready\n${signal}\n`, stderr);
      assert.equal(code, 40, stderr);
    });
  }

  it('a child the command forks just before it exits runs on, neither killed nor left suspended', async function () {
    const done = path.join(dir, 'done');
    const r = await chain.hookRun(['/bin/sh', '-c', `(sleep 0.3; echo ran > ${done}) >/dev/null 2>&1 & exit 3`], {
      timeoutMs: 30_000,
    });
    assert.equal(r.code, 3, r.stderr);
    assert.ok(await eventually(() => fs.existsSync(done) && fs.readFileSync(done, 'utf8') === 'ran\n'), r.stderr);
  });
});
