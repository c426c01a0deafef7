/**
 * Every Redis key and channel of a cluster (PROTOCOL.md "Cluster state in Redis" says what each holds,
 * who writes it and how long it lives). They share the hash tag `{underpass}`, so that on a Redis
 * Cluster every key sits in one slot and a script may touch several at once.
 */
const PREFIX = '{underpass}:';

export const Keys = {
  /** String: the cluster's secret, hex; service keys and the node credential derive from it. */
  secret: `${PREFIX}secret`,
  /** String: the token of account `default`. */
  token: `${PREFIX}token`,
  /** String: the `--accounts` file's text, as the node that last started with one wrote it. */
  accounts: `${PREFIX}accounts`,
  /** String: DATA_DIR/tokens.json's text (issued tokens), as the node where it last changed wrote it. */
  tokens: `${PREFIX}tokens`,
  /** Hash: publication id → JSON {account, name, port, createdAt}. */
  publications: `${PREFIX}publications`,
  /** Set: names of nodes that have beaten once (the live ones also have `node()`). */
  nodes: `${PREFIX}nodes`,
  /** Prefix of `node()`, for scripts that build the key from a name they read. */
  nodePrefix: `${PREFIX}node:`,
  /** String with a TTL: a node's heartbeat, JSON {advertise, sessions, tunnels, proxies}. */
  node: (name: string): string => `${PREFIX}node:${name}`,
  /**
   * Hash with the heartbeat's TTL: a node's endpoint sessions (endpoint-directory.ts), endpoint id → JSON
   * {id, account, role, publishes, remote, since, proof}, for each connected session.
   */
  endpoints: (name: string): string => `${PREFIX}endpoints:${name}`,
  /** Hash: who owns a publication, {node, epoch, session, at}; `epoch` outlives every owner. */
  owner: (publicationId: string): string => `${PREFIX}owner:${publicationId}`,
  /** Pub/sub channel: what changed (a claim, a publication, the issued tokens). */
  events: `${PREFIX}events`,
} as const;

/** How often a node beats (ms). */
export const HEARTBEAT_MS = 1_000;
/** How long a heartbeat lives: a node silent for this long is taken for dead (ms). */
export const HEARTBEAT_TTL_MS = 5_000;
