/**
 * Synchronous, per-call IPC from inside a hooked process to the redirector (protocol/ipc.ts).
 *
 * A hooked thread is inside getaddrinfo() or connect() and must have its answer before it returns, so
 * each request is a blocking exchange on its own Unix socket: socket, connect, write one message, read
 * until the delimiter, close. The libc calls are NativeFunctions with cooperative scheduling, which release
 * the agent's JS lock while they block, so other threads keep resolving and connecting meanwhile. Each
 * thread reads the reply on its own descriptor, so a reply can only reach the thread that asked. Keeping
 * no descriptor open between requests means an app that closes every descriptor cannot break us.
 *
 * Reads are bounded by IPC_MAX_MESSAGE and a receive timeout, so a hung redirector stalls one call for at
 * most IPC_TIMEOUT_SECONDS instead of hanging the app.
 */
import type { IpcNotificationKind, IpcReply, IpcRequest, IpcRequestKind } from '../../protocol/ipc';
import { encodeIpcMessage, IPC_MAX_MESSAGE, IPC_REPLY_EVENT, tryDecodeIpcMessage } from '../../protocol/ipc-wire';
import { fitsShape } from '../../protocol/json-shape';
import { errnoOf } from './hooks';
import { ipcTable } from './ipc-table';
import { AF_UNIX, EINTR, libcFunctions, SO_RCVTIMEO, SO_SNDTIMEO, SOCK_CLOEXEC, SOCK_STREAM, SOL_SOCKET } from './libc';

/** Upper bound on one request's wait for the redirector (seconds). */
export const IPC_TIMEOUT_SECONDS = 10;

const SUN_PATH_MAX = 108;
const DELIMITER_BYTE = 0x0c;

/** Why an exchange failed before any reply arrived. */
export type IpcTransportFailure = 'UNREACHABLE' | 'TIMEOUT' | 'PROTOCOL';

export class IpcTransportError extends Error {
  readonly failure: IpcTransportFailure;
  constructor(failure: IpcTransportFailure, message: string) {
    super(message);
    this.name = 'IpcTransportError';
    this.failure = failure;
  }
}

let ipcPath: string | null = null;

export function setIpcPath(path: string): void {
  if (utf8Length(path) >= SUN_PATH_MAX) throw new Error(`IPC path is longer than ${SUN_PATH_MAX - 1} bytes: ${path}`);
  ipcPath = path;
}

export function getIpcPath(): string {
  if (ipcPath === null) throw new Error('IPC path not set (init was not called)');
  return ipcPath;
}

/**
 * Sends one request and returns the redirector's reply data, checked against the request's reply schema
 * (protocol/ipc.ts IpcMessages, as ipc-table.ts carries it). Throws IpcTransportError when the redirector
 * is unreachable, silent past the timeout, or answers something that is not a reply to this request.
 */
export function ipcRequest<K extends IpcRequestKind>(kind: K, data: IpcRequest<K>): IpcReply<K> {
  const fd = openChannel(IPC_TIMEOUT_SECONDS * 1000);
  try {
    writeAll(fd, encodeIpcMessage(ipcTable.events[kind], data));
    const message = tryDecodeIpcMessage(readMessage(fd));
    if (message === null || message.type !== IPC_REPLY_EVENT || !fitsShape(ipcTable.replies[kind], message.data)) {
      throw new IpcTransportError('PROTOCOL', `redirector sent something that is not a ${kind} reply`);
    }
    return message.data;
  } finally {
    libcFunctions().close(fd);
  }
}

/**
 * Sends one request and closes without reading the reply, for a request whose answer changes nothing
 * for the app: the calling thread never waits for the redirector to get round to it, only (at most
 * `timeoutMs`) for the socket to take the message. Throws IpcTransportError when it cannot be sent.
 */
export function ipcNotify<K extends IpcNotificationKind>(kind: K, data: IpcRequest<K>, timeoutMs: number): void {
  const fd = openChannel(timeoutMs);
  try {
    writeAll(fd, encodeIpcMessage(ipcTable.events[kind], data));
  } finally {
    libcFunctions().close(fd);
  }
}

/** A Unix socket connected to the redirector, with send and receive timeouts of `timeoutMs`. */
function openChannel(timeoutMs: number): number {
  const libc = libcFunctions();
  const path = getIpcPath();
  const fd = libc.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new IpcTransportError('UNREACHABLE', 'socket(AF_UNIX) failed');
  try {
    // struct timeval: seconds, then microseconds.
    const timeout = Memory.alloc(16);
    timeout.writeS64(Math.floor(timeoutMs / 1000));
    timeout.add(8).writeS64((timeoutMs % 1000) * 1000);
    libc.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, 16);
    libc.setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, timeout, 16);

    const address = Memory.alloc(2 + SUN_PATH_MAX);
    address.writeU16(AF_UNIX);
    address.add(2).writeUtf8String(path);
    let connected = libc.connect(fd, address, 2 + utf8Length(path) + 1);
    while (connected.value < 0 && errnoOf(connected) === EINTR)
      connected = libc.connect(fd, address, 2 + utf8Length(path) + 1);
    if (connected.value < 0)
      throw new IpcTransportError('UNREACHABLE', `cannot connect to ${path} (errno ${errnoOf(connected)})`);
    return fd;
  } catch (error) {
    libc.close(fd);
    throw error;
  }
}

function writeAll(fd: number, text: string): void {
  const libc = libcFunctions();
  const length = utf8Length(text);
  const buffer = Memory.allocUtf8String(text);
  let offset = 0;
  while (offset < length) {
    const written = libc.write(fd, buffer.add(offset), length - offset);
    if (written.value < 0) {
      if (errnoOf(written) === EINTR) continue;
      throw new IpcTransportError('UNREACHABLE', `write to redirector failed (errno ${errnoOf(written)})`);
    }
    offset += written.value;
  }
}

function readMessage(fd: number): string {
  const libc = libcFunctions();
  const buffer = Memory.alloc(IPC_MAX_MESSAGE);
  let length = 0;
  for (;;) {
    if (length >= IPC_MAX_MESSAGE)
      throw new IpcTransportError('PROTOCOL', `reply longer than ${IPC_MAX_MESSAGE} bytes`);
    const got = libc.read(fd, buffer.add(length), IPC_MAX_MESSAGE - length);
    if (got.value < 0) {
      if (errnoOf(got) === EINTR) continue;
      throw new IpcTransportError(
        'TIMEOUT',
        `no reply from redirector within ${IPC_TIMEOUT_SECONDS} s (errno ${errnoOf(got)})`,
      );
    }
    if (got.value === 0) throw new IpcTransportError('PROTOCOL', 'redirector closed the connection without a reply');
    const chunk = new Uint8Array(buffer.add(length).readByteArray(got.value) as ArrayBuffer);
    const at = chunk.indexOf(DELIMITER_BYTE);
    if (at >= 0) return buffer.readUtf8String(length + at) ?? '';
    length += got.value;
  }
}

/** Byte length of `text` in UTF-8. */
function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code < 0xdc00) {
      bytes += 4;
      i++;
    } else bytes += 3;
  }
  return bytes;
}
