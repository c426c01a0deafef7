/**
 * The session layer, version 1: what travels over the one HTTP/2 connection each service proxy and each
 * redirector keeps to the tunnel server. Written down in protocol/PROTOCOL.md; this file holds the names.
 *
 * HTTP/2 (Node's own `http2`, over TLS with ALPN `h2`) is the multiplexer: every tunneled TCP connection
 * is one HTTP/2 CONNECT stream (RFC 9113 §8.5) with its own flow-control window, so a stalled reader
 * holds back only its own stream, and opening a tunnel costs one HEADERS frame, not a TCP or TLS handshake.
 */
import { z } from 'zod';
import type { ErrorCode } from './errors';

export const WIRE_VERSION = 1;

/** ALPN protocol id; a peer that does not offer it is not one of ours. */
export const ALPN = 'h2';

/**
 * The TLS 1.3 suites the server prefers, in order, ahead of Node's defaults. AES-128-GCM leads: as strong
 * as needed here and ~10 % cheaper per byte than AES-256 on this path.
 */
export const SERVER_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

export const Paths = {
  /** GET: checks the token, answers {@link SessionInfo}. */
  session: '/v1/session',
  /** GET /v1/names/<pseudo name>: answers {@link NameInfo} or 404. */
  names: '/v1/names/',
  /** POST, long-lived: the service proxy's control stream (NDJSON both ways, see control.ts). */
  control: '/v1/control',
  /** GET /v1/list[?under=SUFFIX]: the publications the token may use, answers {@link NameList}. */
  list: '/v1/list',
  /** GET /v1/direct/<pseudo name>: a ticket for the publication's direct listener, answers {@link DirectOffer}. */
  direct: '/v1/direct/',
  /**
   * POST, held by the server: a proxy's stream in waiting, answered with the next tunnel request of its
   * session (`underpass-tunnel`, `underpass-service-key`) and carrying that tunnel's bytes from then on
   * (PROTOCOL.md §1.2; added within version 1, for servers with the `standby` feature).
   */
  standby: '/v1/standby',
} as const;

export const Headers = {
  /** Wire version the sender speaks; a server refuses other majors with 400. */
  version: 'underpass-version',
  /** On a proxy's CONNECT: which tunnel request this stream answers; on the answer to a redirector's CONNECT: the tunnel's id. */
  tunnelId: 'underpass-tunnel',
  /** On GET /v1/session: the resumption token of the session this endpoint had before its link dropped. */
  resume: 'underpass-resume',
  /** On CONNECT: re-open this tunnel of the resumed session instead of a new one. */
  resumeTunnel: 'underpass-resume-tunnel',
  /** On a resuming CONNECT and its answer: bytes of the tunnel the sender has received, so far. */
  received: 'underpass-received',
  /** On a redirector's CONNECT: optional service key that grants access to another account's publication. */
  serviceKey: 'underpass-service-key',
  /** On a redirector's CONNECT: `1` — the authority is a plain destination the server dials (forwarding mode). */
  forward: 'underpass-forward',
  /** On a node link's stream: the name of the node that opens it (added within version 1). */
  node: 'underpass-node',
  /** On a node link's stream: that node's credential, an HMAC of its name under the cluster's node secret. */
  nodeAuth: 'underpass-node-auth',
  /** On a relayed CONNECT: the account of the redirector the relaying node serves. */
  relayAccount: 'underpass-relay-account',
  /** On a relayed CONNECT: the redirector's address and port as the relaying node saw them. */
  relayClient: 'underpass-relay-client',
  /** On the refusal `UP_ERR_MOVED` of GET /v1/session: HOST:PORT of the node to dial instead. */
  moveTo: 'underpass-node-address',
  /** On GET /v1/session: `1` — the endpoint was sent here by another node, which it must not be sent on from. */
  moved: 'underpass-moved',
  /** On GET /v1/session: the names a proxy publishes (comma-separated), for placement. */
  publishes: 'underpass-publishes',
  /** On a CONNECT to a proxy's direct listener: the ticket the server issued (direct-ticket.ts). */
  directTicket: 'underpass-direct-ticket',
  /** On a refusal: the {@link ErrorCode} of the failure. */
  errorCode: 'underpass-error',
  /** On a refusal: one readable line. */
  errorMessage: 'underpass-error-message',
} as const;

export const ResumeInfo = z.object({
  /** Secret to present as `underpass-resume` on the next GET /v1/session after a drop. */
  token: z.string(),
  /** Whether this session is the one the presented token named, with its tunnels still open. */
  resumed: z.boolean(),
  /** How long the server keeps a dropped session's tunnels for the endpoint to come back (ms). */
  graceMs: z.number(),
});
export type ResumeInfo = z.infer<typeof ResumeInfo>;

/** Answer to GET /v1/session. */
export const SessionInfo = z.object({
  v: z.number().int(),
  account: z.string(),
  /** The zone pseudo names live under, e.g. `underpass.internal`. */
  zone: z.string(),
  /** Present when the server can resume this session after a dropped link (PROTOCOL.md "Resumption"). */
  resume: ResumeInfo.optional(),
  /** A cluster node's name (`--node`): which node of the service the endpoint is on (added within version 1). */
  node: z.string().optional(),
  /**
   * What this server does beyond version 1 as first written (added within version 1; an endpoint
   * ignores names it does not know): `standby`, a proxy may hold streams for its next tunnels (Paths.standby).
   */
  features: z.array(z.string().max(64)).max(32).optional(),
});
export type SessionInfo = z.infer<typeof SessionInfo>;

/** Answer to GET /v1/names/<name>. */
export const NameInfo = z.object({
  name: z.string(),
  host: z.string(),
  port: z.number().int().min(1).max(65535),
  online: z.boolean(),
  /** Present and true when the proxy holding it now has a direct listener (added within version 1). */
  direct: z.boolean().optional(),
});
export type NameInfo = z.infer<typeof NameInfo>;

/** Answer to GET /v1/direct/<name>: where the proxy's direct listener is, what to pin, and a ticket. */
export const DirectOffer = z.object({
  addresses: z.array(z.string().max(64)).min(1).max(8),
  fingerprint: z.string().max(128),
  ticket: z.string().max(1024),
  /** When the ticket stops opening tunnels (ms since the epoch). */
  expiresAt: z.number().int(),
});
export type DirectOffer = z.infer<typeof DirectOffer>;

/** At most this many names in one list answer: a hierarchy's listing, not a dump of the server. */
export const MAX_LISTED = 1000;

export const NameList = z.object({ names: z.array(NameInfo).max(MAX_LISTED), truncated: z.boolean() });
export type NameList = z.infer<typeof NameList>;

/** Whether pseudo name `host` lies under `suffix` (is it, or ends with `.suffix`); '' is everything. */
export function isUnder(host: string, suffix: string): boolean {
  return suffix === '' || host === suffix || host.endsWith(`.${suffix}`);
}

/** HTTP status a refusal travels with, per error code. */
export const StatusOf: Partial<Record<ErrorCode, number>> = {
  UP_ERR_AUTH: 401,
  UP_ERR_FORBIDDEN: 403,
  UP_ERR_NOT_FOUND: 404,
  UP_ERR_BAD_MESSAGE: 400,
  UP_ERR_PROTOCOL: 400,
  UP_ERR_LIMIT: 429,
  UP_ERR_TARGET_REFUSED: 502,
  UP_ERR_OFFLINE: 503,
  UP_ERR_CLUSTER_UNAVAILABLE: 503,
  UP_ERR_MOVED: 307,
  UP_ERR_UNREACHABLE: 504,
};
