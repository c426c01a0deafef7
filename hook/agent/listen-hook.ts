/**
 * Remote listening (`hook-run --publish NAME -- SERVER_APP`): after the app's listen() succeeds on a TCP
 * socket, the redirector is asked to publish NAME for it (it acts as that app's service proxy), and the
 * pseudo name it got is sent to the controller, which prints it. Only the first listening socket of the
 * process is published: a server with several is published once, on the port it opened first; the
 * others are named in a warning.
 *
 * listen() is called a handful of times in a process's life, so it is hooked with a plain Interceptor
 * listener in JavaScript, not through the native gates the per-call hooks need.
 */
import { ipcRequest } from './ipc-client';

const AF_INET = 2;
const AF_INET6 = 10;
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SOCK_STREAM = 1;

let listener: InvocationListener | null = null;
let published: number | null = null;

interface SocketQueries {
  getsockname: NativeFunction<number, [number, NativePointerValue, NativePointerValue]>;
  getsockopt: NativeFunction<number, [number, number, number, NativePointerValue, NativePointerValue]>;
}

/** The descriptor each thread is passing to listen(), from onEnter to onLeave. */
const pendingFd = new Map<number, number>();

/** The address and port a socket is bound to, for TCP sockets of IPv4 or IPv6; null otherwise. */
function tryTcpEndpoint(
  { getsockname, getsockopt }: SocketQueries,
  fd: number,
): { address: string; port: number } | null {
  const type = Memory.alloc(4);
  const typeLength = Memory.alloc(4);
  typeLength.writeU32(4);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, type, typeLength) !== 0 || type.readS32() !== SOCK_STREAM) return null;
  const address = Memory.alloc(128);
  const length = Memory.alloc(4);
  length.writeU32(128);
  if (getsockname(fd, address, length) !== 0) return null;
  const family = address.readU16();
  const port = (address.add(2).readU8() << 8) | address.add(3).readU8();
  if (family === AF_INET) {
    const bytes = new Uint8Array(address.add(4).readByteArray(4) ?? new ArrayBuffer(4));
    return { address: Array.from(bytes).join('.'), port };
  }
  if (family === AF_INET6) {
    const bytes = new Uint8Array(address.add(8).readByteArray(16) ?? new ArrayBuffer(16));
    const words: string[] = [];
    for (let i = 0; i < 16; i += 2) words.push(((bytes[i]! << 8) | bytes[i + 1]!).toString(16));
    // A v4-mapped address is the IPv4 one; `::` and the rest in their long form, which the redirector takes.
    const text = words.join(':');
    if (text === '0:0:0:0:0:0:0:0') return { address: '::', port };
    if (text.startsWith('0:0:0:0:0:ffff:')) return { address: Array.from(bytes.slice(12)).join('.'), port };
    return { address: text, port };
  }
  return null;
}

/** Hooks listen() so that the process's first listening TCP socket is published as `name`. */
export function installListenHook(libc: Module, name: string): void {
  if (listener !== null) return;
  const target = libc.findExportByName('listen');
  if (target === null) return;
  // Made once, here, rather than at every listen().
  const queries: SocketQueries = {
    getsockname: new NativeFunction(libc.getExportByName('getsockname'), 'int', ['int', 'pointer', 'pointer']),
    getsockopt: new NativeFunction(libc.getExportByName('getsockopt'), 'int', [
      'int',
      'int',
      'int',
      'pointer',
      'pointer',
    ]),
  };
  listener = Interceptor.attach(target, {
    onEnter(args) {
      pendingFd.set(this.threadId, args[0]!.toInt32());
    },
    onLeave(retval) {
      const fd = pendingFd.get(this.threadId);
      pendingFd.delete(this.threadId);
      if (fd === undefined || retval.toInt32() !== 0) return;
      const endpoint = tryTcpEndpoint(queries, fd);
      if (endpoint === null) return;
      if (published !== null) {
        if (published !== endpoint.port)
          send({
            type: 'warning',
            message: `port ${endpoint.port} is not published: only the first listening socket (port ${published}) is`,
          });
        return;
      }
      published = endpoint.port;
      try {
        const reply = ipcRequest('publish', { name, address: endpoint.address, port: endpoint.port, pid: Process.id });
        if (reply.ok) send({ type: 'published', event: 'published', name, host: reply.host, port: reply.port });
        else send({ type: 'warning', message: `could not publish ${name}: ${reply.message}` });
      } catch (error) {
        send({
          type: 'warning',
          message: `could not publish ${name}: ${error instanceof Error ? error.message : String(error)}`,
        });
      }
    },
  });
}

export function revertListenHook(): void {
  listener?.detach();
  listener = null;
}
