/**
 * The server's front door: one TLS port that speaks HTTP/2 to endpoints, and HTTP/1.1 only to carry the
 * WebSocket upgrade (`wss://SERVER/v1/ws`) for networks that pass nothing but web traffic; sessions that
 * arrive that way run HTTP/2 in clear inside the WebSocket's TLS. It hands every session, with the
 * transport under it, and every stream to the server; it knows nothing of accounts or tunnels.
 */
import http2 from 'node:http2';
import type http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import tlsDefaults, { type TLSSocket } from 'node:tls';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { SERVER_CIPHERS } from '../protocol/wire';
import { sessionOptions } from '../runtime/h2';
import type { Logger } from '../runtime/log';
import { WS_PATH } from '../runtime/transport';

export interface ListenerHandlers {
  /**
   * A new session, with its transport (the TLS socket, or the carried WebSocket stream): destroying that
   * ends a session at once, where destroying the session over a silent link would wait to flush for ever.
   */
  onSession: (session: http2.ServerHttp2Session, transport: Duplex | undefined) => void;
  onStream: (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;
}

/**
 * A TLS session's socket, marked on it before http2 makes the session. `session.socket` is a proxy that
 * refuses `destroy()` but routes every other property to the socket, so the mark is how the socket is
 * found again. (A carried session wraps its WebSocket stream, so there the listener remembers the stream.)
 */
const TRANSPORT = Symbol('underpass.transport');
type MarkedSocket = Duplex & { [TRANSPORT]?: Duplex };

function markSocket(socket: Duplex): void {
  (socket as MarkedSocket)[TRANSPORT] = socket;
}

function markedSocketOf(session: http2.Http2Session): Duplex | undefined {
  try {
    return (session.socket as unknown as MarkedSocket)[TRANSPORT];
  } catch {
    return undefined; // the session has already let go of its socket
  }
}

export class Listener {
  private readonly server: http2.Http2SecureServer;
  /** The WebSocket stream of the carried session being made, while http2 makes it. */
  private carrying: Duplex | undefined;

  constructor(identity: { cert: Buffer | string; key: Buffer | string }, handlers: ListenerHandlers, log: Logger) {
    // A TLS handshake that does not finish within 10 s costs its sender the connection, nothing more.
    const server = http2.createSecureServer({
      ...sessionOptions,
      cert: identity.cert,
      key: identity.key,
      allowHTTP1: true,
      handshakeTimeout: 10_000,
      ciphers: `${SERVER_CIPHERS}:${tlsDefaults.DEFAULT_CIPHERS}`,
      honorCipherOrder: true,
    });
    this.server = server;
    // Ahead of http2's own listener, which makes the session from the socket.
    server.prependListener('secureConnection', markSocket);
    const carried = http2.createServer(sessionOptions);
    for (const h2 of [server, carried] as http2.Http2Server[]) {
      h2.on('session', (session: http2.ServerHttp2Session) =>
        handlers.onSession(session, markedSocketOf(session) ?? this.carrying),
      );
      h2.on('stream', (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) =>
        handlers.onStream(stream, headers),
      );
    }
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 8 * 1024 * 1024 });
    server.on('upgrade', (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
      if (request.url !== WS_PATH) {
        socket.destroy();
        return;
      }
      wss.handleUpgrade(request, socket, head, (ws) => {
        const stream = createWebSocketStream(ws);
        // http2 makes the session, and emits 'session', within this call.
        this.carrying = stream;
        try {
          carried.emit('connection', stream);
        } finally {
          this.carrying = undefined;
        }
      });
    });
    // A TLS client that did not pick HTTP/2 gets a short while to send its upgrade; ws clears the timeout.
    server.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol !== 'h2') socket.setTimeout(10_000, () => socket.destroy());
    });
    server.on('tlsClientError', (err) => log.debug(`TLS handshake failed: ${err.message}`));
    server.on('sessionError', (err) => log.debug(`session error: ${err.message}`));
  }

  /** Listens; resolves with the bound address. */
  async listen(port: number, host: string): Promise<AddressInfo> {
    const server = this.server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server.address() as AddressInfo;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}
