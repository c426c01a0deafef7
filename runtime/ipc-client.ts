/**
 * The redirector's IPC (protocol/ipc.ts) from a Node program of ours — `underpass forward` — rather than
 * from the hook: the same one request per connection, in node-ipc's wire form. node-ipc itself is not
 * loaded for it: its client reconnects and buffers for ever, where a command wants one clear answer.
 */
import net from 'node:net';
import { NoRedirectorError, ProtocolError, UnderpassError } from '../protocol/errors';
import {
  encodeIpcMessage,
  IPC_DELIMITER,
  IPC_MAX_MESSAGE,
  IPC_REPLY_EVENT,
  IpcMessages,
  tryDecodeIpcMessage,
  tryParseIpcReply,
  type IpcNotificationKind,
  type IpcReply,
  type IpcRequest,
  type IpcRequestKind,
} from '../protocol/ipc';

/** How long one request may wait for its reply (ms): the redirector answers a resolve after one round trip. */
const REPLY_TIMEOUT_MS = 20_000;

/** The one line for a redirector that is not there, as hook-run words it. */
export function noRedirectorMessage(ipcPath: string): string {
  return `no redirector at ${ipcPath}: start one with 'underpass redirector ... --ipc ${ipcPath}' or pass --ipc PATH of a running one`;
}

function connectError(ipcPath: string, e: NodeJS.ErrnoException): UnderpassError {
  if (e.code === 'EACCES' || e.code === 'EPERM') {
    return new NoRedirectorError(
      `not allowed to use the redirector at ${ipcPath}: it serves its own user only; run as that user`,
    );
  }
  return new NoRedirectorError(noRedirectorMessage(ipcPath));
}

/** Sends one request and resolves with its reply, parsed by the IPC table's schema (an error reply is a reply). */
export function ipcRequest<K extends IpcRequestKind>(
  ipcPath: string,
  kind: K,
  data: IpcRequest<K>,
): Promise<IpcReply<K>> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(ipcPath);
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new NoRedirectorError(`the redirector at ${ipcPath} did not answer within ${REPLY_TIMEOUT_MS / 1000} s`));
    }, REPLY_TIMEOUT_MS);
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
    };
    socket.once('error', (e: NodeJS.ErrnoException) => {
      done();
      reject(connectError(ipcPath, e));
    });
    socket.once('connect', () => socket.write(encodeIpcMessage(IpcMessages[kind].event, data)));
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      text += chunk;
      const end = text.indexOf(IPC_DELIMITER);
      if (end < 0 && text.length <= IPC_MAX_MESSAGE) return;
      done();
      const message = end < 0 ? null : tryDecodeIpcMessage(text.slice(0, end));
      const reply = message?.type === IPC_REPLY_EVENT ? tryParseIpcReply(kind, message.data) : null;
      if (reply === null) reject(new ProtocolError(`the redirector at ${ipcPath} sent a malformed reply`));
      else resolve(reply);
    });
    socket.once('end', () => {
      done();
      reject(new NoRedirectorError(`the redirector at ${ipcPath} closed without answering`));
    });
  });
}

/** Sends a notification (a claim): written, then the connection is closed; nothing comes back. */
export function ipcNotify<K extends IpcNotificationKind>(ipcPath: string, kind: K, data: IpcRequest<K>): void {
  const socket = net.connect(ipcPath);
  socket.on('error', () => undefined);
  socket.once('connect', () => socket.end(encodeIpcMessage(IpcMessages[kind].event, data)));
}
