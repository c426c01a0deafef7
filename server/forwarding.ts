/**
 * Forwarding mode: a redirector's CONNECT marked `underpass-forward` names a plain destination, and the
 * server dials it itself — nothing of ours runs there. Strictly allow-listed: `--forward-allow RULE`
 * (protocol/forward-rules.ts; `ACCOUNT=RULE` for one account), nothing by default. A name is resolved
 * here, so names only this side can resolve work. The server's own loopback, link-local (the cloud
 * metadata service) and unspecified addresses are dialled only when an address rule names them, however
 * a name resolves. Each refusal is one line for the client and one log line (and an audit line) for the
 * operator. The destination sees the server's address, as it would for any proxy.
 */
import crypto from 'node:crypto';
import dns from 'node:dns/promises';
import type http2 from 'node:http2';
import net from 'node:net';
import { ConfigError, ForbiddenError, TargetRefusedError } from '../protocol/errors';
import { isGuardedAddress, parseForwardRule, tryMatchRule, type ForwardRule } from '../protocol/forward-rules';
import { label } from '../protocol/names';
import { Headers } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import type { Metrics } from '../runtime/metrics';
import { ResumableStream } from '../runtime/resumable-stream';
import { dialTarget } from '../runtime/dial';
import { splice } from '../runtime/splice';
import type { EndpointSession } from './endpoints';
import type { Responder } from './respond';

/** A rule of `--forward-allow`, for every account or for one. */
export interface AllowRule {
  account: string | null;
  rule: ForwardRule;
}

/** Parses `--forward-allow [ACCOUNT=]RULE`; throws ConfigError saying what is wrong. */
export function parseAllowRule(text: string): AllowRule {
  const eq = text.indexOf('=');
  if (eq < 0) return { account: null, rule: parseForwardRule(text) };
  return { account: label(text.slice(0, eq), 'account name'), rule: parseForwardRule(text.slice(eq + 1)) };
}

/** How long dialling a forwarded destination may take (ms). */
const DIAL_TIMEOUT_MS = 10_000;

export class Forwarder {
  constructor(
    private readonly allow: readonly AllowRule[],
    private readonly responder: Responder,
    private readonly log: Logger,
    private readonly metrics: Metrics | undefined,
    private readonly audit: (fields: Record<string, unknown>) => void,
  ) {}

  private rulesOf(account: string): ForwardRule[] {
    return this.allow.filter((a) => a.account === null || a.account === account).map((a) => a.rule);
  }

  private refuse(
    stream: http2.ServerHttp2Stream,
    account: string,
    target: string,
    error: ForbiddenError | TargetRefusedError,
  ): void {
    this.log.warn(`refused a forward to ${target}: ${error.message}`, { account });
    this.audit({ event: 'forward.refused', account, target, reason: error.message });
    this.metrics?.tunnelOpened(error.code);
    this.responder.refuse(stream, error.code, error.message);
  }

  /** Dials `host:port` for `account` and joins it to the redirector's stream, or refuses in one line. */
  async open(
    stream: http2.ServerHttp2Stream,
    account: string,
    host: string,
    port: number,
    endpoint: () => EndpointSession,
  ): Promise<void> {
    const target = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const rules = this.rulesOf(account);
    if (tryMatchRule(rules, host, port) === null) {
      this.refuse(
        stream,
        account,
        target,
        new ForbiddenError(
          `${target} is not a forwarding destination this server allows (its operator's --forward-allow)`,
        ),
      );
      return;
    }
    let address = host;
    if (net.isIP(host) === 0) {
      try {
        address = (await dns.lookup(host)).address;
      } catch (e) {
        this.refuse(
          stream,
          account,
          target,
          new TargetRefusedError(`the server cannot resolve ${host} (${(e as NodeJS.ErrnoException).code ?? 'error'})`),
        );
        return;
      }
    }
    // Loopback, link-local and the like only when an address rule names them: a name that resolves there
    // must not turn the server on itself.
    const listed = tryMatchRule(
      rules.filter((r) => r.kind === 'net'),
      address,
      port,
    );
    if (isGuardedAddress(address) && listed === null) {
      this.refuse(
        stream,
        account,
        target,
        new ForbiddenError(
          `${target} is the server's own ${address}: it forwards there only to an address its operator lists`,
        ),
      );
      return;
    }
    dialTarget(address, port, DIAL_TIMEOUT_MS, {
      failed: (reason) =>
        this.refuse(stream, account, target, new TargetRefusedError(`${target} refused the connection (${reason})`)),
      connected: (socket) => {
        if (stream.destroyed || stream.closed) {
          socket.destroy();
          return;
        }
        const id = crypto.randomBytes(12).toString('base64url');
        stream.respond({ ':status': 200, [Headers.tunnelId]: id });
        // The redirector's side outlives its stream for the grace period, as a relayed tunnel's does.
        const leg = new ResumableStream('');
        leg.attach(stream, 0);
        endpoint().tunnels.add(id, leg);
        this.metrics?.tunnelOpened('ok');
        this.log.info('forwarding', { account, target, address });
        splice(leg, socket, undefined, undefined, this.metrics?.meter(target));
      },
    });
  }
}

/** Checks `--forward-allow` values at start: one line naming the bad one. */
export function parseAllowRules(texts: readonly string[]): AllowRule[] {
  try {
    return texts.map(parseAllowRule);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(`--forward-allow: ${e.message}`);
    throw e;
  }
}
