/**
 * The service proxy (seed figure 3 and step 715's far end). It runs next to the real server, dials out to
 * the tunnel server, publishes `NAME=HOST:PORT`, keeps service key → HOST:PORT, and for every tunnel the
 * server forwards it connects to HOST:PORT and opens the stream that carries the bytes — or reports why it
 * could not, so the client's connect() fails instead of hanging.
 */
import { EventEmitter } from 'node:events';
import http2 from 'node:http2';
import net from 'node:net';
import { ControlDecoder, encodeControl, ServerMessage, type ProxyMessage } from '../protocol/control';
import { ConfigError, isUnderpassError } from '../protocol/errors';
import { label, tryParseHostPort } from '../protocol/names';
import { Headers, Paths } from '../protocol/wire';
import type { Logger } from '../runtime/log';
import { ServerLink, type LinkOptions } from '../runtime/server-link';
import { abort, splice } from '../runtime/splice';

export interface Target {
  name: string;
  host: string;
  port: number;
}

/** What `--json` prints, one object a line. */
export type ProxyEvent =
  | { event: 'published'; name: string; host: string; key: string; target: string }
  | { event: 'refused'; name: string; code: string; message: string }
  | { event: 'disconnected' }
  | { event: 'reconnected' };

/** Parses `NAME=HOST:PORT`; throws ConfigError with the fix. */
export function parsePublish(spec: string): Target {
  const eq = spec.indexOf('=');
  const fail = (why: string): never => {
    throw new ConfigError(`--publish '${spec}': ${why} (expected NAME=HOST:PORT, e.g. redis=127.0.0.1:6379)`);
  };
  if (eq <= 0) return fail('missing NAME=');
  const name = label(spec.slice(0, eq), 'publication name');
  const target = tryParseHostPort(spec.slice(eq + 1));
  if (target === null) return fail(`'${spec.slice(eq + 1)}' is not HOST:PORT with a valid host and port`);
  return { name, ...target };
}

export interface ProxyOptions {
  link: LinkOptions;
  targets: Target[];
  logger: Logger;
  /** How long connecting to a target may take (ms). */
  connectTimeoutMs?: number;
}

export class ServiceProxy extends EventEmitter {
  readonly link: ServerLink;
  /** Service key → target (seed step 335: the proxy keeps the mapping). */
  private readonly byKey = new Map<string, Target>();
  private wasUp = false;

  constructor(private readonly options: ProxyOptions) {
    super();
    const names = new Set<string>();
    for (const t of options.targets) {
      if (names.has(t.name)) throw new ConfigError(`--publish names '${t.name}' twice: give each publication its own NAME`);
      names.add(t.name);
    }
    this.link = new ServerLink(options.link);
    this.link.on('up', (session: http2.ClientHttp2Session) => this.openControl(session));
    this.link.on('down', () => this.emitEvent({ event: 'disconnected' }));
  }

  private get log(): Logger {
    return this.options.logger;
  }

  async start(): Promise<void> {
    await this.link.start();
  }

  stop(): void {
    this.link.stop();
  }

  private emitEvent(event: ProxyEvent): void {
    this.emit('event', event);
  }

  private openControl(session: http2.ClientHttp2Session): void {
    if (this.wasUp) this.emitEvent({ event: 'reconnected' });
    this.wasUp = true;
    const control = session.request({ ':method': 'POST', ':path': Paths.control, ...this.link.authHeaders() });
    control.on('error', (e: Error) => this.log.debug(`control stream error: ${e.message}`));
    control.on('response', (headers) => {
      if (Number(headers[':status']) !== 200) {
        this.log.error(`the server refused the control stream (HTTP ${String(headers[':status'])}): ${String(headers[Headers.errorMessage] ?? '')}`);
        session.close();
      }
    });
    const decoder = new ControlDecoder(ServerMessage);
    control.on('data', (chunk: Buffer) => {
      let messages: ServerMessage[];
      try {
        messages = decoder.push(chunk);
      } catch (e) {
        this.log.error(`the server sent a malformed control message (${isUnderpassError(e) ? e.message : String(e)}); reconnecting`);
        session.destroy();
        return;
      }
      for (const message of messages) this.handleServerMessage(session, control, message);
    });
    for (const target of this.options.targets) {
      const publish: ProxyMessage = { type: 'publish', name: target.name, port: target.port };
      control.write(encodeControl(publish));
    }
  }

  private handleServerMessage(session: http2.ClientHttp2Session, control: http2.ClientHttp2Stream, message: ServerMessage): void {
    switch (message.type) {
      case 'published': {
        const target = this.options.targets.find((t) => t.name === message.name);
        if (!target) return;
        for (const [key, t] of this.byKey) if (t === target && key !== message.key) this.byKey.delete(key);
        this.byKey.set(message.key, target);
        // Announced on every acceptance, after a reconnect too: a restarted server that kept its store
        // shows the same name and key here.
        this.log.info('published', { name: message.name, host: message.host, port: message.port, target: `${target.host}:${target.port}` });
        this.emitEvent({ event: 'published', name: message.name, host: message.host, key: message.key, target: `${target.host}:${target.port}` });
        return;
      }
      case 'refused':
        this.log.error(`the server refused publication '${message.name}': ${message.message}`);
        this.emitEvent({ event: 'refused', name: message.name, code: message.code, message: message.message });
        return;
      case 'tunnel':
        this.handleTunnel(session, control, message.id, message.key);
        return;
    }
  }

  /** Seed: "searches the original server address … creates a socket connection with it and returns the success info back". */
  private handleTunnel(session: http2.ClientHttp2Session, control: http2.ClientHttp2Stream, id: string, key: string): void {
    const fail = (code: string, message: string): void => {
      const reply: ProxyMessage = { type: 'tunnel-failed', id, code, message };
      if (!control.destroyed) control.write(encodeControl(reply));
    };
    const target = this.byKey.get(key);
    if (!target) {
      fail('UP_ERR_NOT_FOUND', 'the proxy holds no publication with that service key');
      return;
    }
    const socket = net.connect({ host: target.host, port: target.port, allowHalfOpen: true, noDelay: true });
    const timeout = setTimeout(() => socket.destroy(new Error('ETIMEDOUT')), this.options.connectTimeoutMs ?? 10_000);
    socket.once('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timeout);
      if (socket.connecting || socket.bytesRead + socket.bytesWritten === 0) {
        this.log.warn(`cannot connect to ${target.host}:${target.port} (${e.code ?? e.message})`, { publication: target.name });
        fail('UP_ERR_TARGET_REFUSED', `${target.name}'s target ${target.host}:${target.port} refused the connection (${e.code ?? e.message})`);
      }
    });
    socket.once('connect', () => {
      clearTimeout(timeout);
      if (session.destroyed || session.closed) {
        socket.destroy();
        return;
      }
      const stream = session.request({
        ':method': 'CONNECT',
        ':authority': `${target.name}:${target.port}`,
        [Headers.tunnelId]: id,
        ...this.link.authHeaders(),
      });
      stream.on('error', () => undefined);
      // Spliced at once: what the target says first (a banner, a greeting) travels right behind the
      // HEADERS instead of waiting for the server's 200. A refusal (the client gave up meanwhile) resets
      // the target connection before the stream's end could close it in order.
      stream.once('response', (headers) => {
        if (Number(headers[':status']) !== 200) {
          abort(socket);
          stream.close();
        }
      });
      splice(socket, stream);
    });
  }
}
