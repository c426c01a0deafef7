/**
 * Who owns each publication across the cluster, and the epoch rules that keep that honest:
 *
 * - A claim (a proxy published on this node) always wins and takes the next epoch: a stale owner, a
 *   dead node's entry or a session that has not noticed it is gone, never blocks a new one.
 * - A node re-asserts what it holds whenever Redis comes back, only with the epoch it last had: an entry
 *   another node claimed meanwhile (a higher epoch) is lost, not taken back, and the node drops it.
 * - A claim made while Redis was away has no epoch yet; on return it wins only over an entry that is
 *   free or that another node claimed earlier than this one was made (the `at` times, in ms).
 * - A release frees an entry only when this node still owns it at its epoch; the epoch stays, so epochs
 *   of one publication only ever grow.
 *
 * Each script runs atomically in Redis. Scripts build node keys from names they read; every key shares
 * one hash tag (keys.ts), so that stays within one slot on a Redis Cluster.
 */
import { ClusterUnavailableError } from '../../protocol/errors';
import type { Ownership } from './cluster';
import { Keys } from './keys';
import type { RedisLink } from './redis-link';

const CLAIM = `
local epoch = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0') + 1
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', epoch, 'session', ARGV[2], 'at', ARGV[3])
redis.call('PUBLISH', KEYS[2], cjson.encode({type = 'claim', id = ARGV[4], node = ARGV[1], epoch = epoch}))
return epoch`;

const REASSERT = `
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch', 'at')
local curEpoch = tonumber(cur[2] or '0')
local mine = tonumber(ARGV[3])
if mine > 0 and curEpoch ~= mine then return -curEpoch end
if mine == 0 and cur[1] and cur[1] ~= ARGV[1] and tonumber(cur[3] or '0') > tonumber(ARGV[4]) then return -curEpoch end
local epoch = curEpoch + 1
redis.call('HSET', KEYS[1], 'node', ARGV[1], 'epoch', epoch, 'session', ARGV[2], 'at', ARGV[4])
redis.call('PUBLISH', KEYS[2], cjson.encode({type = 'claim', id = ARGV[5], node = ARGV[1], epoch = epoch}))
return epoch`;

const RELEASE = `
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if cur[1] == ARGV[1] and cur[2] == ARGV[2] then redis.call('HDEL', KEYS[1], 'node', 'session') return 1 end
return 0`;

const OWNER_OF = `
local cur = redis.call('HMGET', KEYS[1], 'node', 'epoch')
if not cur[1] then return false end
if redis.call('EXISTS', ARGV[1] .. cur[1]) == 0 then return false end
return {cur[1], cur[2]}`;

/** What this node holds: the epoch of its claim (0 while Redis has not seen it yet) and when it was made. */
interface Claim {
  session: string;
  epoch: number;
  at: number;
}

export class Ownerships {
  private readonly claims = new Map<string, Claim>();
  /** Releases Redis did not take while it was away, sent again when it is back. */
  private readonly unreleased = new Map<string, number>();
  /** The newest claim by another node seen for each publication, for a claim of ours still under way. */
  private readonly seen = new Map<string, Ownership>();

  constructor(
    private readonly link: RedisLink,
    private readonly node: string,
    /** A publication this node held was claimed by another node: the local holder is stale. */
    private readonly onLost: (id: string, by: Ownership) => void,
  ) {}

  /** How many publications this node owns. */
  get size(): number {
    return this.claims.size;
  }

  /**
   * Records that a proxy session here (`session`, for logs) serves `id`: claims it in Redis, or, when
   * Redis is away, keeps the claim to re-assert on its return. Resolves with the epoch (0: not yet seen).
   */
  async claim(id: string, session: string): Promise<number> {
    const claim: Claim = { session, epoch: 0, at: Date.now() };
    this.claims.set(id, claim);
    this.unreleased.delete(id);
    try {
      const epoch = Number(
        await this.link.eval(CLAIM, [Keys.owner(id), Keys.events], [this.node, session, String(claim.at), id]),
      );
      if (this.claims.get(id) !== claim) return epoch;
      claim.epoch = epoch;
      this.checkSeen(id, claim);
      return epoch;
    } catch (e) {
      if (e instanceof ClusterUnavailableError) return 0;
      throw e;
    }
  }

  /** No proxy session here serves `id` any more. */
  async release(id: string): Promise<void> {
    const claim = this.claims.get(id);
    if (claim === undefined) return;
    this.claims.delete(id);
    if (claim.epoch === 0) return;
    await this.sendRelease(id, claim.epoch);
  }

  private async sendRelease(id: string, epoch: number): Promise<void> {
    try {
      await this.link.eval(RELEASE, [Keys.owner(id)], [this.node, String(epoch)]);
      this.unreleased.delete(id);
    } catch (e) {
      if (!(e instanceof ClusterUnavailableError)) throw e;
      this.unreleased.set(id, epoch);
    }
  }

  /** The live owner of `id`, or null. Rejects with ClusterUnavailableError while Redis is away. */
  async ownerOf(id: string): Promise<Ownership | null> {
    const reply = await this.link.eval(OWNER_OF, [Keys.owner(id)], [Keys.nodePrefix]);
    if (!Array.isArray(reply)) return null;
    const [node, epoch] = reply as unknown[];
    return typeof node === 'string' ? { node, epoch: Number(epoch) } : null;
  }

  /** The epoch this node holds `id` at, if it holds it (0: claimed while Redis was away). */
  epochOf(id: string): number | undefined {
    return this.claims.get(id)?.epoch;
  }

  /** Redis is back: send the releases it missed, then re-assert every claim under the rules above. */
  async reassertAll(): Promise<void> {
    for (const [id, epoch] of [...this.unreleased]) await this.sendRelease(id, epoch);
    for (const [id, claim] of [...this.claims]) {
      const reply = Number(
        await this.link.eval(
          REASSERT,
          [Keys.owner(id), Keys.events],
          [this.node, claim.session, String(claim.epoch), String(claim.at), id],
        ),
      );
      if (this.claims.get(id) !== claim) continue;
      if (reply > 0) {
        claim.epoch = reply;
        continue;
      }
      this.claims.delete(id);
      this.onLost(id, { node: (await this.ownerOf(id))?.node ?? 'another node', epoch: -reply });
    }
  }

  /** Another node's claim, as the events channel told it. */
  handleClaim(id: string, node: string, epoch: number): void {
    if (node === this.node) return;
    if (epoch > (this.seen.get(id)?.epoch ?? 0)) this.seen.set(id, { node, epoch });
    const claim = this.claims.get(id);
    if (claim !== undefined) this.checkSeen(id, claim);
  }

  private checkSeen(id: string, claim: Claim): void {
    const newer = this.seen.get(id);
    if (claim.epoch === 0 || newer === undefined || newer.epoch <= claim.epoch) return;
    this.claims.delete(id);
    this.onLost(id, newer);
  }
}
