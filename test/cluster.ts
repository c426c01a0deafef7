/**
 * A cluster of real `underpass server` processes for the end-to-end tests: one real redis-server holding
 * the shared state, and nodes started with `--cluster redis://… --node NAME --advertise …` on loopback
 * ports that were free. Every node serves the same TLS identity (the first node's DATA_DIR/tls, copied
 * into the others' data dirs before they start), so one `--ca` serves an endpoint whichever node it
 * lands on, and the nodes trust one another's links.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { LocalEndpoint } from '../server/cluster/endpoint-directory';
import { Keys } from '../server/cluster/keys';
import type { ServerStatus } from '../server/status-page';
import { freePort, Program, run, tmpDir, UNDERPASS } from './harness';

/**
 * Resolves once `check` answers true (polled every 100 ms); rejects after `ms` saying what never came and,
 * with `show`, what there was instead.
 */
export async function until(
  what: string,
  check: () => Promise<boolean>,
  ms = 15_000,
  show?: () => Promise<unknown>,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(
        `never came within ${ms} ms: ${what}${show ? `; there was ${JSON.stringify(await show())}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A real redis-server on 127.0.0.1:`port`, keeping nothing on disk. */
export function redisServer(port: number, label = 'redis-server'): Program {
  return new Program(label, 'redis-server', [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
  ]);
}

/** Where a node listens. */
export interface Listen {
  host: string;
  port: number;
}

export interface ClusterNode {
  name: string;
  host: string;
  port: number;
  dataDir: string;
  program: Program;
  /** HOST:PORT, as endpoints dial it. */
  address: string;
  /** HOST:PORT of its `--metrics` listener, where its status page is (`/status.json`). */
  metrics: string;
}

export class TestCluster {
  readonly dir = tmpDir('cluster');
  readonly token = `cluster-token-${process.pid}-0123456789abcdef`;
  /** The redis-server `start()` ran, unless it was given a Redis to use. */
  redis: Program | undefined;
  redisPort = 0;
  /** What the nodes' `--cluster` names. */
  private url = '';
  readonly nodes = new Map<string, ClusterNode>();

  constructor(
    private readonly names: string[],
    private readonly serverArgs: string[] = [],
  ) {}

  get ca(): string {
    return path.join(this.dir, this.names[0]!, 'tls', 'cert.pem');
  }

  node(name: string): ClusterNode {
    const node = this.nodes.get(name);
    if (node === undefined) throw new Error(`no node ${name}`);
    return node;
  }

  /** Which node listens at HOST:PORT `address`. */
  nameAt(address: string): string {
    for (const node of this.nodes.values()) if (node.address === address) return node.name;
    throw new Error(`no node listens at ${address}`);
  }

  /**
   * Starts the nodes on Redis `url`, or on a redis-server of its own (`redisPort`) when none is given;
   * each on a free port of 127.0.0.1 unless `listen` names its address.
   */
  async start(options: { url?: string; listen?: Record<string, Listen> } = {}): Promise<this> {
    const { url, listen = {} } = options;
    if (url !== undefined) this.url = url;
    else {
      this.redisPort = await freePort();
      this.redis = redisServer(this.redisPort);
      await this.redis.waitFor(/Ready to accept connections/);
      this.url = `redis://127.0.0.1:${this.redisPort}`;
    }
    for (const name of this.names) await this.startNode(name, [], listen[name]);
    return this;
  }

  /**
   * Starts (or starts again, on the same address and data dir) node `name`, with `args` for it alone, on
   * `listen` or a free port of 127.0.0.1.
   */
  async startNode(name: string, args: string[] = [], listen?: Listen): Promise<ClusterNode> {
    const known = this.nodes.get(name);
    const host = listen?.host ?? known?.host ?? '127.0.0.1';
    const port = listen?.port ?? known?.port ?? (await freePort(host));
    const metrics = known?.metrics ?? `127.0.0.1:${await freePort()}`;
    const dataDir = path.join(this.dir, name);
    const first = path.join(this.dir, this.names[0]!, 'tls');
    if (name !== this.names[0] && !fs.existsSync(path.join(dataDir, 'tls'))) {
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      fs.cpSync(first, path.join(dataDir, 'tls'), { recursive: true });
    }
    const address = `${host}:${port}`;
    const program = new Program(`node ${name}`, process.execPath, [
      UNDERPASS,
      'server',
      '--listen',
      address,
      '--data-dir',
      dataDir,
      '--token',
      this.token,
      '--cluster',
      this.url,
      '--node',
      name,
      '--advertise',
      address,
      '--metrics',
      metrics,
      ...this.serverArgs,
      ...args,
    ]);
    await program.waitFor(/listening on/);
    const node = { name, host, port, dataDir, program, address, metrics };
    this.nodes.set(name, node);
    return node;
  }

  /** Node `name`'s status page, `/status.json`. */
  async status(name: string): Promise<ServerStatus> {
    const response = await fetch(`http://${this.node(name).metrics}/status.json`);
    return (await response.json()) as ServerStatus;
  }

  /** The endpoint directory's entries of node `name`, straight from Redis (HGETALL). */
  async directoryOf(name: string): Promise<LocalEndpoint[]> {
    const r = await run('redis-cli', ['-p', String(this.redisPort), 'HGETALL', Keys.endpoints(name)]);
    const lines = r.stdout.split('\n').filter((l) => l !== '');
    const out: LocalEndpoint[] = [];
    for (let i = 1; i < lines.length; i += 2) out.push(JSON.parse(lines[i]!) as LocalEndpoint);
    return out;
  }

  /** `underpass proxy --json` dialling node `name`, publishing each NAME=HOST:PORT of `publishes`. */
  proxy(name: string, publishes: string[]): Program {
    return new Program('proxy', process.execPath, [
      ...[UNDERPASS, 'proxy', ...this.endpointArgs(name), '--json'],
      ...publishes.flatMap((p) => ['--publish', p]),
    ]);
  }

  /** The flags an endpoint dials node `name` with. */
  endpointArgs(name: string): string[] {
    return ['--server', this.node(name).address, '--ca', this.ca, '--token', this.token];
  }

  async stop(): Promise<void> {
    await Promise.all([...this.nodes.values()].map((n) => n.program.stop()));
    await this.redis?.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
