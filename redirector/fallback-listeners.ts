/**
 * The redirector's doors for clients the hook cannot enter (issue 12; seed 000's "local routing agent"):
 * the DNS responder (`--dns`), the SOCKS5 listener (`--socks`) and the HTTP CONNECT listener
 * (`--http-proxy`). This module starts and stops them and says where they are, for the hello reply that
 * `hook-run` reads before it runs a program it cannot hook.
 *
 * The DNS responder is on by default (`auto`): on port 53 of the pseudo range's reserved address
 * (dns-responder.ts says which and why), because a private resolv.conf can name no other port. Binding
 * port 53 needs root (or a lowered net.ipv4.ip_unprivileged_port_start); when it cannot be had, `auto`
 * logs one line and the redirector runs without it. An explicit `--dns HOST:PORT` that cannot be bound
 * stops the redirector at start, as a taken `--socks` or `--http-proxy` port does; one on another port
 * than 53 runs beside the default one, which `hook-run` still needs.
 */
import type { ErrorReply, HelloListeners, ResolveReply } from '../protocol/ipc';
import type { HostPort } from '../protocol/names';
import type { Logger } from '../runtime/log';
import { defaultResponderAddress, DnsResponder } from './dns-responder';
import { httpProxyConnections } from './http-connect-listener';
import { LoopbackListener, parseLoopbackAddress } from './loopback-listener';
import { socksConnections } from './socks-listener';
import type { TunnelDialer } from './tunnel-dialer';

export interface FallbackOptions {
  /** `auto`: the reserved address on port 53 when it can be bound; null: no responder. */
  dns: HostPort | 'auto' | null;
  socks: HostPort | null;
  httpProxy: HostPort | null;
}

/** The three flags as given (`--dns` defaults to `auto`; `off` turns the responder off); throws ConfigError. */
export function fallbackOptions(flags: { dns?: string; socks?: string; httpProxy?: string }): FallbackOptions {
  const dns = flags.dns ?? 'auto';
  return {
    dns: dns === 'auto' ? 'auto' : dns === 'off' ? null : parseLoopbackAddress(dns, '--dns'),
    socks: flags.socks === undefined ? null : parseLoopbackAddress(flags.socks, '--socks'),
    httpProxy: flags.httpProxy === undefined ? null : parseLoopbackAddress(flags.httpProxy, '--http-proxy'),
  };
}

export interface FallbackDependencies {
  dialer: TunnelDialer;
  resolve: (name: string) => Promise<ResolveReply | ErrorReply>;
  zone: () => string | null;
  /** The pseudo range, host-order base and prefix length. */
  pseudoNet: { base: number; prefix: number };
  logger: Logger;
}

export class FallbackListeners {
  private readonly dns: DnsResponder[] = [];
  private socks: LoopbackListener | null = null;
  private httpProxy: LoopbackListener | null = null;

  constructor(
    private readonly options: FallbackOptions,
    private readonly deps: FallbackDependencies,
  ) {}

  /** Starts what was asked for; rejects with ConfigError (and leaves nothing open) when one cannot listen. */
  async start(): Promise<void> {
    const { dialer, logger } = this.deps;
    try {
      await this.startDns();
      if (this.options.socks !== null) {
        this.socks = new LoopbackListener({
          ...this.options.socks,
          label: 'SOCKS5 listener (--socks)',
          logger,
          onConnection: socksConnections(dialer, logger),
        });
        await this.socks.start();
        logger.info(`SOCKS5 listener on ${this.socks.address} (curl --socks5-hostname; pseudo names only)`);
      }
      if (this.options.httpProxy !== null) {
        this.httpProxy = new LoopbackListener({
          ...this.options.httpProxy,
          label: 'HTTP proxy listener (--http-proxy)',
          logger,
          onConnection: httpProxyConnections(dialer, logger),
        });
        await this.httpProxy.start();
        logger.info(`HTTP proxy on ${this.httpProxy.address} (CONNECT, curl -x; pseudo names only)`);
      }
    } catch (e) {
      this.stop();
      throw e;
    }
  }

  /**
   * The responder asked for, and — unless that one is on port 53 already, or `--dns off` — the default
   * one on port 53 as well: a private resolv.conf can name only that port, so `hook-run` needs it whatever
   * else `--dns` names.
   */
  private async startDns(): Promise<void> {
    const { dns } = this.options;
    if (dns === null) return;
    if (dns !== 'auto') this.dns.push(await this.startResponder(dns, true));
    if (dns === 'auto' || dns.port !== 53) {
      const { base, prefix } = this.deps.pseudoNet;
      const responder = await this.startResponder({ host: defaultResponderAddress(base, prefix), port: 53 }, false);
      if (responder !== null) this.dns.push(responder);
    }
  }

  /** Starts one responder; null (with one log line) when it cannot listen and `required` is false. */
  private async startResponder(at: HostPort, required: true): Promise<DnsResponder>;
  private async startResponder(at: HostPort, required: false): Promise<DnsResponder | null>;
  private async startResponder(at: HostPort, required: boolean): Promise<DnsResponder | null> {
    const responder = new DnsResponder({
      ...at,
      zone: this.deps.zone,
      resolve: this.deps.resolve,
      logger: this.deps.logger,
    });
    try {
      await responder.start();
    } catch (e) {
      if (required) throw e;
      this.deps.logger.info(
        `no DNS responder for programs hook-run cannot enter: ${e instanceof Error ? e.message : String(e)}`,
      );
      return null;
    }
    this.deps.logger.info(`DNS responder for the zone on ${responder.address} (UDP and TCP)`);
    return responder;
  }

  stop(): void {
    for (const responder of this.dns) responder.stop();
    this.socks?.stop();
    this.httpProxy?.stop();
  }

  /** Where the listeners are, as the hello reply carries it. */
  describe(): HelloListeners {
    return {
      // The one on port 53 first: the one a private resolv.conf can name.
      ...(this.dns.length > 0
        ? { dns: (this.dns.find((r) => r.address.endsWith(':53')) ?? this.dns[0]!).address }
        : {}),
      ...(this.socks !== null ? { socks: this.socks.address } : {}),
      ...(this.httpProxy !== null ? { httpProxy: this.httpProxy.address } : {}),
    };
  }
}
