/**
 * How an endpoint's session reaches the tunnel server through whatever the local network allows
 * without the user having to say how. Routes are tried in order —
 * direct TLS; TLS through the configured HTTP (CONNECT) or SOCKS5 proxy; then WebSocket over HTTPS,
 * direct and through the proxy, for networks that pass only web traffic — and the first that works is
 * remembered and tried first on every reconnect.
 *
 * The proxy comes from `--proxy URL`, else from the environment as curl reads it (`https_proxy`,
 * `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`, honouring `NO_PROXY`), via proxy-from-env. HTTP CONNECT uses
 * Node's own HTTP client, SOCKS5 the `socks` package, WebSocket the `ws` package: no wire format of a
 * proxy is written by hand here.
 */
import dns from 'node:dns/promises';
import http from 'node:http';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { getProxyForUrl } from 'proxy-from-env';
import { SocksClient } from 'socks';
import { createWebSocketStream, WebSocket } from 'ws';
import type { TRANSPORT_KINDS } from '../protocol/defaults';
import { ConfigError, UnreachableError } from '../protocol/errors';
import { formatHostPort, isIpLiteral } from '../protocol/names';
import { ALPN } from '../protocol/wire';

export type TransportKind = (typeof TRANSPORT_KINDS)[number];

/** Path of the WebSocket endpoint on the server's port. */
export const WS_PATH = '/v1/ws';

export interface Route {
  carrier: 'tls' | 'wss';
  /** Absent for a direct connection. */
  proxy?: URL;
}

export interface Target {
  host: string;
  port: number;
  ca: Buffer;
  /** Where to connect when `host` is a name of several addresses (TLS still checks `host`). */
  address?: string | undefined;
}

export function describeRoute(route: Route): string {
  const via = route.proxy
    ? ` via ${route.proxy.protocol.startsWith('socks') ? 'SOCKS5' : 'HTTP'} proxy ${route.proxy.host}`
    : ' direct';
  return `${route.carrier === 'tls' ? 'TLS' : 'WebSocket (wss)'}${via}`;
}

/** The proxy to use for the server, from the flag or the environment; null for none. */
export function proxyFor(target: { host: string; port: number }, flag: string | undefined): URL | null {
  const text = flag ?? (getProxyForUrl(`https://${formatHostPort(target)}/`) || undefined);
  if (text === undefined || text === '') return null;
  let url: URL;
  try {
    url = new URL(text.includes('://') ? text : `http://${text}`);
  } catch {
    throw new ConfigError(
      `proxy '${text}' is not a URL: use http://HOST:PORT, socks5://HOST:PORT or socks5h://HOST:PORT`,
    );
  }
  if (!['http:', 'socks5:', 'socks5h:', 'socks:'].includes(url.protocol)) {
    throw new ConfigError(`proxy '${text}': only http://, socks5:// and socks5h:// proxies are supported`);
  }
  return url;
}

/** Routes to try, in order, for a transport choice. */
export function candidateRoutes(kind: TransportKind, proxy: URL | null): Route[] {
  const routes: Route[] = [];
  const carriers: Array<Route['carrier']> = kind === 'auto' ? ['tls', 'wss'] : [kind];
  for (const carrier of carriers) {
    routes.push({ carrier });
    if (proxy) routes.push({ carrier, proxy });
  }
  return routes;
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onTimeout();
        // An errno-style error: the caller words it with the server's address and the fix.
        reject(Object.assign(new Error(`${what} timed out after ${ms} ms`), { code: 'ETIMEDOUT' }));
      }, ms);
    }),
  ]);
}

/** A raw TCP stream to the server, direct or tunneled through the proxy. */
async function openTcp(route: Route, target: Target, timeoutMs: number): Promise<net.Socket> {
  const proxy = route.proxy;
  if (!proxy) {
    const socket = net.connect({ host: target.address ?? target.host, port: target.port, noDelay: true });
    return withTimeout(
      new Promise<net.Socket>((resolve, reject) => {
        socket.once('connect', () => resolve(socket));
        socket.once('error', reject);
      }),
      timeoutMs,
      `connecting to ${target.host}:${target.port}`,
      () => socket.destroy(),
    );
  }
  const proxyPort = Number(proxy.port || (proxy.protocol === 'http:' ? 80 : 1080));
  const user = decodeURIComponent(proxy.username);
  const password = decodeURIComponent(proxy.password);
  if (proxy.protocol === 'http:') {
    const authority = formatHostPort(target);
    const request = http.request({
      host: proxy.hostname,
      port: proxyPort,
      method: 'CONNECT',
      path: authority,
      headers: {
        host: authority,
        ...(user !== ''
          ? { 'proxy-authorization': `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` }
          : {}),
      },
    });
    return withTimeout(
      new Promise<net.Socket>((resolve, reject) => {
        request.once('connect', (response, socket, head) => {
          if (response.statusCode !== 200) {
            socket.destroy();
            reject(
              new UnreachableError(
                `HTTP proxy ${proxy.host} refused CONNECT to ${authority} (${response.statusCode} ${response.statusMessage ?? ''})`,
              ),
            );
            return;
          }
          if (head.length > 0) socket.unshift(head);
          socket.setNoDelay(true);
          resolve(socket);
        });
        request.once('error', (e) =>
          reject(
            new UnreachableError(
              `HTTP proxy ${proxy.host} unreachable (${(e as NodeJS.ErrnoException).code ?? e.message})`,
              e,
            ),
          ),
        );
        request.end();
      }),
      timeoutMs,
      `CONNECT through ${proxy.host}`,
      () => request.destroy(),
    );
  }
  // SOCKS5: socks5h lets the proxy resolve the name; socks5 resolves it here first (as curl does).
  const host =
    proxy.protocol === 'socks5h:' || isIpLiteral(target.host) ? target.host : (await dns.lookup(target.host)).address;
  const { socket } = await SocksClient.createConnection({
    proxy: { host: proxy.hostname, port: proxyPort, type: 5, ...(user !== '' ? { userId: user, password } : {}) },
    command: 'connect',
    destination: { host, port: target.port },
    timeout: timeoutMs,
  }).catch((e: Error) => {
    throw new UnreachableError(`SOCKS5 proxy ${proxy.host}: ${e.message}`, e);
  });
  socket.setNoDelay(true);
  return socket;
}

function tlsOver(socket: net.Socket | undefined, target: Target, alpn: string): tls.ConnectionOptions {
  return {
    ...(socket ? { socket } : { host: target.host, port: target.port }),
    ca: target.ca,
    ALPNProtocols: [alpn],
    ...(isIpLiteral(target.host) ? {} : { servername: target.host }),
  };
}

/**
 * Opens a route and returns the byte stream HTTP/2 runs on: a TLS socket (ALPN h2), or a WebSocket
 * stream whose own TLS protects it (HTTP/2 then runs in clear inside it).
 */
export async function openRoute(route: Route, target: Target, timeoutMs = 5_000): Promise<Duplex> {
  // A WebSocket dials by name unless it is given its socket: one of a name's several addresses
  // (server-list.ts) must be the one dialled, or a failover could land on any of them, or on none.
  const raw =
    route.proxy || route.carrier === 'tls' || target.address !== undefined
      ? await openTcp(route, target, timeoutMs)
      : undefined;
  if (route.carrier === 'tls') {
    const socket = tls.connect(tlsOver(raw, target, ALPN));
    return withTimeout(
      new Promise<Duplex>((resolve, reject) => {
        socket.once('secureConnect', () => resolve(socket));
        socket.once('error', reject);
      }),
      timeoutMs,
      `TLS handshake with ${target.host}:${target.port}`,
      () => socket.destroy(),
    );
  }
  const url = `wss://${formatHostPort(target)}${WS_PATH}`;
  const ws = new WebSocket(url, {
    ...tlsOver(undefined, target, 'http/1.1'),
    perMessageDeflate: false,
    handshakeTimeout: timeoutMs,
    ...(raw ? { createConnection: () => tls.connect(tlsOver(raw, target, 'http/1.1')) } : {}),
  });
  return new Promise<Duplex>((resolve, reject) => {
    ws.once('open', () => resolve(createWebSocketStream(ws)));
    ws.once('error', (e: Error) => reject(new UnreachableError(`WebSocket to ${url} failed (${e.message})`)));
    ws.once('unexpected-response', (_req, res) => {
      reject(new UnreachableError(`WebSocket to ${url} refused (HTTP ${res.statusCode ?? '?'})`));
      ws.terminate();
    });
  });
}
