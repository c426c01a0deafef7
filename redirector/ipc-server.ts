/**
 * The redirector's IPC endpoint for hooks, and the only module that touches node-ipc.
 *
 * node-ipc is pinned to 9.2.1: the last release before the 2022 sabotage (10.1.1–10.1.2 and 9.2.2 / 11.x
 * with `peacenotwar`), with a dependency tree of three small packages (event-pubsub, js-message,
 * js-queue → easy-stack), all read, none with install scripts. Its server keeps an unbounded string
 * buffer per socket until it sees the delimiter, so this module caps that buffer and drops a peer that
 * exceeds it; it also serves one user only (socket in a 0700 directory, mode 0600).
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import RootIPC from 'node-ipc';
import { z } from 'zod';
import { UnderpassError } from '../protocol/errors';
import { IPC_MAX_MESSAGE, IpcEvent, type ErrorReply } from '../protocol/ipc';
import type { Logger } from '../runtime/log';

/** Request schemas, by request kind (the event on the wire is `IpcEvent[kind]`). */
const Schemas = {
  hello: z.object({ v: z.number().int(), pid: z.number().int() }).passthrough(),
  resolve: z.object({ name: z.string().min(1).max(1024) }).passthrough(),
  connect: z.object({ address: z.string().min(7).max(15), port: z.number().int().min(1).max(65535) }).passthrough(),
  reverse: z.object({ address: z.string().min(7).max(15) }).passthrough(),
  claim: z
    .object({
      address: z.ipv4(),
      port: z.number().int().min(1).max(65535),
      localAddress: z.ipv4(),
      localPort: z.number().int().min(1).max(65535),
    })
    .passthrough(),
} as const;

type Requests = { [K in keyof typeof Schemas]: z.infer<(typeof Schemas)[K]> };

/**
 * Requests nobody waits to hear back from: the hook writes a claim and closes at once, so a reply would
 * only meet a closed socket (and cost an EPIPE, with its stack trace, per tunneled connection).
 */
type Notification = 'claim';
const NOTIFICATIONS: ReadonlySet<keyof typeof Schemas> = new Set<Notification>(['claim']);

/** What the redirector answers; each handler returns the reply's data (nothing, for a notification). */
export type IpcHandlers = {
  [K in keyof Requests]: (request: Requests[K]) => K extends Notification ? void : Promise<object> | object;
};

interface IpcSocket extends net.Socket {
  ipcBuffer?: string;
}

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
    throw new UnderpassError(
      'UP_ERR_CONFIG',
      `another redirector already serves ${socketPath}: stop it, or pass a different --ipc`,
    );
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
      // Each request carries `id` only for node-ipc's bookkeeping; replies go to the socket that asked.
      id: 'underpass-redirector',
    });
    this.ipc.serve(this.socketPath);
    const server = this.ipc.server;
    for (const kind of Object.keys(Schemas) as Array<keyof typeof Schemas>) {
      server.on(IpcEvent[kind], (data: unknown, socket: IpcSocket) => void this.dispatch(kind, data, socket));
    }
    // node-ipc publishes a new connection as ('connect', socket) — and a peer's message typed "connect"
    // as ('connect', data, socket); only the first kind is a connection.
    server.on('connect', (socket: unknown, fromMessage?: unknown) => {
      if (fromMessage !== undefined || !(socket instanceof net.Socket)) return;
      // Runs after node-ipc's own 'data' handler has appended to its buffer.
      socket.on('data', () => {
        if (((socket as IpcSocket).ipcBuffer?.length ?? 0) > IPC_MAX_MESSAGE) {
          this.logger.warn('dropped an IPC peer that sent an oversized message');
          socket.destroy();
        }
      });
      socket.on('error', () => undefined);
    });
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

  private async dispatch(event: keyof typeof Schemas, data: unknown, socket: IpcSocket): Promise<void> {
    let reply: object;
    const parsed = Schemas[event].safeParse(data);
    if (!parsed.success) {
      reply = { ok: false, code: 'BAD_REQUEST', message: `malformed ${event} request` } satisfies ErrorReply;
    } else {
      try {
        const handler = this.handlers[event] as (r: unknown) => Promise<object | void> | object | void;
        reply = (await handler(parsed.data)) ?? {};
      } catch (e) {
        this.logger.warn(`IPC ${event} failed: ${e instanceof Error ? e.message : String(e)}`);
        reply = {
          ok: false,
          code: 'UNAVAILABLE',
          message: e instanceof Error ? e.message : 'internal error',
        } satisfies ErrorReply;
      }
    }
    // A notification's sender closed its socket right after writing: nothing goes back.
    if (!NOTIFICATIONS.has(event) && socket !== undefined && !socket.destroyed)
      this.ipc.server.emit(socket, IpcEvent.reply, reply);
  }
}
