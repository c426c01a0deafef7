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
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { encodeIpcMessage, IpcMessages, type IpcRequest } from '../protocol/ipc';
import { ipcRequest } from '../runtime/ipc-client';
import { freePort, HOOK_RUN_LAUNCHER, tmpDir, UNDERPASS } from '../cli/chain';
import { exec, onCleanup, Proc, type ExecResult } from './proc';

/** Resolves pseudo name `host` through the redirector at `ipcPath` (as the hook does); returns the address. */
async function resolveVia(ipcPath: string, host: string): Promise<string> {
  const reply = await ipcRequest(ipcPath, 'resolve', { name: host });
  if (!reply.ok) throw new Error(`the redirector did not resolve ${host}: ${JSON.stringify(reply)}`);
  return reply.address;
}

export interface ChainOptions {
  /** `NAME=HOST:PORT` publications. */
  publish: string[];
  /** Extra environment for the three daemons. */
  env?: NodeJS.ProcessEnv;
  /** Extra node flags for the three daemons (e.g. --cpu-prof, which NODE_OPTIONS may not carry). */
  nodeArgs?: string[];
  /** Extra flags for the proxy (the direct hop's `--direct-listen`). */
  proxyArgs?: string[];
  /** The `underpass` entry the daemons run (another build's bin/underpass.js, for an A/B); ours by default. */
  program?: string;
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
  private readonly program: string;

  constructor(private readonly options: ChainOptions) {
    this.nodeArgs = options.nodeArgs ?? [];
    this.program = options.program ?? UNDERPASS;
    onCleanup(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  async start(): Promise<this> {
    const env = { UNDERPASS_LOG_LEVEL: 'warn', ...this.options.env };
    const dataDir = path.join(this.dir, 'data');
    const serverPort = await freePort();
    this.server = new Proc(
      'server',
      process.execPath,
      [...this.nodeArgs, this.program, 'server', '--listen', `127.0.0.1:${serverPort}`, '--data-dir', dataDir],
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

    const proxyArgs = [
      ...this.nodeArgs,
      this.program,
      'proxy',
      ...endpoint,
      '--json',
      ...(this.options.proxyArgs ?? []),
    ];
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
      [
        ...this.nodeArgs,
        this.program,
        'redirector',
        ...endpoint,
        '--ipc',
        this.ipcPath,
        '--pseudo-net',
        this.pseudoNet,
      ],
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
  pseudoAddress(name: string): Promise<string> {
    return resolveVia(this.ipcPath, this.host(name));
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

/**
 * Two nodes of one cluster (issue 14) on a real redis-server, for the cross-node figure: one proxy on
 * node a, and two redirectors, `near` on node a (the tunnel stays on one node) and `far` on node b (it
 * crosses the node link b → a). A placement table keeps each endpoint on the node it dials (the far
 * redirector has an account of its own, granted the publications, for the table to tell it apart).
 */
export class CrossNodeChain {
  readonly dir = tmpDir('bench-cluster');
  readonly procs: Proc[] = [];
  private readonly hosts = new Map<string, string>();
  /** The redirectors' IPC sockets. */
  readonly ipc = { near: path.join(this.dir, 'near.sock'), far: path.join(this.dir, 'far.sock') };

  constructor(private readonly publish: string[]) {
    onCleanup(() => fs.rmSync(this.dir, { recursive: true, force: true }));
  }

  async start(): Promise<this> {
    const env = { UNDERPASS_LOG_LEVEL: 'warn' };
    const redisPort = await freePort();
    const redis = this.run('redis-server', 'redis-server', [
      ...['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    ]);
    await redis.waitFor(/Ready to accept connections/);
    const token = crypto.randomBytes(18).toString('base64url');
    const far = crypto.randomBytes(18).toString('base64url');
    const grants = Object.fromEntries(this.publish.map((p) => [`default/${p.split('=')[0]!}`, ['far']]));
    const accounts = path.join(this.dir, 'accounts.json');
    fs.writeFileSync(accounts, JSON.stringify({ tokens: { far: far }, grants }));
    const placement = path.join(this.dir, 'placement');
    fs.writeFileSync(placement, '*.default a\ndefault a\nfar b\n');
    const ca = path.join(this.dir, 'a', 'tls', 'cert.pem');
    const address: Record<string, string> = {};
    for (const node of ['a', 'b']) {
      const dataDir = path.join(this.dir, node);
      // Every node serves the same identity: the first node's, copied before the second starts.
      if (node !== 'a') fs.cpSync(path.dirname(ca), path.join(dataDir, 'tls'), { recursive: true });
      address[node] = `127.0.0.1:${await freePort()}`;
      const server = this.run(
        `node ${node}`,
        process.execPath,
        [
          ...[UNDERPASS, 'server', '--listen', address[node], '--data-dir', dataDir, '--token', token],
          ...['--accounts', accounts, '--placement', placement],
          ...['--cluster', `redis://127.0.0.1:${redisPort}`, '--node', node, '--advertise', address[node]],
        ],
        { ...env, UNDERPASS_LOG_LEVEL: 'info' },
      );
      await server.waitFor(/listening on/);
    }
    const endpoint = (node: string, as: string): string[] => ['--server', address[node]!, '--ca', ca, '--token', as];
    const proxy = this.run(
      'proxy',
      process.execPath,
      [...[UNDERPASS, 'proxy', ...endpoint('a', token), '--json'], ...this.publish.flatMap((p) => ['--publish', p])],
      env,
    );
    for (const spec of this.publish) {
      const name = spec.split('=')[0]!;
      const m = await proxy.waitFor(new RegExp(`\\{"event":"published","name":"${name}","host":"([^"]+)"`));
      this.hosts.set(name, m[1]!);
    }
    const second = 200 + Math.floor(Math.random() * 50);
    for (const [which, node, as, net] of [
      ['near', 'a', token, `127.${second}.0.0/17`],
      ['far', 'b', far, `127.${second}.128.0/17`],
    ] as const) {
      const redirector = this.run(
        `${which} redirector`,
        process.execPath,
        [
          ...[UNDERPASS, 'redirector', ...endpoint(node, as), '--ipc', this.ipc[which], '--pseudo-net', net],
          ...['--dns', 'off'],
        ],
        { ...env, UNDERPASS_LOG_LEVEL: 'info' },
      );
      await redirector.waitFor(/serving hooks on/);
    }
    return this;
  }

  /** The pseudo address of publication `name` at the near or the far redirector. */
  pseudoAddress(which: 'near' | 'far', name: string): Promise<string> {
    const host = this.hosts.get(name);
    if (host === undefined) throw new Error(`${name} was not published`);
    return resolveVia(this.ipc[which], host);
  }

  /** Stops the endpoints, then the nodes, then Redis. */
  async stop(): Promise<void> {
    for (const p of [...this.procs].reverse()) await p.stop(5000);
  }

  private run(label: string, command: string, args: string[], env: NodeJS.ProcessEnv = {}): Proc {
    const proc = new Proc(label, command, args, { env, keepOutput: false });
    this.procs.push(proc);
    return proc;
  }
}
