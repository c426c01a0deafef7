/**
 * The redirector's IPC endpoint for hooks, and the only module that touches node-ipc.
 *
 * node-ipc is pinned to 9.2.1: the last release before the 2022 sabotage (10.1.1–10.1.2 and 9.2.2 / 11.x
 * with `peacenotwar`), with a dependency tree of three small packages (event-pubsub, js-message,
 * js-queue → easy-stack), all read, none with install scripts. It runs in raw mode: this module splits
 * each peer's bytes into messages itself (node-ipc's wire form, protocol/ipc-wire.ts), and drops a peer
 * that sends more than IPC_MAX_MESSAGE without a delimiter; it also serves one user only (socket in a
 * 0700 directory, mode 0600).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import RootIPC from 'node-ipc';
import { ConfigError } from '../protocol/errors';
import {
  encodeIpcMessage,
  IPC_DELIMITER,
  IPC_MAX_MESSAGE,
  tryDecodeIpcMessage,
  IpcEvent,
  IpcMessages,
  tryParseIpcRequest,
  type ErrorReply,
  type IpcKind,
  type IpcNotificationKind,
  type IpcReply,
  type IpcRequest,
  type IpcRequestKind,
} from '../protocol/ipc';
import type { Logger } from '../runtime/log';

/**
 * What the redirector answers, by request kind (protocol/ipc.ts IpcMessages): each handler returns the
 * reply's data. A notification's handler returns nothing: the hook writes a claim and closes at once, so
 * a reply would only meet a closed socket (and cost an EPIPE, with its stack trace, per tunneled
 * connection).
 */
export type IpcHandlers = { [K in IpcRequestKind]: (request: IpcRequest<K>) => Promise<IpcReply<K>> | IpcReply<K> } & {
  [K in IpcNotificationKind]: (request: IpcRequest<K>) => void;
};

interface IpcSocket extends net.Socket {
  /** The start of a message whose delimiter has not come yet. */
  ipcPending?: string;
}

/** Request kinds by the event they travel as. */
const KINDS = new Map<string, IpcKind>(
  (Object.keys(IpcMessages) as IpcKind[]).map((kind) => [IpcMessages[kind].event, kind]),
);

/** Fails when something already answers at `socketPath`; removes a stale socket file otherwise. */
async function claimPath(socketPath: string): Promise<void> {
  if (!fs.existsSync(socketPath)) return;
  const live = await new Promise<boolean>((resolve) => {
    const probe = net.connect(socketPath);
    probe.once('connect', () => {
      probe.destroy();
      resolve(true);
    });
    probe.once('error', () => resolve(false));
  });
  if (live)
    throw new ConfigError(`another redirector already serves ${socketPath}: stop it, or pass a different --ipc`);
  fs.unlinkSync(socketPath);
}

export class IpcServer {
  private readonly ipc = new RootIPC.IPC();

  constructor(
    private readonly socketPath: string,
    private readonly handlers: IpcHandlers,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const dir = path.dirname(this.socketPath);
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    await claimPath(this.socketPath);
    Object.assign(this.ipc.config, {
      silent: true,
      unlink: false,
      maxConnections: 4096,
      // Raw: node-ipc hands over each socket's bytes and this module splits them into messages. Parsed
      // by node-ipc, every message became a js-message object whose accessors are closures of its own,
      // so each claim (one per tunneled connection) left new hidden classes in V8's old space.
      rawBuffer: true,
      id: 'underpass-redirector',
    });
    this.ipc.serve(this.socketPath);
    const server = this.ipc.server;
    server.on('data', (data: Buffer, socket: IpcSocket) => this.receive(data, socket));
    server.on('error', (err: unknown) => this.logger.debug(`IPC error: ${String(err)}`));
    await new Promise<void>((resolve, reject) => {
      server.on('start', () => resolve());
      // node-ipc publishes listen errors (and later socket errors) as 'error'; only the first can reject.
      server.on('error', reject);
      server.start();
    });
    fs.chmodSync(this.socketPath, 0o600);
  }

  stop(): void {
    try {
      this.ipc.server.stop();
    } catch {
      // never started
    }
    try {
      fs.unlinkSync(this.socketPath);
    } catch {
      // already gone
    }
  }

  /** A peer's bytes: each complete message is dispatched; a peer past IPC_MAX_MESSAGE without a delimiter is dropped. */
  private receive(data: Buffer, socket: IpcSocket): void {
    // node-ipc reads each socket as UTF-8 text (setEncoding) before it hands the bytes over, so a chunk
    // never ends inside a character (bad-input.test.ts sends one cut in two).
    let buffer = (socket.ipcPending ?? '') + data.toString('utf8');
    for (let end = buffer.indexOf(IPC_DELIMITER); end >= 0; end = buffer.indexOf(IPC_DELIMITER)) {
      const message = tryDecodeIpcMessage(buffer.slice(0, end));
      buffer = buffer.slice(end + IPC_DELIMITER.length);
      // Garbage and unknown events cost only their sender: nothing answers them.
      const kind = message === null ? undefined : KINDS.get(message.type);
      if (message !== null && kind !== undefined) void this.dispatch(kind, message.data, socket);
    }
    socket.ipcPending = buffer;
    if (buffer.length > IPC_MAX_MESSAGE) {
      this.logger.warn('dropped an IPC peer that sent an oversized message');
      socket.destroy();
    }
  }

  private async dispatch(kind: IpcKind, data: unknown, socket: IpcSocket): Promise<void> {
    let reply: object;
    const request = tryParseIpcRequest(kind, data);
    if (request === null) {
      reply = { ok: false, code: 'BAD_REQUEST', message: `malformed ${kind} request` } satisfies ErrorReply;
    } else {
      try {
        const handler = this.handlers[kind] as (r: typeof request) => Promise<object | void> | object | void;
        reply = (await handler(request)) ?? {};
      } catch (e) {
        this.logger.warn(`IPC ${kind} failed: ${e instanceof Error ? e.message : String(e)}`);
        reply = {
          ok: false,
          code: 'UNAVAILABLE',
          message: e instanceof Error ? e.message : 'internal error',
        } satisfies ErrorReply;
      }
    }
    // A notification's sender closed its socket right after writing: nothing goes back.
    if (IpcMessages[kind].reply !== null && socket !== undefined && !socket.destroyed)
      this.ipc.server.emit(socket, encodeIpcMessage(IpcEvent.reply, reply));
  }
}
