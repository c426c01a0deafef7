/**
 * The server's status page, on its `--metrics` port beside `/metrics`: publications (online or not, open
 * tunnels, traffic), connected endpoints, and on a cluster node every node's endpoints. `/` is one self-contained page that reads `/status.json`
 * every two seconds, so it stays live with no reload; it is built for a phone's width first. The JSON
 * carries no secret: no service keys, no tokens.
 *
 * The page builds its rows with textContent, never from HTML strings, so a publication's name cannot
 * inject markup.
 */
import type http from 'node:http';
import { publicationId, pseudoName } from '../protocol/names';
import type { ExtraRoute } from '../runtime/metrics';
import type { ClusterEndpoint } from './cluster/endpoint-directory';
import type { PublicationDirectory } from './directory';
import type { EndpointRegistry, EndpointSession } from './endpoints';
import type { ProxySession } from './publications';
import type { PublicationStore } from './store';
import type { TunnelMatcher } from './tunnels';

/** What the status page shows: the server's state now, nothing secret (no keys, no tokens). */
export interface ServerStatus {
  zone: string;
  startedAt: string;
  publications: {
    host: string;
    account: string;
    name: string;
    port: number;
    online: boolean;
    tunnelsOpen: number;
    tunnelsOpened: number;
    bytesUp: number;
    bytesDown: number;
  }[];
  endpoints: { account: string; remote: string; role: 'proxy' | 'client'; tunnels: number; connected: boolean }[];
  /**
   * A cluster node's: its name and every node's endpoint sessions, read from the endpoint directory in
   * Redis (`error` says why they are missing while Redis is away).
   */
  cluster?: { node: string; endpoints: ClusterEndpoint[]; error?: string };
}

/** The rooms the status page reads. */
export interface StatusSources {
  zone: string;
  startedAt: string;
  store: PublicationStore;
  tunnels: TunnelMatcher;
  directory: PublicationDirectory<ProxySession>;
  endpoints: EndpointRegistry;
}

/** The server's state now, as the status page shows it. */
export function statusOf({ zone, startedAt, store, tunnels, directory, endpoints }: StatusSources): ServerStatus {
  const publications = store.all().map((p) => {
    const t = tunnels.trafficOfId(publicationId(p.account, p.name));
    return {
      host: pseudoName(p.name, p.account, zone),
      account: p.account,
      name: p.name,
      port: p.port,
      online: directory.holderOf(publicationId(p.account, p.name)) !== undefined,
      tunnelsOpen: t?.open ?? 0,
      tunnelsOpened: t?.opened ?? 0,
      bytesUp: t?.up ?? 0,
      bytesDown: t?.down ?? 0,
    };
  });
  const proxies = new Set<EndpointSession>();
  for (const proxy of directory.holders()) proxies.add(proxy.endpoint);
  const sessions = [...endpoints.all()].map((e) => ({
    account: e.account,
    remote: e.h2?.socket?.remoteAddress ?? '',
    role: proxies.has(e) ? ('proxy' as const) : ('client' as const),
    tunnels: e.tunnels.size,
    connected: e.h2 !== null,
  }));
  return { zone, startedAt, publications, endpoints: sessions };
}

const PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Underpass server</title>
<style>
  :root { color-scheme: light dark; --line: #8884; --ok: #1a7f37; --off: #b35900; }
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0 auto; padding: 12px; max-width: 960px; }
  h1 { font-size: 1.25rem; margin: 0 0 4px; }
  h2 { font-size: 1.05rem; margin: 20px 0 6px; }
  .meta { color: #888; font-size: 0.85rem; }
  .cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 8px; }
  .card { border: 1px solid var(--line); border-radius: 8px; padding: 8px 10px; }
  .card .host { font-family: ui-monospace, monospace; font-size: 0.9rem; word-break: break-all; }
  .row { display: flex; justify-content: space-between; gap: 8px; font-size: 0.9rem; }
  .state { font-weight: 600; }
  .state.on { color: var(--ok); }
  .state.off { color: var(--off); }
  .empty { color: #888; font-style: italic; }
</style>
</head>
<body>
<h1>Underpass tunnel server</h1>
<div class="meta" id="meta">loading…</div>
<h2>Publications</h2>
<div class="cards" id="publications"></div>
<h2>Connected endpoints</h2>
<div class="cards" id="endpoints"></div>
<div id="cluster" hidden>
<h2>Endpoints across the cluster</h2>
<div class="meta" id="cluster-meta"></div>
<div class="cards" id="cluster-endpoints"></div>
</div>
<script>
function bytes(n) {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function row(label, value, cls) {
  const r = el('div', 'row');
  r.append(el('span', '', label), el('span', cls || '', value));
  return r;
}
function fill(id, items, render, none) {
  const box = document.getElementById(id);
  box.replaceChildren(...(items.length ? items.map(render) : [el('div', 'empty', none)]));
}
async function refresh() {
  try {
    const s = await (await fetch('status.json', { cache: 'no-store' })).json();
    document.getElementById('meta').textContent =
      'zone ' + s.zone + ' · up since ' + new Date(s.startedAt).toLocaleString() + ' · updated ' + new Date().toLocaleTimeString();
    fill('publications', s.publications, (p) => {
      const c = el('div', 'card');
      c.dataset.host = p.host;
      c.append(el('div', 'host', p.host + ':' + p.port));
      c.append(row('proxy', p.online ? 'online' : 'offline', 'state ' + (p.online ? 'on' : 'off')));
      const open = row('open tunnels', String(p.tunnelsOpen));
      open.lastChild.className = 'open-tunnels';
      c.append(open);
      c.append(row('opened since start', String(p.tunnelsOpened)));
      c.append(row('traffic ↑ / ↓', bytes(p.bytesUp) + ' / ' + bytes(p.bytesDown)));
      return c;
    }, 'nothing published yet');
    fill('endpoints', s.endpoints, (e) => {
      const c = el('div', 'card');
      c.append(el('div', 'host', e.account + (e.remote ? ' @ ' + e.remote : '')));
      c.append(row('role', e.role));
      c.append(row('state', e.connected ? 'connected' : 'in grace period', 'state ' + (e.connected ? 'on' : 'off')));
      c.append(row('tunnels', String(e.tunnels)));
      return c;
    }, 'no endpoint connected');
    document.getElementById('cluster').hidden = !s.cluster;
    if (s.cluster) {
      document.getElementById('cluster-meta').textContent =
        'this is node ' + s.cluster.node + (s.cluster.error ? ' · ' + s.cluster.error : '');
      fill('cluster-endpoints', s.cluster.endpoints, (e) => {
        const c = el('div', 'card');
        c.append(el('div', 'host', e.account + (e.remote ? ' @ ' + e.remote : '')));
        c.append(row('node', e.node));
        c.append(row('role', e.role + (e.publishes.length ? ' of ' + e.publishes.join(', ') : '')));
        return c;
      }, 'no endpoint on any node');
    }
  } catch (error) {
    document.getElementById('meta').textContent = 'cannot reach the server: ' + error;
  }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
`;

/** The routes the status page adds to the metrics listener. */
export function statusRoutes(status: () => Promise<ServerStatus>): ExtraRoute {
  return (request: http.IncomingMessage, response: http.ServerResponse): boolean => {
    const pathname = new URL(request.url ?? '/', 'http://status').pathname;
    if (pathname === '/') {
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(PAGE);
      return true;
    }
    if (pathname === '/status.json') {
      // A cluster node whose Redis is away says so inside the status; this is for anything else.
      status().then(
        (s) =>
          response
            .writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' })
            .end(JSON.stringify(s)),
        (e: unknown) => response.writeHead(500, { 'content-type': 'text/plain' }).end(String(e)),
      );
      return true;
    }
    return false;
  };
}
