/**
 * `underpass forward [LOCAL_HOST:]LOCAL_PORT NAME:PORT` (issue 12): a plain local port whose connections
 * reach a publication, like `ssh -L`, for the clients nothing else serves (an app that allows no
 * injection and has no proxy setting).
 *
 * Design: the command listens and relays itself, and reaches the publication the way a hooked app does —
 * it resolves NAME over the redirector's IPC (which opens the redirector's listener on the pseudo
 * address), connects there, and claims each connection over IPC so the listener admits it at once. The
 * alternative, asking the redirector to open the forward port for the lifetime of an IPC connection,
 * would add a long-lived request kind to the IPC table and tie the port to that connection; this way
 * needs nothing new of the redirector, a forward survives a redirector restart (pseudo addresses are
 * kept; a refused connect resolves the name again, which reopens its listener), and "port in use" is the
 * command's own error. The cost is one local hop per byte, next to a path that already crosses the
 * network twice.
 *
 * Access: the forward port is a LoopbackListener, so only its user (the redirector's: the IPC socket
 * admits no other) and root get through, as at every listener of the redirector.
 */
import net from 'node:net';
import { ConfigError, NoRedirectorError, NotFoundError, UnreachableError } from '../protocol/errors';
import { IPC_VERSION, type IpcSuccess } from '../protocol/ipc';
import { tryParseHostPort } from '../protocol/names';
import { ipcNotify, ipcRequest } from '../runtime/ipc-client';
import type { Logger } from '../runtime/log';
import { abort, splice } from '../runtime/splice';
import { LoopbackListener, parseLoopbackAddress } from './loopback-listener';

export interface ForwardOptions {
  /** `[LOCAL_HOST:]LOCAL_PORT` as given. */
  local: string;
  /** `NAME:PORT` as given. */
  target: string;
  ipcPath: string;
  logger: Logger;
}

export interface RunningForward {
  /** Where it listens, `HOST:PORT`. */
  address: string;
  stop(): void;
}

/** Checks the redirector, resolves the publication and listens; rejects with one line saying what to do. */
export async function startForward(options: ForwardOptions): Promise<RunningForward> {
  const { ipcPath, logger } = options;
  const local = parseLoopbackAddress(
    /^\d+$/.test(options.local) ? `127.0.0.1:${options.local}` : options.local,
    'the local address',
  );
  const target = tryParseHostPort(options.target);
  if (target === null)
    throw new ConfigError(`'${options.target}' is not NAME:PORT (for example pg.default.underpass.internal:5432)`);

  const hello = await ipcRequest(ipcPath, 'hello', { v: IPC_VERSION, pid: process.pid });
  if (!hello.ok) throw new NoRedirectorError(`the redirector at ${ipcPath}: ${hello.message}`);
  if (hello.v !== IPC_VERSION)
    throw new NoRedirectorError(
      `the redirector at ${ipcPath} speaks IPC version ${hello.v}, this command ${IPC_VERSION}: run the same version of both`,
    );
  const resolved = await ipcRequest(ipcPath, 'resolve', { name: target.host });
  if (!resolved.ok) {
    const message = `${target.host}: ${resolved.message}`;
    throw resolved.code === 'NOT_FOUND' ? new NotFoundError(message) : new UnreachableError(message);
  }
  // A blocking connect's request: proves the port is the published one, and leaves a tunnel parked for
  // the first client. A service that is offline only now is said, not fatal: it may come up.
  const opened = await ipcRequest(ipcPath, 'connect', { address: resolved.address, port: target.port });
  if (!opened.ok) {
    if (/is not published on port/.test(opened.message)) throw new NotFoundError(opened.message);
    logger.warn(`${target.host}:${target.port} refuses tunnels for now (${opened.message}); forwarding anyway`);
  }

  const upstream: Upstream = {
    name: resolved.name,
    address: resolved.address,
    port: target.port,
    listenPort: listenPortOf(resolved, target.port),
  };
  const listener = new LoopbackListener({
    ...local,
    label: 'forward',
    logger,
    onConnection: (client) => relay(client, upstream, ipcPath, logger),
  });
  const bound = await listener.start();
  const address = `${bound.address}:${bound.port}`;
  logger.info(`forwarding ${address} to ${resolved.name}:${target.port}`);
  return { address, stop: () => listener.stop() };
}

/** Where connections go: the publication's pseudo address (re-resolved after a redirector restart). */
interface Upstream {
  name: string;
  address: string;
  /** The published port. */
  port: number;
  /** Where the redirector listens for it: the published port, unless a local program holds that one. */
  listenPort: number;
}

/** A listener that had to leave the published port (a local program holds it) is where the reply says. */
function listenPortOf(resolved: IpcSuccess<'resolve'>, port: number): number {
  return resolved.moved?.port === port ? resolved.moved.listenPort : port;
}

/**
 * One client, still paused: a connection to the redirector's listener, claimed as ours, then spliced. A
 * refused connect means the listener is gone (the redirector restarted and nobody resolved the name
 * since): resolving it again opens it, and the connect is tried once more.
 */
function relay(client: net.Socket, upstream: Upstream, ipcPath: string, logger: Logger, retried = false): void {
  const server = net.connect({ host: upstream.address, port: upstream.listenPort, allowHalfOpen: true, noDelay: true });
  const giveUp = (why: string): void => {
    logger.warn(`a forwarded connection could not reach ${upstream.name}:${upstream.port}: ${why}`);
    abort(client);
  };
  const onEarlyError = (e: NodeJS.ErrnoException): void => {
    server.destroy();
    if (retried || e.code !== 'ECONNREFUSED') {
      giveUp(`${e.code ?? e.message}: is the redirector running?`);
      return;
    }
    ipcRequest(ipcPath, 'resolve', { name: upstream.name }).then(
      (resolved) => {
        if (!resolved.ok) giveUp(resolved.message);
        else if (!client.destroyed) {
          upstream.address = resolved.address;
          upstream.listenPort = listenPortOf(resolved, upstream.port);
          relay(client, upstream, ipcPath, logger, true);
        }
      },
      (error: unknown) => giveUp(error instanceof Error ? error.message : String(error)),
    );
  };
  server.once('error', onEarlyError);
  server.once('connect', () => {
    server.off('error', onEarlyError);
    if (client.destroyed) {
      server.destroy();
      return;
    }
    const { localAddress, localPort } = server;
    if (localAddress !== undefined && localPort !== undefined) {
      ipcNotify(ipcPath, 'claim', { address: upstream.address, port: upstream.listenPort, localAddress, localPort });
    }
    splice(client, server);
  });
}
