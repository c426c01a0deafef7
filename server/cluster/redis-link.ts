/**
 * The node's connection to the cluster's shared state: one of the official client's three shapes (a
 * single Redis, a Sentinel-watched primary, a Redis Cluster) chosen by the `--cluster` URL, narrowed
 * to the three things the cluster code does with it (run a script, publish, subscribe), and the one
 * place that decides whether Redis is reachable now.
 *
 * Every command has a deadline: a Redis that stopped answering (SIGSTOP, a partition) keeps its TCP
 * connection open, and the client would wait for ever. Commands are never queued while the connection
 * is down (`disableOfflineQueue`), so a node without Redis finds out at once instead of piling work up.
 */
import { EventEmitter } from 'node:events';
import { createClient, createCluster, createSentinel } from 'redis';
import type { z } from 'zod';
import { ClusterUnavailableError, ConfigError } from '../../protocol/errors';
import { tryParseHostPort, type HostPort } from '../../protocol/names';

/** How long one command may take before Redis counts as unreachable (ms). */
export const COMMAND_TIMEOUT_MS = 1_500;

/** What the cluster code does with Redis. */
interface Commands {
  eval(script: string, keys: string[], args: string[]): Promise<unknown>;
  publish(channel: string, message: string): Promise<unknown>;
  subscribe(channel: string, listener: (message: string) => void): Promise<unknown>;
  close(): Promise<void>;
}

/** What a `--cluster` URL names. */
export type RedisTarget =
  | { kind: 'single'; url: string }
  | { kind: 'sentinel'; nodes: HostPort[]; primary: string; database: number; password: string | undefined }
  | { kind: 'cluster'; nodes: HostPort[]; password: string | undefined };

const EXAMPLE =
  'redis://HOST:PORT[/DB], rediss://…, redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT…]/PRIMARY[/DB] or redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT…]';

function hosts(list: string, url: string): HostPort[] {
  return list.split(',').map((item) => {
    const parsed = tryParseHostPort(item);
    if (parsed === null) throw new ConfigError(`--cluster ${url}: '${item}' is not HOST:PORT (expected ${EXAMPLE})`);
    return parsed;
  });
}

/** A JSON value read back from Redis, if it is what `schema` says; null for text of another shape or none. */
export function decodeJson<T>(schema: z.ZodType<T>, text: string): T | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/** Parses `--cluster`; throws ConfigError naming what is wrong, with the forms it takes. */
export function parseRedisUrl(url: string): RedisTarget {
  const scheme = /^([a-z+]+):\/\//.exec(url)?.[1];
  if (scheme === 'redis' || scheme === 'rediss') {
    if (tryParseHostPort(new URL(url).host) === null) throw new ConfigError(`--cluster ${url}: expected ${EXAMPLE}`);
    return { kind: 'single', url };
  }
  if (scheme !== 'redis+sentinel' && scheme !== 'redis+cluster')
    throw new ConfigError(`--cluster ${url}: unknown scheme (expected ${EXAMPLE})`);
  const rest = url.slice(scheme.length + 3);
  const at = rest.lastIndexOf('@');
  const auth = at >= 0 ? decodeURIComponent(rest.slice(0, at)) : undefined;
  const password = auth === undefined ? undefined : auth.slice(auth.indexOf(':') + 1);
  const [list = '', ...path] = rest.slice(at + 1).split('/');
  const nodes = hosts(list, url);
  if (scheme === 'redis+cluster') return { kind: 'cluster', nodes, password };
  const [primary, db = '0'] = path;
  if (primary === undefined || primary === '' || !/^\d+$/.test(db))
    throw new ConfigError(`--cluster ${url}: name the primary, as in redis+sentinel://HOST:PORT/mymaster[/DB]`);
  return { kind: 'sentinel', nodes, primary, database: Number(db), password };
}

const clientOptions = {
  disableOfflineQueue: true,
  socket: { connectTimeout: 2_000, reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 1_000) },
};

function connectTo(target: RedisTarget, onError: (e: Error) => void): { commands: Commands; ready: Promise<void> } {
  if (target.kind === 'single') {
    const client = createClient({ url: target.url, ...clientOptions });
    const subscriber = client.duplicate();
    client.on('error', onError);
    subscriber.on('error', onError);
    return {
      ready: Promise.all([client.connect(), subscriber.connect()]).then(() => undefined),
      commands: {
        eval: (script, keys, args) => client.eval(script, { keys, arguments: args }),
        publish: (channel, message) => client.publish(channel, message),
        subscribe: (channel, listener) => subscriber.subscribe(channel, listener),
        close: async () => {
          client.destroy();
          subscriber.destroy();
          return Promise.resolve();
        },
      },
    };
  }
  if (target.kind === 'sentinel') {
    const sentinel = createSentinel({
      name: target.primary,
      sentinelRootNodes: target.nodes,
      nodeClientOptions: {
        ...clientOptions,
        database: target.database,
        ...(target.password !== undefined ? { password: target.password } : {}),
      },
    });
    sentinel.on('error', onError);
    return {
      ready: sentinel.connect().then(() => undefined),
      commands: {
        eval: (script, keys, args) => sentinel.eval(script, { keys, arguments: args }),
        publish: (channel, message) => sentinel.publish(channel, message),
        subscribe: (channel, listener) => sentinel.SUBSCRIBE(channel, listener),
        close: () => Promise.resolve(sentinel.destroy()),
      },
    };
  }
  const cluster = createCluster({
    rootNodes: target.nodes.map((n) => ({ socket: { host: n.host, port: n.port } })),
    defaults: { ...clientOptions, ...(target.password !== undefined ? { password: target.password } : {}) },
  });
  cluster.on('error', onError);
  return {
    ready: cluster.connect().then(() => undefined),
    commands: {
      // Every key shares one hash tag, so a script's keys always sit in one slot.
      eval: (script, keys, args) => cluster.eval(script, { keys, arguments: args }),
      publish: (channel, message) => cluster.publish(channel, message),
      subscribe: (channel, listener) => cluster.SUBSCRIBE(channel, listener),
      close: () => Promise.resolve(cluster.destroy()),
    },
  };
}

/**
 * The connection, with whether Redis answers now: 'down' when a command fails or times out, 'up' when
 * one succeeds again (the owner then re-reads what it may have missed: pub/sub loses what was sent meanwhile).
 */
export class RedisLink extends EventEmitter {
  private commands: Commands | null = null;
  private up = false;

  constructor(private readonly url: string) {
    super();
  }

  get available(): boolean {
    return this.up;
  }

  /** Connects; rejects with ConfigError when Redis cannot be reached at start. */
  async connect(): Promise<void> {
    const { commands, ready } = connectTo(parseRedisUrl(this.url), () => this.markDown());
    this.commands = commands;
    try {
      await deadline(ready, 5_000);
    } catch (e) {
      await commands.close();
      throw new ConfigError(
        `cannot reach Redis at --cluster ${this.url} (${e instanceof Error ? e.message : String(e)}): start it or fix the URL`,
      );
    }
    this.up = true;
  }

  /** Runs a script; rejects with ClusterUnavailableError when Redis does not answer in time. */
  async eval(script: string, keys: string[], args: string[]): Promise<unknown> {
    return this.run((c) => c.eval(script, keys, args));
  }

  async publish(channel: string, message: string): Promise<void> {
    await this.run((c) => c.publish(channel, message));
  }

  async subscribe(channel: string, listener: (message: string) => void): Promise<void> {
    await this.run((c) => c.subscribe(channel, listener));
  }

  async close(): Promise<void> {
    await this.commands?.close();
    this.commands = null;
  }

  private async run<T>(command: (c: Commands) => Promise<T>): Promise<T> {
    if (this.commands === null) throw new ClusterUnavailableError('the cluster connection is closed');
    try {
      const result = await deadline(command(this.commands), COMMAND_TIMEOUT_MS);
      this.markUp();
      return result;
    } catch (e) {
      this.markDown();
      throw new ClusterUnavailableError(
        `this node cannot reach the cluster's Redis (${e instanceof Error ? e.message : String(e)}): only what it holds itself is served until Redis is back`,
        e,
      );
    }
  }

  private markUp(): void {
    if (this.up) return;
    this.up = true;
    this.emit('up');
  }

  private markDown(): void {
    if (!this.up) return;
    this.up = false;
    this.emit('down');
  }
}

function deadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
