/**
 * Issue 12's "done when" for OpenSSH: a real sshd on loopback, published by the proxy, and the unmodified
 * clients through hook-run: `ssh` running a remote command ten times in a row (each run must exit: ssh
 * closes every inherited descriptor first thing), `scp` of a 20 MB file (sha256 equal on the far side),
 * and `git clone` over ssh (git forks and execs ssh, which the hook must follow).
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Chain, Program, freePort, run, tmpDir, which } from '../harness';

/** sshd -D -e prints nothing at LogLevel ERROR when ready: its banner on the port says so. */
async function waitForBanner(sshd: Program, port: number): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (sshd.child.exitCode !== null) throw new Error(`sshd exited: ${sshd.stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1');
      socket.once('data', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port}: ${sshd.stderr}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function sha256(file: string): string {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

describe('OpenSSH clients through the hook (issue 12)', function () {
  const dir = tmpDir('ssh');
  const user = os.userInfo().username;
  const key = path.join(dir, 'id_ed25519');
  let sshd: Program;
  let chain: Chain;
  let port = 0;
  let host = '';
  /** The options every client run shares: our key only, no known_hosts, no prompts. */
  let options: string[] = [];

  before(async function () {
    const sshdPath = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => fs.existsSync(p));
    assert.ok(sshdPath !== undefined, "sshd is needed (Debian: openssh-server): run 'npm run prerequisites'");
    assert.ok(which('ssh') !== null && which('scp') !== null, "ssh and scp are needed: run 'npm run prerequisites'");
    assert.ok(which('git') !== null, "git is needed: run 'npm run prerequisites'");
    if (process.getuid?.() === 0) fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const hostKey = path.join(dir, 'host_ed25519');
    for (const file of [hostKey, key]) {
      const r = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', file]);
      assert.equal(r.code, 0, r.stderr);
    }
    fs.copyFileSync(`${key}.pub`, path.join(dir, 'authorized_keys'));
    port = await freePort();
    const config = path.join(dir, 'sshd_config');
    fs.writeFileSync(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${path.join(dir, 'authorized_keys')}`,
        `PidFile ${path.join(dir, 'sshd.pid')}`,
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        // scp speaks SFTP since OpenSSH 9.
        'Subsystem sftp internal-sftp',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    sshd = new Program('sshd', sshdPath, ['-D', '-e', '-f', config]);
    await waitForBanner(sshd, port);
    chain = await new Chain([`sshd=127.0.0.1:${port}`]).start();
    host = chain.host('sshd');
    options = [
      '-F',
      '/dev/null',
      '-i',
      key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'LogLevel=ERROR',
    ];
  });

  after(async function () {
    await chain?.stop();
    await sshd?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('ssh runs a remote command ten times in a row, exiting each time with its status', async function () {
    for (let i = 0; i < 10; i++) {
      const r = await chain.hookRun(
        ['ssh', ...options, '-p', String(port), `${user}@${host}`, `echo hi-${i}; exit 7`],
        {
          timeoutMs: 60_000,
        },
      );
      assert.equal(r.stdout, `hi-${i}\n`, r.stderr);
      assert.equal(r.code, 7, r.stderr);
    }
  });

  it('scp copies a 20 MB file whose sha256 is equal on the far side', async function () {
    const source = path.join(dir, 'payload.bin');
    const target = path.join(dir, 'copied.bin');
    fs.writeFileSync(source, randomBytes(20 * 1024 * 1024));
    const r = await chain.hookRun(['scp', ...options, '-P', String(port), source, `${user}@${host}:${target}`], {
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(target), sha256(source));
  });

  it('git clone over ssh gets the repository with its commit', async function () {
    const bare = path.join(dir, 'repo.git');
    const work = path.join(dir, 'work');
    const clone = path.join(dir, 'clone');
    const git = (args: string[], cwd = dir): ReturnType<typeof run> =>
      run('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.org', ...args], { cwd });
    assert.equal((await git(['init', '-q', '--bare', bare])).code, 0);
    assert.equal((await git(['init', '-q', work])).code, 0);
    fs.writeFileSync(path.join(work, 'README'), 'through the tunnel\n');
    assert.equal((await git(['add', 'README'], work)).code, 0);
    assert.equal((await git(['commit', '-q', '-m', 'first'], work)).code, 0);
    assert.equal((await git(['push', '-q', bare, 'HEAD:refs/heads/main'], work)).code, 0);
    const sshCommand = ['ssh', ...options].join(' ');
    const r = await chain.hookRun(['git', 'clone', '-q', '-b', 'main', `ssh://${user}@${host}:${port}${bare}`, clone], {
      env: { GIT_SSH_COMMAND: sshCommand },
      timeoutMs: 120_000,
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(fs.readFileSync(path.join(clone, 'README'), 'utf8'), 'through the tunnel\n');
    const log = await git(['log', '--format=%s'], clone);
    assert.equal(log.stdout, 'first\n');
  });
});
