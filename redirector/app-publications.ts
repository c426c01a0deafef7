/**
 * Remote listening: a server app started with `hook-run --publish NAME` listens, the hook says so, and
 * the redirector publishes NAME for it — it acts as the service proxy for that app, with a session of
 * its own to the tunnel server (a ServiceProxy on the redirector's own link options) whose target is the
 * app's listening socket. The publication ends when the app's process does: its proxy stops, so the name
 * no longer resolves for anyone new (a publication whose proxy is away does not).
 */
import net from 'node:net';
import { ConfigError, isUnderpassError } from '../protocol/errors';
import type { ErrorReply, PublishReply, PublishRequest } from '../protocol/ipc';
import { publicationName } from '../protocol/names';
import type { LinkOptions } from '../runtime/link-config';
import type { Logger } from '../runtime/log';
import { ServiceProxy, type ProxyEvent } from '../proxy/proxy';

/** How often an app's process is checked for life (ms). */
const WATCH_MS = 500;
/** How long a publication may take to be accepted (ms). */
const PUBLISH_TIMEOUT_MS = 15_000;

interface AppPublication {
  proxy: ServiceProxy;
  pid: number;
  host: string;
}

export class AppPublications {
  private readonly byName = new Map<string, AppPublication>();
  private readonly watch: NodeJS.Timeout;

  constructor(
    private readonly link: LinkOptions,
    private readonly log: Logger,
  ) {
    this.watch = setInterval(() => this.sweep(), WATCH_MS);
    this.watch.unref();
  }

  /** Publishes `name` for the app `pid` listening on `address:port`; answers with its pseudo name. */
  async publish(request: PublishRequest): Promise<PublishReply | ErrorReply> {
    let name: string;
    try {
      name = publicationName(request.name);
    } catch (e) {
      return { ok: false, code: 'BAD_REQUEST', message: e instanceof ConfigError ? e.message : String(e) };
    }
    const existing = this.byName.get(name);
    if (existing !== undefined && existing.pid !== request.pid && isAlive(existing.pid))
      return { ok: false, code: 'REFUSED', message: `${name} is already published here for process ${existing.pid}` };
    if (existing !== undefined) this.end(name, existing, 'replaced');
    // A socket on every address is reached on loopback; one on a given address there.
    const host =
      request.address === '0.0.0.0' || request.address === ''
        ? '127.0.0.1'
        : request.address === '::'
          ? '::1'
          : request.address;
    if (net.isIP(host) === 0)
      return { ok: false, code: 'BAD_REQUEST', message: `${request.address} is not an address` };
    const proxy = new ServiceProxy({
      link: this.link,
      targets: [{ name, host, port: request.port }],
      logger: this.log,
    });
    const published = new Promise<PublishReply | ErrorReply>((resolve) => {
      const timer = setTimeout(
        () => resolve({ ok: false, code: 'UNAVAILABLE', message: `the tunnel server did not accept ${name} in time` }),
        PUBLISH_TIMEOUT_MS,
      );
      proxy.on('event', (event: ProxyEvent) => {
        if (event.event === 'published') {
          clearTimeout(timer);
          resolve({ ok: true, host: event.host, port: request.port });
        } else if (event.event === 'refused') {
          clearTimeout(timer);
          resolve({ ok: false, code: 'REFUSED', message: event.message });
        }
      });
    });
    try {
      await proxy.start();
    } catch (e) {
      proxy.stop();
      return { ok: false, code: 'UNAVAILABLE', message: isUnderpassError(e) ? e.message : String(e) };
    }
    const reply = await published;
    if (!reply.ok) {
      proxy.stop();
      return reply;
    }
    this.byName.set(name, { proxy, pid: request.pid, host: reply.host });
    this.log.info(`published ${name} for process ${request.pid}`, { host: reply.host, port: request.port });
    return reply;
  }

  private sweep(): void {
    for (const [name, publication] of this.byName) if (!isAlive(publication.pid)) this.end(name, publication, 'exited');
  }

  private end(name: string, publication: AppPublication, why: 'exited' | 'replaced'): void {
    this.byName.delete(name);
    publication.proxy.stop();
    this.log.info(
      `${name} is no longer published: its process ${publication.pid} ${why === 'exited' ? 'exited' : 'was replaced'}`,
      {
        host: publication.host,
      },
    );
  }

  stop(): void {
    clearInterval(this.watch);
    for (const [name, publication] of this.byName) {
      this.byName.delete(name);
      publication.proxy.stop();
    }
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
