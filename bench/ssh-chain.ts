/**
 * The OpenSSH reference chain, the same shape as ours: one sshd (the "tunnel server") on a free loopback
 * port with its own host key and one authorized key, both generated into a temp dir; `ssh -N -R` from the
 * service side (the "service proxy": sshd listens on RPORT and hands connections to it, and it connects to
 * the target) and `ssh -N -L` from the client side (the "redirector": it listens on LPORT and carries
 * each connection to sshd, which connects to RPORT). A client that connects to LPORT therefore crosses
 * two encrypted SSH sessions and one sshd, as a tunneled connection crosses two TLS sessions and one
 * tunnel server. Ciphers are OpenSSH's defaults; the one negotiated is reported.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, tmpDir } from '../cli/chain';
import { exec, onCleanup, Proc } from './proc';

export class SshChain {
  private readonly dir = tmpDir('bench-ssh');
  private sshd: Proc | null = null;
  private service: Proc | null = null;
  private client: Proc | null = null;
  /** Where a client connects to cross the chain. */
  localPort = 0;
  /** The cipher the two sessions negotiated (ssh -v's `kex: server->client cipher`). */
  cipher = '';

  constructor(private readonly target: { host: string; port: number }) {
    onCleanup(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  async start(): Promise<this> {
    const sshdPath = ['/usr/sbin/sshd', '/usr/bin/sshd'].find((p) => fs.existsSync(p));
    if (sshdPath === undefined) throw new Error('sshd is not installed (Debian: openssh-server)');
    // sshd refuses to start without its privilege-separation directory.
    if (process.getuid?.() === 0) fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const hostKey = path.join(this.dir, 'host_ed25519');
    const userKey = path.join(this.dir, 'id_ed25519');
    for (const key of [hostKey, userKey]) {
      const r = await exec('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key], { timeoutMs: 10_000 });
      if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
    }
    fs.copyFileSync(`${userKey}.pub`, path.join(this.dir, 'authorized_keys'));
    const port = await freePort();
    const config = path.join(this.dir, 'sshd_config');
    fs.writeFileSync(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${path.join(this.dir, 'authorized_keys')}`,
        `PidFile ${path.join(this.dir, 'sshd.pid')}`,
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'AllowTcpForwarding yes',
        'GatewayPorts no',
        'PermitTTY no',
        'X11Forwarding no',
        'MaxStartups 100',
        'MaxSessions 100',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    this.sshd = new Proc('sshd', sshdPath, ['-D', '-e', '-f', config], { keepOutput: false });
    await waitListening(this.sshd, port);

    const user = os.userInfo().username;
    const common = [
      '-F',
      '/dev/null',
      '-v',
      '-N',
      '-p',
      String(port),
      '-i',
      userKey,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'BatchMode=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'ExitOnForwardFailure=yes',
      '-o',
      'ServerAliveInterval=0',
    ];
    const remotePort = await freePort();
    this.service = new Proc(
      'ssh -R',
      'ssh',
      [...common, '-R', `127.0.0.1:${remotePort}:${this.target.host}:${this.target.port}`, `${user}@127.0.0.1`],
      { keepOutput: false },
    );
    await this.service.waitFor(/remote forward success/, 15_000);
    const m = this.service.stderr.match(/server->client cipher: (\S+)/);
    this.cipher = m ? m[1]! : 'unknown';
    this.localPort = await freePort();
    this.client = new Proc(
      'ssh -L',
      'ssh',
      [...common, '-L', `127.0.0.1:${this.localPort}:127.0.0.1:${remotePort}`, `${user}@127.0.0.1`],
      { keepOutput: false },
    );
    await this.client.waitFor(new RegExp(`forwarding listening on 127\\.0\\.0\\.1 port ${this.localPort}`), 15_000);
    return this;
  }

  async stop(): Promise<void> {
    await Promise.all([this.client, this.service].map((p) => p?.stop()));
    await this.sshd?.stop();
  }
}

/** sshd -D -e prints nothing at LogLevel ERROR when ready: poll its port instead. */
async function waitListening(proc: Proc, port: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (!proc.running) throw new Error(`sshd exited: ${proc.stderr}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('data', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`sshd did not listen on ${port}: ${proc.stderr}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
