/**
 * Assignment (seed 000 figures 5 and 6): the node an endpoint reaches first may send it to another when
 * it opens its session (`GET /v1/session` answered `UP_ERR_MOVED` with the node's address; the endpoint
 * dials there once, and is never sent on from there). In order:
 *
 * 1. the operator's placement table (`--placement FILE`, placement.ts), when a line matches;
 * 2. affinity: a redirector whose account's tunnels this node last relayed to another node goes to that
 *    node, so that a proxy and the redirectors that use it tend to meet on one node and stop crossing;
 * 3. least load: the live node with the least load (sessions plus tunnels), when this node's is higher.
 *
 * An endpoint resuming a session this node holds always stays. Every decision that moves an endpoint is
 * logged here, and by the endpoint when it follows.
 */
import type { Logger } from '../../runtime/log';
import type { ClusterView, NodeInfo } from './cluster';
import { place, type PlacementRule } from './placement';

/** Who asks for a session, as far as assignment cares. */
export interface Arrival {
  account: string;
  /** The publications a proxy announced in its hello (none for a redirector). */
  publishes: string[];
}

/** Where an endpoint goes, and why, when not here. */
export interface Move {
  node: NodeInfo;
  why: string;
}

/**
 * How long a move this node made counts towards its target's load: until the target's own count (its
 * heartbeat into the shared state) has had time to include the endpoint. Without it, endpoints arriving
 * in a burst would all be sent to the node that looked least loaded at the start of the burst.
 */
const MOVE_COUNTS_MS = 1_500;

export class Assignment {
  /** The node each account's relayed tunnels went to last (affinity). */
  private readonly relayedTo = new Map<string, string>();
  /** Endpoints sent to each node lately, with when: the load the shared state does not show yet. */
  private readonly sent = new Map<string, number[]>();

  constructor(
    private readonly cluster: ClusterView,
    private readonly rules: readonly PlacementRule[],
    /** This node's load now (its sessions and tunnels), fresher than its last heartbeat. */
    private readonly ownLoad: () => number,
    private readonly log: Logger,
  ) {}

  /** A tunnel of `account` was relayed to `node`: that account's redirectors belong there. */
  relayed(account: string, node: string): void {
    this.relayedTo.set(account, node);
  }

  /** Where an endpoint arriving here should be instead, or null: it stays. */
  async decide(arrival: Arrival): Promise<Move | null> {
    if (!this.cluster.available) return null;
    let nodes: NodeInfo[];
    try {
      nodes = await this.cluster.nodes();
    } catch {
      return null; // the shared state went away meanwhile: this node serves it
    }
    const self = this.cluster.node;
    const placed = place(this.rules, arrival.account, arrival.publishes);
    if (placed !== null) {
      const target = nodes.find((n) => n.name === placed.rule.node);
      const why = `placement line ${placed.rule.line} ('${placed.rule.pattern} ${placed.rule.node}') matches ${placed.subject}`;
      if (target !== undefined) return target.name === self ? null : this.moving(target, arrival, why);
      this.log.warn(`${why}, but node ${placed.rule.node} is not alive: placing by load`, {
        account: arrival.account,
      });
    }
    if (arrival.publishes.length === 0) {
      const affine = nodes.find((n) => n.name === this.relayedTo.get(arrival.account));
      if (affine !== undefined && affine.name !== self)
        return this.moving(affine, arrival, `its account's tunnels go to node ${affine.name}`);
    }
    const loads = nodes.map((n) => ({
      node: n,
      load: n.name === self ? this.ownLoad() : n.load + this.recent(n.name),
    }));
    const mine = loads.find((l) => l.node.name === self)?.load ?? this.ownLoad();
    let least: { node: NodeInfo; load: number } | undefined;
    for (const l of loads) {
      if (least === undefined || l.load < least.load || (l.load === least.load && l.node.name < least.node.name))
        least = l;
    }
    if (least === undefined || least.node.name === self || least.load >= mine) return null;
    return this.moving(least.node, arrival, `least load: node ${least.node.name} has ${least.load}, this one ${mine}`);
  }

  private moving(node: NodeInfo, arrival: Arrival, why: string): Move {
    const now = Date.now();
    const times = (this.sent.get(node.name) ?? []).filter((t) => now - t < MOVE_COUNTS_MS);
    times.push(now);
    this.sent.set(node.name, times);
    this.log.info(`sending an endpoint to node ${node.name} at ${node.advertise}: ${why}`, {
      account: arrival.account,
      ...(arrival.publishes.length > 0 ? { publishes: arrival.publishes.join(',') } : {}),
    });
    return { node, why };
  }

  /** Endpoints this node sent to `node` that its heartbeat may not count yet. */
  private recent(node: string): number {
    const now = Date.now();
    return (this.sent.get(node) ?? []).filter((t) => now - t < MOVE_COUNTS_MS).length;
  }
}
