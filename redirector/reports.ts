/**
 * What the redirector tells its user about itself: `underpass status` (its session, listeners, fallbacks,
 * tunnels and latest refusals) and `underpass ls` (the publications under a prefix), both over its IPC
 * endpoint, so only its user can ask. Refusals are noted here as the IPC answers them.
 */
import type http2 from 'node:http2';
import { isUnderpassError, UnreachableError } from '../protocol/errors';
import type { ErrorReply, HelloListeners, ListReply, StatusReply } from '../protocol/ipc';
import { isUnder, NameInfo, NameList, Paths, type SessionInfo } from '../protocol/wire';
import { getJson } from '../runtime/requests';
import type { ServerLink } from '../runtime/server-link';

/** Refusals `underpass status` shows. */
export const MAX_REFUSALS_KEPT = 20;
/** How many distinct refusal messages are remembered as logged before the memory starts over. */
const MAX_REFUSALS_LOGGED = 1000;

/** What the reports read of the redirector. */
export interface ReportSources {
  link: ServerLink;
  info: () => SessionInfo | null;
  zone: () => string;
  /** The listeners on pseudo addresses now. */
  listeners: () => Iterable<{ host: string; address: string; port: number; moved: { listenPort: number } | null }>;
  /** Where a publication's tunnels go now: the direct hop or the relay; null before either was decided. */
  via: (host: string) => 'direct' | 'relay' | null;
  fallbacks: () => HelloListeners;
  /** The hosts whose service keys the redirector holds. */
  keyedHosts: () => Iterable<string>;
  lookup: (host: string) => Promise<NameInfo>;
  /** Writes one line to the redirector's log. */
  log: (line: string) => void;
}

function viaOf(via: 'direct' | 'relay' | null): { via?: 'direct' | 'relay' } {
  return via === null ? {} : { via };
}

export class Reports {
  private readonly refusals: StatusReply['refusals'] = [];
  /** Refusal messages already logged. */
  private readonly logged = new Set<string>();

  constructor(private readonly sources: ReportSources) {}

  /**
   * Keeps a refusal for `underpass status`, and logs it the first time: once per distinct refusal, as the
   * hook tells the app, so that an app that retries does not flood the log.
   */
  noteRefusal(code: string, message: string): void {
    if (!this.logged.has(message)) {
      if (this.logged.size >= MAX_REFUSALS_LOGGED) this.logged.clear();
      this.logged.add(message);
      this.sources.log(`refused a hook's request (${code}): ${message}`);
    }
    this.refusals.push({ time: new Date().toISOString(), code, message });
    if (this.refusals.length > MAX_REFUSALS_KEPT) this.refusals.shift();
  }

  /** Passes an IPC reply on, noting it when it is a refusal. */
  noted<T extends { ok: boolean }>(reply: T): T {
    if (!reply.ok && 'code' in reply && 'message' in reply) this.noteRefusal(String(reply.code), String(reply.message));
    return reply;
  }

  /**
   * `underpass ls`: what the server lists for our token under `under` (a pseudo name's suffix; without
   * the zone, the zone is added), and the publications whose service keys we hold.
   */
  async list(under: string): Promise<ListReply | ErrorReply> {
    const { link } = this.sources;
    const live = link.current();
    if (!live) return { ok: false, code: 'UNAVAILABLE', message: 'no session to the tunnel server (reconnecting)' };
    const zone = this.sources.zone();
    const lowered = under.toLowerCase().replace(/\.$/, '');
    const suffix = lowered === '' || isUnder(lowered, zone) ? lowered : `${lowered}.${zone}`;
    let listed: NameList;
    try {
      listed = await getJson(
        live.session,
        { ':path': `${Paths.list}?under=${encodeURIComponent(suffix)}`, ...link.authHeaders() },
        NameList,
        {
          refused: 'the server refused the list',
          closed: (e) => new UnreachableError(`the session closed during the list${e ? ` (${e.message})` : ''}`, e),
          malformed: 'the server sent a malformed list',
        },
      );
    } catch (e) {
      return { ok: false, code: 'UNAVAILABLE', message: isUnderpassError(e) ? e.message : String(e) };
    }
    const names = listed.names.map(({ host, port, online }) => ({ host, port, online }));
    for (const host of this.sources.keyedHosts()) {
      if (!isUnder(host, suffix) || names.some((n) => n.host === host)) continue;
      try {
        const info = await this.sources.lookup(host);
        names.push({ host: info.host, port: info.port, online: info.online });
      } catch {
        // A key whose publication is gone lists nothing; its lookup logs why when it is used.
      }
    }
    return { ok: true, names, truncated: listed.truncated };
  }

  /** `underpass status`: the session (with a PING's round trip), the listeners, the latest refusals. */
  async status(): Promise<StatusReply> {
    const { link } = this.sources;
    const live = link.current();
    const rttMs = live === null ? undefined : await roundTrip(live.session);
    const route = link.route;
    const info = this.sources.info();
    return {
      ok: true,
      session: {
        up: live !== null,
        server: link.server,
        ...(route !== null ? { route } : {}),
        ...(rttMs !== undefined ? { rttMs } : {}),
        ...(info !== null ? { account: info.account, zone: info.zone } : {}),
        ...(info?.node !== undefined ? { node: info.node } : {}),
      },
      listeners: [...this.sources.listeners()].map((l) => ({
        host: l.host,
        address: l.address,
        port: l.port,
        ...(l.moved !== null ? { listenPort: l.moved.listenPort } : {}),
        ...viaOf(this.sources.via(l.host)),
      })),
      fallbacks: this.sources.fallbacks(),
      tunnels: link.tunnels.size,
      refusals: [...this.refusals],
    };
  }
}

/** A PING's round trip on the session (ms), or undefined when none came back within 2 s. */
function roundTrip(session: http2.ClientHttp2Session): Promise<number | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 2_000);
    try {
      session.ping((error, duration) => {
        clearTimeout(timer);
        resolve(error ? undefined : duration);
      });
    } catch {
      clearTimeout(timer);
      resolve(undefined);
    }
  });
}
