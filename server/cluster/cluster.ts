/**
 * The cluster as one node sees it: which nodes are alive, where each listens, how loaded it is, and which
 * node owns a publication now. Several `underpass server` processes started with the same `--cluster
 * redis://…` act as one service through it (PROTOCOL.md "Cluster state in Redis"); a server started
 * without `--cluster` sees a cluster of one (local-cluster.ts), so nothing else has to ask which it is.
 *
 * This is the contract the assignment and node-to-node relay code is written against: names here stay.
 */
import type { ClusterEndpoint } from './endpoint-directory';

/** A live node: its name (`--node`), where endpoints and other nodes reach it, and its load now. */
export interface NodeInfo {
  name: string;
  /** HOST:PORT endpoints and nodes dial (`--advertise`, else the address it listens on). */
  advertise: string;
  /** Endpoint sessions connected to it. */
  sessions: number;
  /** Tunnels open through it. */
  tunnels: number;
  /** What least-load assignment compares: sessions plus tunnels. */
  load: number;
  /** Proxy sessions on it, by account (affinity sends an account's redirectors where its proxies are). */
  proxies: Record<string, number>;
}

/**
 * Who serves a publication: the node whose proxy session published it last, and the epoch of that claim.
 * Every claim takes the next epoch, so a newer owner always wins over a stale one and a node coming
 * back with an older epoch cannot take an entry back.
 */
export interface Ownership {
  node: string;
  epoch: number;
}

export interface ClusterView {
  /** This node's name (`--node`; `local` without a cluster). */
  readonly node: string;
  /** Whether the shared state is reachable now; when false, only what this node holds itself works. */
  readonly available: boolean;
  /** The live nodes, this one included (the nodes whose heartbeat has not expired). */
  nodes(): Promise<NodeInfo[]>;
  /**
   * The live owner of `publicationId` (`ACCOUNT/NAME`), or null when nobody serves it or its owner's
   * heartbeat expired. Rejects with ClusterUnavailableError while the shared state is unreachable.
   */
  ownerOf(publicationId: string): Promise<Ownership | null>;
  /**
   * The credential nodes present to one another (a bearer secret, base64url): derived from the
   * cluster's shared secret, so every node of one cluster has the same one, and no endpoint token is it.
   */
  nodeSecret(): string;
  /**
   * Every endpoint session of the cluster with the node it is on (the endpoint directory), this node's
   * included. Rejects with ClusterUnavailableError while the shared state is unreachable.
   */
  endpoints(): Promise<ClusterEndpoint[]>;
}

/**
 * What the server itself does with its cluster, beyond what it reads: it says which publications a proxy
 * session of its own serves (the cluster claims and releases them with their epochs) and stops it.
 */
export interface Membership extends ClusterView {
  /** A proxy session here (`session`, for logs) serves `publicationId` from now on. */
  claim(publicationId: string, session: string): void;
  /** No proxy session here serves `publicationId` any more. */
  release(publicationId: string): void;
  /**
   * An endpoint presented the resumption token (`id`, `secret`) of a session this node does not hold: the
   * entry another node's directory has for it moves here (it is removed there; this node lists its new
   * session at its next beat).
   */
  adopt(id: string, secret: string): void;
  /**
   * The node's listener is up. Only then does a node beat: a heartbeat is what makes other nodes send
   * endpoints to it and dial it, and before it listens its address is not known, or not yet answered.
   */
  listening(): void;
  stop(): Promise<void>;
}
