/**
 * The defaults every program and the wire share, in one place. No imports: the CLI shows them in
 * `--help` without loading a program, and each program's config (server/config.ts, proxy/config.ts,
 * redirector/config.ts, runtime/link-config.ts) completes its options from them.
 */

/** The zone pseudo names live under. */
export const DEFAULT_ZONE = 'underpass.internal';
/** The account of the server's own token. */
export const DEFAULT_ACCOUNT = 'default';
/** Interval between keepalive PINGs (ms); a peer silent for two intervals is taken for dead. */
export const KEEPALIVE_MS = 15_000;
/** Longest keepalive interval accepted (ms). */
export const MAX_KEEPALIVE_MS = 3_600_000;
/** How long a dropped session's tunnels wait for it to come back (ms). */
export const GRACE_MS = 30_000;
/** Longest grace period accepted (ms). */
export const MAX_GRACE_MS = 86_400_000;
/** Where the server listens. */
export const DEFAULT_LISTEN = '0.0.0.0:7443';
/** The loopback range the redirector's pseudo addresses come from. */
export const DEFAULT_PSEUDO_NET = '127.77.0.0/16';
/** How an endpoint may reach the server: auto tries TLS, then WebSocket over HTTPS. */
export const TRANSPORT_KINDS = ['auto', 'tls', 'wss'] as const;
export const DEFAULT_TRANSPORT = 'auto';
/** After a direct hop failed, the redirector relays and tries direct again this much later (ms). */
export const DIRECT_RETRY_MS = 60_000;
/** How long the redirector's direct hop may take to reach the proxy's listener, or to hear a PING back (ms). */
export const DIRECT_DEADLINE_MS = 400;
