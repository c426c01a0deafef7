/**
 * Issue 12: a hooked program that closes every inherited descriptor (OpenSSH's closefrom() in main,
 * Python's os.closerange, close_range(2) as a libc call or a raw system call, a plain close() loop) still
 * exits, its own descriptors are really closed, and the hook still works after the sweep (a child it
 * starts is hooked and reaches a publication). Without the agent's descriptor guard each of these hangs
 * in exit for ever: the run's timeout is what fails the test then.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { Chain, PYTHON, Program, freePort, lineEchoServer, run, tmpDir, which } from '../harness';

/** Opens a descriptor of its own, sweeps with MODE, then says whether its descriptor is closed. */
const SWEEPER = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main (int argc, char ** argv)
{
  const char * mode = argc > 1 ? argv[1] : "";
  int own = open ("/dev/null", O_RDONLY);
  int fd;
  if (strcmp (mode, "closefrom") == 0)
    closefrom (3);
  else if (strcmp (mode, "close_range") == 0)
    close_range (3, ~0U, 0);
  else if (strcmp (mode, "syscall") == 0)
    syscall (SYS_close_range, 3, ~0U, 0);
  else if (strcmp (mode, "loop") == 0)
    for (fd = 3; fd < 65536; fd++)
      close (fd);
  else
    return 2;
  printf ("%s: own descriptor %s\\n", mode, fcntl (own, F_GETFD) == -1 && errno == EBADF ? "closed" : "OPEN");
  return 0;
}
`;

describe('a hooked program that closes every descriptor (issue 12)', function () {
  let chain: Chain;
  let echo: Program;
  let port = 0;
  let sweeper = '';
  const dir = tmpDir('sweep');

  before(async function () {
    const gcc = which('gcc') ?? which('cc');
    assert.ok(gcc !== null, "a C compiler is needed to build the sweeping program: run 'npm run prerequisites'");
    fs.writeFileSync(path.join(dir, 'sweep.c'), SWEEPER);
    sweeper = path.join(dir, 'sweep');
    const cc = await run(gcc, ['-O0', '-o', sweeper, path.join(dir, 'sweep.c')]);
    assert.equal(cc.code, 0, cc.stderr);
    port = await freePort();
    echo = lineEchoServer(port);
    chain = await new Chain([`echo=127.0.0.1:${port}`]).start();
  });

  after(async function () {
    await chain?.stop();
    await echo?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const mode of ['closefrom', 'close_range', 'syscall', 'loop']) {
    it(`${mode}: the program exits with its status, its own descriptor closed`, async function () {
      const r = await chain.hookRun([sweeper, mode], { timeoutMs: 30_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${mode}: own descriptor closed\n`, r.stderr);
    });
  }

  it('ssh -V (closefrom first thing in main) exits', async function () {
    const ssh = which('ssh');
    assert.ok(ssh !== null, "ssh is needed: run 'npm run prerequisites'");
    const r = await chain.hookRun([ssh, '-V'], { timeoutMs: 30_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^OpenSSH/m);
  });

  it("a forking shell script (pyenv's) whose children reuse Frida's old descriptor numbers for pipes exits", async function () {
    // In a forked child the guard's table is its parent's, and a number Frida gave up there came back as
    // a command substitution's pipe: skipping its close left the reader waiting (pyenv's shims hung).
    const pyenv = which('pyenv');
    if (pyenv === null) this.skip();
    const r = await chain.hookRun([pyenv, '--version'], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^pyenv \d/);
  });

  it('after os.closerange, a forked child and an exec child are still hooked and reach the service', async function () {
    const host = chain.host('echo');
    const script = `
import os, socket, subprocess, sys
os.closerange(3, 65536)
def ask(word):
    s = socket.create_connection(('${host}', ${port}), timeout=20)
    s.sendall(word.encode() + b'\\n')
    print(s.makefile().readline().strip(), flush=True)
    s.close()
ask('parent')
pid = os.fork()
if pid == 0:
    os.closerange(3, 65536)
    ask('forked')
    os._exit(0)
os.waitpid(pid, 0)
subprocess.run([sys.executable, '-c', "import os, socket; os.closerange(3, 65536); s = socket.create_connection(('${host}', ${port}), timeout=20); s.sendall(b'exec\\\\n'); print(s.makefile().readline().strip())"], check=True)
`;
    const r = await chain.hookRun([PYTHON, '-c', script], { timeoutMs: 60_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'parent\nforked\nexec\n', r.stderr);
  });
});
