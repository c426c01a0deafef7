/**
 * Assignment (seed 000 figures 5 and 6): the node an endpoint reaches first may send it to another when
 * it opens its session (`GET /v1/session` answered `UP_ERR_MOVED` with the node's address; the endpoint
 * dials there once, and is never sent on from there). In order:
 *
 * 1. the operator's placement table (`--placement FILE`, placement.ts), when a line matches;
 * 2. affinity: a redirector whose account's tunnels this node last relayed to another node goes to that
 *    node; else one whose account has proxies goes to the node with most of them (the heartbeats say,
 *    from the endpoint directory), and stays when that is this node; so that a proxy and the
 *    redirectors that use it tend to meet on one node and stop crossing;
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
 * Endpoints this node sent to a node count towards that node's load until its heartbeat shows them
 * (its load reaches what it was when the first of them was sent, plus them), or for this long at most
 * (ms). Without it, endpoints arriving in a burst would all go to the node that looked least loaded at
 * the start of the burst; counting them as well as the heartbeat would count them twice.
 */
const SENT_COUNTS_MS = 5_000;

/** Endpoints sent to one node whose heartbeat may not show them yet. */
interface Sent {
  /** The node's load as this node saw it when the first of them was sent. */
  baseline: number;
  count: number;
  since: number;
}

/** The live node with the most proxy sessions of `account` (ties: the first name), if any has one. */
function homeOf(nodes: readonly NodeInfo[], account: string): NodeInfo | undefined {
  let home: NodeInfo | undefined;
  for (const n of nodes) {
    const count = n.proxies[account] ?? 0;
    if (count > 0 && (home === undefined || count > (home.proxies[account] ?? 0))) home = n;
  }
  return home;
}

export class Assignment {
  /** The node each account's relayed tunnels went to last (affinity). */
  private readonly relayedTo = new Map<string, string>();
  /** Endpoints sent to each node lately: the load the shared state may not show yet. */
  private readonly sent = new Map<string, Sent>();

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
      const home = homeOf(nodes, arrival.account);
      if (home !== undefined && home.name === self) return null;
      if (home !== undefined && affine === undefined)
        return this.moving(home, arrival, `its account's proxies are on node ${home.name}`);
    }
    const loads = nodes.map((n) => ({
      node: n,
      load: n.name === self ? this.ownLoad() : this.loadOf(n),
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
    const sent = this.sent.get(node.name);
    if (sent === undefined) this.sent.set(node.name, { baseline: node.load, count: 1, since: Date.now() });
    else sent.count += 1;
    this.log.info(`sending an endpoint to node ${node.name} at ${node.advertise}: ${why}`, {
      account: arrival.account,
      ...(arrival.publishes.length > 0 ? { publishes: arrival.publishes.join(',') } : {}),
    });
    return { node, why };
  }

  /** `node`'s load with the endpoints this node sent it that its heartbeat does not show yet. */
  private loadOf(node: NodeInfo): number {
    const sent = this.sent.get(node.name);
    if (sent === undefined) return node.load;
    const expected = sent.baseline + sent.count;
    if (node.load >= expected || Date.now() - sent.since > SENT_COUNTS_MS) {
      this.sent.delete(node.name);
      return node.load;
    }
    return expected;
  }
}
