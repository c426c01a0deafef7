/**
 * A cluster of real `underpass server` processes for the end-to-end tests: one real redis-server holding
 * the shared state, and nodes started with `--cluster redis://… --node NAME --advertise …` on loopback
 * ports that were free. Every node serves the same TLS identity (the first node's DATA_DIR/tls, copied
 * into the others' data dirs before they start), so one `--ca` serves an endpoint whichever node it
 * lands on, and the nodes trust one another's links.
 */
import fs from 'node:fs';
import path from 'node:path';
import { freePort, Program, tmpDir, UNDERPASS } from './harness';

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

export interface ClusterNode {
  name: string;
  port: number;
  dataDir: string;
  program: Program;
  /** HOST:PORT, as endpoints dial it. */
  address: string;
}

export class TestCluster {
  readonly dir = tmpDir('cluster');
  readonly token = `cluster-token-${process.pid}-0123456789abcdef`;
  redis!: Program;
  redisPort = 0;
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

  async start(): Promise<this> {
    this.redisPort = await freePort();
    this.redis = redisServer(this.redisPort);
    await this.redis.waitFor(/Ready to accept connections/);
    for (const name of this.names) await this.startNode(name);
    return this;
  }

  /** Starts (or starts again, on the same port and data dir) node `name`, with `args` for it alone. */
  async startNode(name: string, args: string[] = []): Promise<ClusterNode> {
    const known = this.nodes.get(name);
    const port = known?.port ?? (await freePort());
    const dataDir = path.join(this.dir, name);
    const first = path.join(this.dir, this.names[0]!, 'tls');
    if (name !== this.names[0] && !fs.existsSync(path.join(dataDir, 'tls'))) {
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      fs.cpSync(first, path.join(dataDir, 'tls'), { recursive: true });
    }
    const address = `127.0.0.1:${port}`;
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
      `redis://127.0.0.1:${this.redisPort}`,
      '--node',
      name,
      '--advertise',
      address,
      ...this.serverArgs,
      ...args,
    ]);
    await program.waitFor(/listening on/);
    const node = { name, port, dataDir, program, address };
    this.nodes.set(name, node);
    return node;
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
