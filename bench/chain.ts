/**
 * The whole Underpass chain as the benchmark runs it: `underpass server`, one `underpass proxy` publishing
 * the bench's targets, one `underpass redirector`, each the real program in its own process (and process
 * group, see proc.ts). Unlike cli/chain.ts's Chain it can pass an environment to the three daemons —
 * `--cpu-prof` for profiling, a quieter log level — and knows their pids for RSS readings.
 *
 * `pseudoAddress(name)` asks the redirector over IPC to resolve a pseudo name, exactly as the hook would;
 * that also opens the redirector's listener on the pseudo address, so a client connecting to that address
 * with no hook at all still travels the whole tunnel. The bench uses it to tell tunnel cost from hook cost;
 * such a client claims its connections over IPC too (`claim`), as the hook does, or its listener would
 * hold each one for the claim wait and the /proc owner check (redirector/claims.ts).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { encodeIpcMessage, IpcMessages, type IpcRequest } from '../protocol/ipc';
import { ipcRequest } from '../runtime/ipc-client';
import { freePort, HOOK_RUN_LAUNCHER, tmpDir, UNDERPASS } from '../cli/chain';
import { exec, onCleanup, Proc, type ExecResult } from './proc';

export interface ChainOptions {
  /** `NAME=HOST:PORT` publications. */
  publish: string[];
  /** Extra environment for the three daemons. */
  env?: NodeJS.ProcessEnv;
  /** Extra node flags for the three daemons (e.g. --cpu-prof, which NODE_OPTIONS may not carry). */
  nodeArgs?: string[];
  /** Extra flags for the proxy (the direct hop's `--direct-listen`). */
  proxyArgs?: string[];
}

export class BenchChain {
  server!: Proc;
  proxy!: Proc;
  redirector!: Proc;
  readonly dir = tmpDir('bench');
  readonly ipcPath = path.join(this.dir, 'redirector.sock');
  // A /16 of its own, away from the tests' 127.78–177 ranges, so a concurrent test run cannot collide.
  readonly pseudoNet = `127.${200 + Math.floor(Math.random() * 50)}.0.0/16`;
  private readonly hosts = new Map<string, string>();
  private readonly nodeArgs: string[];

  constructor(private readonly options: ChainOptions) {
    this.nodeArgs = options.nodeArgs ?? [];
    onCleanup(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  async start(): Promise<this> {
    const env = { UNDERPASS_LOG_LEVEL: 'warn', ...this.options.env };
    const dataDir = path.join(this.dir, 'data');
    const serverPort = await freePort();
    this.server = new Proc(
      'server',
      process.execPath,
      [...this.nodeArgs, UNDERPASS, 'server', '--listen', `127.0.0.1:${serverPort}`, '--data-dir', dataDir],
      { env: { ...env, UNDERPASS_LOG_LEVEL: 'info' }, keepOutput: false },
    );
    await this.server.waitFor(/listening on/);
    const token = fs.readFileSync(path.join(dataDir, 'token'), 'utf8').trim();
    const endpoint = [
      '--server',
      `127.0.0.1:${serverPort}`,
      '--ca',
      path.join(dataDir, 'tls', 'cert.pem'),
      '--token',
      token,
    ];

    const proxyArgs = [...this.nodeArgs, UNDERPASS, 'proxy', ...endpoint, '--json', ...(this.options.proxyArgs ?? [])];
    for (const p of this.options.publish) proxyArgs.push('--publish', p);
    this.proxy = new Proc('proxy', process.execPath, proxyArgs, { env, keepOutput: false });
    for (const spec of this.options.publish) {
      const name = spec.split('=')[0]!;
      const m = await this.proxy.waitFor(new RegExp(`\\{"event":"published","name":"${name}","host":"([^"]+)"`));
      this.hosts.set(name, m[1]!);
    }
    this.redirector = new Proc(
      'redirector',
      process.execPath,
      [...this.nodeArgs, UNDERPASS, 'redirector', ...endpoint, '--ipc', this.ipcPath, '--pseudo-net', this.pseudoNet],
      {
        env: { ...env, UNDERPASS_LOG_LEVEL: 'info' },
        keepOutput: false,
      },
    );
    await this.redirector.waitFor(/serving hooks on/);
    return this;
  }

  /** The server's certificate and key files (the floor chain borrows them). */
  get identity(): { cert: string; key: string } {
    const dir = path.join(this.dir, 'data', 'tls');
    return { cert: path.join(dir, 'cert.pem'), key: path.join(dir, 'key.pem') };
  }

  /** The pseudo DNS name the server gave publication `name`. */
  host(name: string): string {
    const h = this.hosts.get(name);
    if (h === undefined) throw new Error(`${name} was not published`);
    return h;
  }

  /** Resolves `name`'s pseudo name through the redirector's IPC (as the hook does); returns the address. */
  async pseudoAddress(name: string): Promise<string> {
    const reply = await ipcRequest(this.ipcPath, 'resolve', { name: this.host(name) });
    if (!reply.ok) throw new Error(`the redirector did not resolve ${name}: ${JSON.stringify(reply)}`);
    return reply.address;
  }

  /**
   * Claims a connection to one of the redirector's listeners over IPC, as the hook does after connect():
   * settles once the claim is written (a claim has no reply).
   */
  claim(socket: net.Socket): Promise<void> {
    const data: IpcRequest<'claim'> = {
      address: socket.remoteAddress ?? '',
      port: socket.remotePort ?? 0,
      localAddress: socket.localAddress ?? '',
      localPort: socket.localPort ?? 0,
    };
    return new Promise((resolve, reject) => {
      const ipc = net.connect(this.ipcPath, () =>
        ipc.end(encodeIpcMessage(IpcMessages.claim.event, data), () => resolve()),
      );
      ipc.on('error', reject);
    });
  }

  /** `hook-run --ipc <ours> -- command…`, to completion. */
  hookRun(command: string[], options: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<ExecResult> {
    // As a user runs it: `npx hook-run` and a PATH install both exec the launcher bin/hook-run.
    return exec(HOOK_RUN_LAUNCHER, ['--ipc', this.ipcPath, '--', ...command], options);
  }

  pids(): { server: number; proxy: number; redirector: number } {
    return { server: this.server.pid, proxy: this.proxy.pid, redirector: this.redirector.pid };
  }

  /** Stops the daemons in dependency order (SIGTERM lets `--cpu-prof` write its profile). */
  async stop(): Promise<void> {
    await Promise.all([this.redirector, this.proxy].filter(Boolean).map((p) => p.stop(5000)));
    await this.server?.stop(5000);
  }
}
