/**
 * An HTTP proxy that tunnels with CONNECT (`curl -x`, `https_proxy=http://…`, browsers; issue 12): the
 * client asks `CONNECT NAME:PORT`, and a pseudo name under the zone goes through the tunnel, opened
 * in-process by the redirector (tunnel-dialer.ts); every other destination gets a 403 with one line
 * saying why. HTTP is parsed by Node's own server; the loopback listener's owner check runs before it
 * reads a byte.
 *
 * Plain requests in absolute form (`GET http://NAME:PORT/`, what curl sends for an http:// URL without
 * `-p`) are carried too: each one over a tunnel of its own, by Node's HTTP client, with `Connection:
 * close` towards the service so that one tunnel never outlives its request.
 */
import http from 'node:http';
import type net from 'node:net';
import type { Duplex } from 'node:stream';
import { tryParseHostPort } from '../protocol/names';
import type { Logger } from '../runtime/log';
import { DialError, type DialFailure, type TunnelDialer } from './tunnel-dialer';

const STATUS_OF: Record<DialFailure, [number, string]> = {
  'outside-zone': [403, 'Forbidden'],
  'no-such-name': [404, 'Not Found'],
  refused: [502, 'Bad Gateway'],
  unavailable: [503, 'Service Unavailable'],
};

/** Request headers that speak to this proxy, not to the service (RFC 9110 7.6.1 and common practice). */
const HOP_BY_HOP = new Set([
  'connection',
  'proxy-connection',
  'keep-alive',
  'proxy-authorization',
  'te',
  'trailer',
  'upgrade',
]);

/**
 * What a loopback listener (loopback-listener.ts) does with each admitted connection to be an HTTP
 * proxy: Node's HTTP server parses it, and the redirector dials the destination.
 */
export function httpProxyConnections(dialer: TunnelDialer, logger: Logger): (socket: net.Socket) => void {
  const proxy = new HttpProxy(dialer, logger);
  return (socket) => proxy.handleSocket(socket);
}

class HttpProxy {
  private readonly http = http.createServer();

  constructor(
    private readonly dialer: TunnelDialer,
    private readonly logger: Logger,
  ) {
    this.http.on('connect', (request: http.IncomingMessage, socket: Duplex, head: Buffer) =>
      this.handleConnect(request, socket as net.Socket, head),
    );
    this.http.on('request', (request, response) => this.handleRequest(request, response));
    this.http.on('clientError', (_e, socket: Duplex) => socket.destroy());
  }

  handleSocket(socket: net.Socket): void {
    this.http.emit('connection', socket);
    socket.resume();
  }

  private refusal(what: string, e: unknown): { status: number; reason: string; line: string } {
    const kind = e instanceof DialError ? e.kind : 'unavailable';
    const [status, reason] = STATUS_OF[kind];
    const line = `underpass: ${e instanceof Error ? e.message : String(e)}`;
    this.logger.info(`HTTP proxy: refused ${what}: ${line.slice('underpass: '.length)}`);
    return { status, reason, line };
  }

  private handleConnect(request: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    const target = tryParseHostPort(request.url ?? '');
    if (target === null) {
      socket.end(`HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n`);
      return;
    }
    socket.pause();
    this.dialer.dial(target.host, target.port).then(
      (tunnel) => {
        if (socket.destroyed) {
          tunnel.cancel();
          return;
        }
        socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        if (head.length > 0) socket.unshift(head);
        tunnel.carry(socket);
      },
      (e: unknown) => {
        const { status, reason, line } = this.refusal(`CONNECT ${request.url ?? ''}`, e);
        const body = `${line}\n`;
        socket.end(
          `HTTP/1.1 ${status} ${reason}\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      },
    );
  }

  /** A request in absolute form: one tunnel for it, Node's HTTP client over the tunnel. */
  private handleRequest(request: http.IncomingMessage, response: http.ServerResponse): void {
    let url: URL | null = null;
    try {
      url = new URL(request.url ?? '');
    } catch {
      url = null;
    }
    if (url === null || url.protocol !== 'http:') {
      response.writeHead(400, { 'Content-Type': 'text/plain', Connection: 'close' });
      response.end('underpass: this proxy takes CONNECT NAME:PORT, or http://NAME:PORT/ URLs\n');
      return;
    }
    const host = url.hostname;
    const port = url.port === '' ? 80 : Number(url.port);
    request.pause();
    this.dialer.dial(host, port).then(
      (tunnel) => this.forward(request, response, url, tunnel.open()),
      (e: unknown) => {
        const { status, line } = this.refusal(`${request.method ?? 'GET'} ${url.href}`, e);
        response.writeHead(status, { 'Content-Type': 'text/plain', Connection: 'close' });
        response.end(`${line}\n`);
      },
    );
  }

  private forward(request: http.IncomingMessage, response: http.ServerResponse, url: URL, stream: Duplex): void {
    const headers: http.OutgoingHttpHeaders = {};
    for (const [name, value] of Object.entries(request.headers)) {
      if (!HOP_BY_HOP.has(name) && value !== undefined) headers[name] = value;
    }
    headers['connection'] = 'close';
    const upstream = http.request({
      method: request.method ?? 'GET',
      path: `${url.pathname}${url.search}`,
      headers,
      createConnection: () => stream as net.Socket,
    });
    upstream.on('response', (answer) => {
      const out: http.OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(answer.headers)) {
        if (!HOP_BY_HOP.has(name) && value !== undefined) out[name] = value;
      }
      response.writeHead(answer.statusCode ?? 502, answer.statusMessage, out);
      answer.pipe(response);
    });
    upstream.on('error', (e) => {
      if (!response.headersSent) {
        response.writeHead(502, { 'Content-Type': 'text/plain', Connection: 'close' });
        response.end(`underpass: the service's answer broke off: ${e.message}\n`);
      } else response.destroy();
    });
    response.on('close', () => stream.destroy());
    request.pipe(upstream);
  }
}
