/**
 * What must be equal on every node for a publication to keep its pseudo name and service key wherever
 * its proxy lands, and for a token to work on every node: the secret, the publications, the default
 * token and the accounts, kept in Redis (keys.ts) instead of DATA_DIR.
 *
 * The first node to start seeds each of them (with what its DATA_DIR has, if anything: a server that
 * joins a cluster keeps its keys); every later node takes what Redis has. The publications are cached
 * in each node's store and kept current by the events channel, so a lookup never waits on Redis and a
 * node whose Redis is away still serves the publications it knows.
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import type { StoreBacking, StoredPublication } from '../store';
import { Keys } from './keys';
import type { RedisLink } from './redis-link';

/** SET NX, then GET: what the first writer wrote. */
const SEED = `redis.call('SET', KEYS[1], ARGV[1], 'NX') return redis.call('GET', KEYS[1])`;
/** Overwrites and returns the value, telling the others (a node started with its own `--accounts` wins). */
const PUT = `redis.call('SET', KEYS[1], ARGV[1]) redis.call('PUBLISH', KEYS[2], ARGV[2]) return ARGV[1]`;

const Stored = z.object({ account: z.string(), name: z.string(), port: z.number().int(), createdAt: z.string() });

/** One value of the cluster: seeded by the first node, the same for every other. */
export async function seeded(link: RedisLink, key: string, offer: string): Promise<string> {
  return String(await link.eval(SEED, [key], [offer]));
}

/** The cluster's secret: Redis's, else `local` (DATA_DIR/secret), else a new one. */
export async function sharedSecret(link: RedisLink, local: Buffer | null): Promise<Buffer> {
  const offer = (local ?? crypto.randomBytes(32)).toString('hex');
  return Buffer.from(await seeded(link, Keys.secret, offer), 'hex');
}

/** The `--accounts` file's text: this node's when it has one (it becomes the cluster's), else Redis's. */
export async function sharedAccounts(link: RedisLink, local: string | undefined): Promise<string | null> {
  if (local !== undefined)
    return String(await link.eval(PUT, [Keys.accounts, Keys.events], [local, '{"type":"accounts"}']));
  const reply = await link.eval(`return redis.call('GET', KEYS[1])`, [Keys.accounts], []);
  return typeof reply === 'string' ? reply : null;
}

/** A publication as the events channel or the hash carries it, or null when it is not one. */
export function storedOf(value: unknown): StoredPublication | null {
  const parsed = Stored.safeParse(value);
  return parsed.success ? parsed.data : null;
}

/** The publication store in Redis: a hash, and an event per change so other nodes' caches follow. */
export class RedisBacking implements StoreBacking {
  constructor(
    private readonly link: RedisLink,
    readonly secret: Buffer,
    /** DATA_DIR's publications, added where Redis has none of that name (a server joining keeps them). */
    private readonly seed: StoredPublication[],
  ) {}

  async load(): Promise<StoredPublication[]> {
    for (const p of this.seed)
      await this.link.eval(
        `redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])`,
        [Keys.publications],
        [`${p.account}/${p.name}`, JSON.stringify(p)],
      );
    return this.all();
  }

  /** Every publication Redis has (a node re-reads them when Redis comes back: it may have missed events). */
  async all(): Promise<StoredPublication[]> {
    const reply = await this.link.eval(`return redis.call('HVALS', KEYS[1])`, [Keys.publications], []);
    const list = Array.isArray(reply) ? (reply as unknown[]) : [];
    return list.flatMap((text) => {
      const stored = typeof text === 'string' ? storedOf(JSON.parse(text)) : null;
      return stored === null ? [] : [stored];
    });
  }

  async save(changed: StoredPublication): Promise<void> {
    const text = JSON.stringify(changed);
    await this.link.eval(
      `redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) redis.call('PUBLISH', KEYS[2], ARGV[3])`,
      [Keys.publications, Keys.events],
      [`${changed.account}/${changed.name}`, text, JSON.stringify({ type: 'publication', publication: changed })],
    );
  }
}
