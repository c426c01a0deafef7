/**
 * A node of a cluster whose shared state is in Redis (`underpass server --cluster URL --node NAME`).
 *
 * The server's own directory stays in memory and synchronous (server/directory.ts): it says which proxy
 * session *here* serves a publication, and a tunnel to such a publication never waits on Redis, so a
 * Redis outage cannot stall the tunnels a node serves itself. What other nodes must know — who owns a
 * publication (with its epoch), which nodes live, their address and load — is written to Redis as it
 * changes, and what this node must know of the others is read from Redis when asked (`ownerOf`,
 * `nodes`) or pushed to it on the events channel (claims that take a publication away, new
 * publications). Making the directory's calls async instead would have put a Redis round trip on every
 * tunnel and turned every Redis hiccup into refused tunnels.
 *
 * When Redis goes away the node keeps serving what it holds; what needs another node is refused with
 * ClusterUnavailableError. When Redis is back the node re-asserts its claims (ownership.ts has the epoch
 * rules), beats again, and re-reads the publications it may have missed.
 */
import crypto from 'node:crypto';
import { EventEmitter } from 'node:events';
import { z } from 'zod';
import { ClusterUnavailableError } from '../../protocol/errors';
import type { Logger } from '../../runtime/log';
import type { ClusterConfig } from '../config';
import type { Membership, NodeInfo, Ownership } from './cluster';
import { EndpointDirectory, type ClusterEndpoint } from './endpoint-directory';
import { HEARTBEAT_MS, HEARTBEAT_TTL_MS, Keys } from './keys';
import { proxiesByAccount, type LocalState } from './local-cluster';
import { Ownerships } from './ownership';
import { decodeJson, type RedisLink } from './redis-link';
import { storedOf } from './shared-state';

/** Beats, and answers whether the heartbeat was still there (if not, the endpoint directory went with it). */
const BEAT = `
local alive = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return alive`;

const NODES = `
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local beat = redis.call('GET', ARGV[1] .. name)
  if beat then table.insert(out, name) table.insert(out, beat) else redis.call('SREM', KEYS[1], name) end
end
return out`;

/** What a heartbeat carries. */
const Beat = z.object({
  advertise: z.string(),
  sessions: z.number(),
  tunnels: z.number(),
  // A node of an earlier version beats without `proxies`: it simply attracts no redirector by them.
  proxies: z.record(z.string(), z.number()).catch({}),
});
type Beat = z.infer<typeof Beat>;

export class RedisCluster extends EventEmitter implements Membership {
  readonly node: string;
  private readonly ownerships: Ownerships;
  private readonly directory: EndpointDirectory;
  private readonly credential: string;
  private timer: NodeJS.Timeout | null = null;
  private beating = false;
  /** Whether the node listens yet (its heartbeat waits for it). */
  private reachable = false;

  constructor(
    private readonly link: RedisLink,
    private readonly config: ClusterConfig,
    clusterSecret: Buffer,
    private readonly state: LocalState,
    private readonly log: Logger,
  ) {
    super();
    this.node = config.node;
    this.credential = crypto
      .createHmac('sha256', clusterSecret)
      .update('node-credential/v1')
      .digest()
      .toString('base64url');
    this.ownerships = new Ownerships(link, this.node, (id, by) => this.emit('lost', id, by));
    this.directory = new EndpointDirectory(link, this.node);
    link.on('down', () =>
      this.log.warn(`lost the cluster's Redis (${config.url}): serving only what this node holds until it is back`, {
        node: this.node,
      }),
    );
    link.on('up', () => void this.rejoin());
  }

  get available(): boolean {
    return this.link.available;
  }

  /** Subscribes to the events channel; the heartbeat starts once the node listens (`listening`). */
  async start(): Promise<void> {
    await this.link.subscribe(Keys.events, (message) => this.handleEvent(message));
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_MS);
    this.timer.unref();
  }

  listening(): void {
    this.reachable = true;
    void this.beat();
  }

  async stop(): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer);
    this.emit('stop');
    // A clean stop leaves at once rather than a heartbeat's lifetime later; what it owned is then free.
    await this.link
      .eval(`redis.call('DEL', KEYS[1], KEYS[2])`, [Keys.node(this.node), Keys.endpoints(this.node)], [])
      .catch(() => undefined);
    await this.link.close();
  }

  async nodes(): Promise<NodeInfo[]> {
    const reply = await this.link.eval(NODES, [Keys.nodes], [Keys.nodePrefix]);
    const flat = Array.isArray(reply) ? (reply as unknown[]) : [];
    const nodes: NodeInfo[] = [];
    for (let i = 0; i + 1 < flat.length; i += 2) {
      const beat = decodeJson(Beat, String(flat[i + 1]));
      if (beat !== null) nodes.push({ name: String(flat[i]), ...beat, load: beat.sessions + beat.tunnels });
    }
    return nodes.sort((a, b) => a.name.localeCompare(b.name));
  }

  async ownerOf(publicationId: string): Promise<Ownership | null> {
    if (!this.link.available)
      throw new ClusterUnavailableError(
        `node ${this.node} cannot reach the cluster's Redis: only publications it holds itself are served until it is back`,
      );
    return this.ownerships.ownerOf(publicationId);
  }

  nodeSecret(): string {
    return this.credential;
  }

  async endpoints(): Promise<ClusterEndpoint[]> {
    if (!this.link.available)
      throw new ClusterUnavailableError(
        `node ${this.node} cannot reach the cluster's Redis: it knows only its own endpoints until it is back`,
      );
    return this.directory.all();
  }

  adopt(id: string, secret: string): void {
    if (!this.link.available) return; // the dead node's entry expires with its heartbeat anyway
    this.directory.takeOver(id, secret).then(
      (from) => {
        if (from !== null) this.log.info(`an endpoint of node ${from} came here: its directory entry moved`, { from });
      },
      (e: unknown) => this.log.debug(`cannot move an endpoint's directory entry: ${String(e)}`),
    );
  }

  claim(publicationId: string, session: string): void {
    this.ownerships.claim(publicationId, session).then(
      (epoch) =>
        epoch === 0
          ? this.log.warn('published while the cluster is away: the claim waits for Redis', {
              publication: publicationId,
            })
          : this.log.debug('claimed', { publication: publicationId, epoch }),
      (e: unknown) => this.log.error(`cannot claim ${publicationId}: ${String(e)}`),
    );
  }

  release(publicationId: string): void {
    this.ownerships
      .release(publicationId)
      .catch((e: unknown) => this.log.error(`cannot release ${publicationId}: ${String(e)}`));
  }

  /** The epoch this node holds a publication at (tests and logs). */
  epochOf(publicationId: string): number | undefined {
    return this.ownerships.epochOf(publicationId);
  }

  private async beat(): Promise<void> {
    if (this.beating || !this.reachable) return;
    this.beating = true;
    const endpoints = this.state.endpoints();
    const beat: Beat = {
      advertise: this.config.advertise ?? this.state.advertise(),
      sessions: this.state.sessions(),
      tunnels: this.state.tunnels(),
      proxies: proxiesByAccount(endpoints),
    };
    try {
      const alive = await this.link.eval(
        BEAT,
        [Keys.node(this.node), Keys.nodes],
        [JSON.stringify(beat), String(HEARTBEAT_TTL_MS), this.node],
      );
      if (Number(alive) === 0) this.directory.rewrite();
      await this.directory.sync(endpoints);
    } catch {
      // RedisLink said it once ('down'); the next beat tries again.
    } finally {
      this.beating = false;
    }
  }

  /** Redis is back: re-assert every claim, then let the server re-read what it may have missed. */
  private async rejoin(): Promise<void> {
    try {
      this.directory.rewrite();
      await this.beat();
      await this.ownerships.reassertAll();
      this.emit('resync');
      this.log.info(`the cluster's Redis is back: re-asserted ${this.ownerships.size} publication(s)`, {
        node: this.node,
      });
    } catch (e) {
      this.log.warn(`rejoining the cluster failed (${String(e)}); trying again when Redis answers`);
    }
  }

  private handleEvent(message: string): void {
    let event: { type?: unknown; id?: unknown; node?: unknown; epoch?: unknown; publication?: unknown };
    try {
      event = JSON.parse(message) as typeof event;
    } catch {
      return;
    }
    if (event.type === 'claim' && typeof event.id === 'string' && typeof event.node === 'string')
      this.ownerships.handleClaim(event.id, event.node, Number(event.epoch));
    else if (event.type === 'tokens' || event.type === 'accounts') this.emit(event.type);
    else if (event.type === 'publication') {
      const stored = storedOf(event.publication);
      if (stored !== null) this.emit('publication', stored);
    }
  }
}
