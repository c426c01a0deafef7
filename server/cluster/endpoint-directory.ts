/**
 * The cluster's endpoint directory: which node each endpoint is connected to (PROTOCOL.md "Cluster state
 * in Redis"). Each node keeps one Redis hash of its connected endpoint sessions, endpoint id → JSON
 * (a session waiting out its grace period after its link dropped is not listed: its endpoint may be
 * connected to another node by then), that lives
 * exactly as long as its heartbeat: the node refreshes both at every beat, so a node that dies (`kill -9`)
 * takes its entries with it within the heartbeat's lifetime, and nothing ever waits on or locks an entry.
 * Readers list only the hashes of nodes whose heartbeat is alive.
 *
 * The hash is written at each beat with what changed since the last one, not on every session event:
 * an endpoint's arrival and departure then cost Redis nothing on the session's own path, and a burst of
 * them is one script. A beat that finds the node's heartbeat gone (Redis lost it, or the node was paused
 * past it) writes the whole hash again, since its entries went with the heartbeat.
 *
 * An entry moves on failover: a node whose endpoint presents the resumption token of a session another
 * node lists removes that entry at once (the token's secret hashes to the entry's `proof`, so nobody
 * else can), instead of leaving it to expire with a dead node's heartbeat.
 */
import crypto from 'node:crypto';
import { z } from 'zod';
import { Keys, HEARTBEAT_TTL_MS } from './keys';
import { decodeJson, type RedisLink } from './redis-link';

/** An endpoint session on this node, as the directory records it. */
const Entry = z.object({
  id: z.string(),
  account: z.string(),
  /** `proxy` while it holds publications here, else `client` (a redirector). */
  role: z.enum(['proxy', 'client']),
  /** The publications it holds here (names, without the account). */
  publishes: z.array(z.string()).catch([]),
  /** Its address as this node sees it ('' over a WebSocket carrier). */
  remote: z.string().catch(''),
  /** When the session began (ms since 1970). */
  since: z.number().catch(0),
  /** `proofOf(secret)` of the session's resumption secret. */
  proof: z.string(),
});
export type LocalEndpoint = z.infer<typeof Entry>;

/** An endpoint session anywhere in the cluster: the node it is on, and what that node recorded. */
export type ClusterEndpoint = Omit<LocalEndpoint, 'proof'> & { node: string };

/** What an entry's `proof` is: the resumption secret hashed, so Redis never holds the secret itself. */
export function proofOf(secret: string): string {
  return crypto.createHash('sha256').update(secret).digest('hex');
}

const SYNC = `
if ARGV[1] == '1' then redis.call('DEL', KEYS[1]) end
local n = tonumber(ARGV[2])
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[4 + 2 * i], ARGV[5 + 2 * i]) end
for i = 4 + 2 * n, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1`;

const ALL = `
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('EXISTS', ARGV[1] .. name) == 1 then
    local fields = redis.call('HGETALL', ARGV[2] .. name)
    for i = 1, #fields, 2 do table.insert(out, name) table.insert(out, fields[i + 1]) end
  end
end
return out`;

const TAKE_OVER = `
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if name ~= ARGV[3] then
    local key = ARGV[4] .. name
    local entry = redis.call('HGET', key, ARGV[1])
    if entry and cjson.decode(entry).proof == ARGV[2] then redis.call('HDEL', key, ARGV[1]) return name end
  end
end
return false`;

/** What readers take of an entry: everything but its proof. */
const Listed = Entry.omit({ proof: true });

function entryOf(node: string, text: string): ClusterEndpoint | null {
  const entry = decodeJson(Listed, text);
  return entry === null ? null : { node, ...entry };
}

export class EndpointDirectory {
  /** What this node last wrote, id → JSON; null: the hash must be written whole at the next sync. */
  private written: Map<string, string> | null = null;

  constructor(
    private readonly link: RedisLink,
    private readonly node: string,
  ) {}

  /** The next sync writes the whole hash (the heartbeat was gone, or Redis is back). */
  rewrite(): void {
    this.written = null;
  }

  /** Brings this node's hash to `endpoints` and gives it the heartbeat's lifetime. Rejects when Redis is away. */
  async sync(endpoints: readonly LocalEndpoint[]): Promise<void> {
    const now = new Map(endpoints.map((e) => [e.id, JSON.stringify(e)]));
    const before = this.written;
    const sets: string[] = [];
    for (const [id, text] of now) if (before?.get(id) !== text) sets.push(id, text);
    const removals = before === null ? [] : [...before.keys()].filter((id) => !now.has(id));
    this.written = null; // until Redis confirms: a failed or timed-out write is redone whole
    await this.link.eval(
      SYNC,
      [Keys.endpoints(this.node)],
      [before === null ? '1' : '0', String(sets.length / 2), String(HEARTBEAT_TTL_MS), ...sets, ...removals],
    );
    this.written = now;
  }

  /** Every endpoint session on a live node. Rejects when Redis is away. */
  async all(): Promise<ClusterEndpoint[]> {
    const reply = await this.link.eval(ALL, [Keys.nodes], [Keys.nodePrefix, Keys.endpoints('')]);
    const flat = Array.isArray(reply) ? (reply as unknown[]) : [];
    const out: ClusterEndpoint[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const entry = entryOf(String(flat[i]), String(flat[i + 1]));
      if (entry !== null) out.push(entry);
    }
    return out.sort((a, b) => a.node.localeCompare(b.node) || a.since - b.since);
  }

  /**
   * An endpoint here presented resumption token `id.secret` of a session this node does not hold: the
   * entry another node lists for it is removed. Resolves with that node's name, or null.
   */
  async takeOver(id: string, secret: string): Promise<string | null> {
    const reply = await this.link.eval(TAKE_OVER, [Keys.nodes], [id, proofOf(secret), this.node, Keys.endpoints('')]);
    return typeof reply === 'string' ? reply : null;
  }
}
