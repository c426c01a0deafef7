/**
 * rathole (a Rust reverse proxy, `cargo install rathole`), the fastest peer, in its own shape:
 * its server exposes the published port itself, so a client crosses one encrypted link and two
 * processes (server, client next to the target), one hop fewer than our chain's two links and three
 * daemons. Transport: Noise (X25519, ChaCha20-Poly1305), a keypair generated per run; TCP_NODELAY on.
 *
 * The binary is looked up on PATH, then in a temp folder the bench installs it into with cargo on first
 * use (crates.io; a few minutes once, niced); without either the row is skipped, with the reason.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort, tmpDir } from '../cli/chain';
import { exec, onCleanup, Proc } from './proc';

/** Where the bench installs rathole when cargo is there: kept across runs, outside the checkout. */
const INSTALL_ROOT = path.join(os.tmpdir(), 'underpass-bench-rathole');

async function which(command: string): Promise<string | null> {
  const r = await exec('sh', ['-c', `command -v ${command}`], { timeoutMs: 5000 });
  return r.code === 0 ? r.stdout.trim() : null;
}

/** The rathole binary, installing it with cargo when it is missing; throws why when neither works. */
async function ratholeBinary(progress: (message: string) => void): Promise<string> {
  const installed = path.join(INSTALL_ROOT, 'bin', 'rathole');
  if (fs.existsSync(installed)) return installed;
  const onPath = await which('rathole');
  if (onPath !== null) return onPath;
  const cargo = (await which('cargo')) ?? [path.join(os.homedir(), '.cargo', 'bin', 'cargo')].find(fs.existsSync);
  if (cargo === undefined || cargo === null)
    throw new Error('rathole is not installed and there is no cargo to build it');
  progress(`installing rathole with cargo into ${INSTALL_ROOT} (first run only, a few minutes)`);
  const r = await exec('nice', ['-n', '19', cargo, 'install', 'rathole', '--root', INSTALL_ROOT], {
    timeoutMs: 30 * 60_000,
  });
  if (r.code !== 0 || !fs.existsSync(installed))
    throw new Error(`cargo install rathole failed: ${r.stderr.trim().split('\n').slice(-3).join(' ')}`);
  return installed;
}

export class RatholeChain {
  private readonly dir = tmpDir('bench-rathole');
  private server: Proc | null = null;
  private client: Proc | null = null;
  /** Where a client connects: the port rathole's server exposes. */
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {
    onCleanup(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  async start(progress: (message: string) => void): Promise<this> {
    const bin = await ratholeBinary(progress);
    const keys = await exec(bin, ['--genkey'], { timeoutMs: 10_000 });
    const m = keys.stdout.match(/Private Key:\s+(\S+)\s+Public Key:\s+(\S+)/);
    if (keys.code !== 0 || !m) throw new Error(`rathole --genkey failed: ${keys.stderr}`);
    const [controlPort, port] = [await freePort(), await freePort()];
    this.port = port;
    const token = 'bench-' + Math.random().toString(36).slice(2);
    const write = (name: string, lines: string[]): string => {
      const file = path.join(this.dir, name);
      fs.writeFileSync(file, lines.join('\n') + '\n');
      return file;
    };
    const server = write('server.toml', [
      '[server]',
      `bind_addr = "127.0.0.1:${controlPort}"`,
      '[server.transport]',
      'type = "noise"',
      '[server.transport.noise]',
      `local_private_key = "${m[1]}"`,
      '[server.services.bench]',
      `token = "${token}"`,
      `bind_addr = "127.0.0.1:${port}"`,
      'nodelay = true',
    ]);
    const client = write('client.toml', [
      '[client]',
      `remote_addr = "127.0.0.1:${controlPort}"`,
      '[client.transport]',
      'type = "noise"',
      '[client.transport.noise]',
      `remote_public_key = "${m[2]}"`,
      '[client.services.bench]',
      `token = "${token}"`,
      `local_addr = "${this.target.host}:${this.target.port}"`,
      'nodelay = true',
    ]);
    const env = { RUST_LOG: 'info' };
    this.server = new Proc('rathole server', bin, ['--server', server], { env, keepOutput: false });
    await this.server.waitFor(/Listening at/, 15_000);
    this.client = new Proc('rathole client', bin, ['--client', client], { env, keepOutput: false });
    await this.client.waitFor(/Control channel established/, 15_000);
    return this;
  }

  pids(): { server: number; client: number } {
    return { server: this.server?.pid ?? -1, client: this.client?.pid ?? -1 };
  }

  async stop(): Promise<void> {
    await this.client?.stop();
    await this.server?.stop();
  }
}
