/**
 * Connects to pseudo addresses.
 *
 * The redirector listens on each pseudo address:port itself, so the app's own sockaddr is already the
 * right destination and is never modified (getpeername then answers what the app asked for). What the
 * hook adds is the seed's blocking semantics: a BLOCKING connect() asks the redirector first and returns
 * 0 only once the tunnel reached the real server, or -1/ECONNREFUSED. A NON-BLOCKING connect() asks
 * nothing first and keeps its EINPROGRESS semantics; the redirector opens the tunnel on accept and resets
 * the connection if that fails, which the app sees as a refused or reset connection.
 *
 * After the original call, either kind claims the connection (redirector-client.ts): its listener admits
 * a claimed connection at once instead of looking up who owns the client in /proc, which costs
 * milliseconds on a machine with many sockets. The app's return value and errno stay the original's.
 *
 * sendto()/sendmsg() with MSG_FASTOPEN connect without calling connect(), so they get the same check.
 * Everything else (AF_UNIX, other addresses, the agent's own IPC socket) goes to the original untouched,
 * decided by the native gate (gates.ts) without entering these slow paths, which get errno's out-pointer
 * from the gate as their last argument.
 */
import { errnoOf, replaceExport, setCallerErrno } from './hooks';
import { F_GETFL, libcFunctions, MSG_FASTOPEN, MSGHDR, O_NONBLOCK } from './libc';
import type { PseudoSpace } from './pseudo-space';
import { claimConnection, requestConnect } from './redirector-client';

export function installConnectHooks(libc: Module, space: PseudoSpace): void {
  const { fcntl } = libcFunctions();
  const isBlocking = (fd: number): boolean => {
    const flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) === 0;
  };
  /** 0 to go ahead, else the errno to fail with. */
  const check = (fd: number, destination: { address: string; port: number } | null): number => {
    if (destination === null || !isBlocking(fd)) return 0;
    return requestConnect(destination.address, destination.port);
  };

  replaceExport(libc, 'connect', (target) => {
    const original = new SystemFunction(target, 'int', ['int', 'pointer', 'uint']);
    return new NativeCallback(
      (fd: number, sockaddr: NativePointer, length: number, errnoOut: NativePointer): number => {
        const destination = space.tryPseudoDestination(sockaddr, length);
        const refused = check(fd, destination);
        if (refused !== 0) {
          setCallerErrno(errnoOut, refused);
          return -1;
        }
        const result = original(fd, sockaddr, length);
        if (destination !== null) claimConnection(fd, destination, result.value, errnoOf(result));
        setCallerErrno(errnoOut, errnoOf(result));
        return result.value;
      },
      'int',
      ['int', 'pointer', 'uint', 'pointer'],
    );
  });

  replaceExport(libc, 'sendto', (target) => {
    const original = new SystemFunction(target, 'ssize_t', ['int', 'pointer', 'size_t', 'int', 'pointer', 'uint']);
    return new NativeCallback(
      (fd: number, buffer: NativePointer, length: UInt64, flags: number, sockaddr: NativePointer, addressLength: number, errnoOut: NativePointer): number | Int64 => {
        const destination = (flags & MSG_FASTOPEN) !== 0 ? space.tryPseudoDestination(sockaddr, addressLength) : null;
        const refused = check(fd, destination);
        if (refused !== 0) {
          setCallerErrno(errnoOut, refused);
          return -1;
        }
        const result = original(fd, buffer, length, flags, sockaddr, addressLength);
        if (destination !== null) claimConnection(fd, destination, result.value, errnoOf(result));
        setCallerErrno(errnoOut, errnoOf(result));
        return result.value;
      },
      'ssize_t',
      ['int', 'pointer', 'size_t', 'int', 'pointer', 'uint', 'pointer'],
    );
  });

  replaceExport(libc, 'sendmsg', (target) => {
    const original = new SystemFunction(target, 'ssize_t', ['int', 'pointer', 'int']);
    return new NativeCallback(
      (fd: number, message: NativePointer, flags: number, errnoOut: NativePointer): number | Int64 => {
        const destination = (flags & MSG_FASTOPEN) !== 0 && !message.isNull() ? space.tryPseudoDestination(message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32()) : null;
        const refused = check(fd, destination);
        if (refused !== 0) {
          setCallerErrno(errnoOut, refused);
          return -1;
        }
        const result = original(fd, message, flags);
        if (destination !== null) claimConnection(fd, destination, result.value, errnoOf(result));
        setCallerErrno(errnoOut, errnoOf(result));
        return result.value;
      },
      'ssize_t',
      ['int', 'pointer', 'int', 'pointer'],
    );
  });
}
