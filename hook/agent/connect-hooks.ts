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
import type { IPv4Endpoint } from '../../protocol/ipc';
import type { PseudoSpace } from './pseudo-space';
import { claimConnection, requestConnect } from './redirector-client';

export function installConnectHooks(libc: Module, space: PseudoSpace): void {
  const { fcntl } = libcFunctions();
  const isBlocking = (fd: number): boolean => {
    const flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) === 0;
  };
  /**
   * What connect(), sendto() and sendmsg() share once they know where a call goes (`destination`, null
   * when it is not a pseudo address): a blocking call to a pseudo destination asks the redirector first
   * and fails with its errno if refused; then the original `call` runs and its connection is claimed;
   * the app gets the original's return value and errno.
   */
  const connectThrough = (
    fd: number,
    destination: IPv4Endpoint | null,
    errnoOut: NativePointer,
    call: () => SystemFunctionResult<number> | SystemFunctionResult<Int64>,
  ): number | Int64 => {
    const refused = destination !== null && isBlocking(fd) ? requestConnect(destination.address, destination.port) : 0;
    if (refused !== 0) {
      setCallerErrno(errnoOut, refused);
      return -1;
    }
    const result = call();
    if (destination !== null) claimConnection(fd, destination, result.value, errnoOf(result));
    setCallerErrno(errnoOut, errnoOf(result));
    return result.value;
  };

  replaceExport(libc, 'connect', (target) => {
    const original = new SystemFunction(target, 'int', ['int', 'pointer', 'uint']);
    return new NativeCallback(
      (fd: number, sockaddr: NativePointer, length: number, errnoOut: NativePointer): number => {
        const destination = space.tryPseudoDestination(sockaddr, length);
        // connect()'s original returns an int, so its result is a number.
        return connectThrough(fd, destination, errnoOut, () => original(fd, sockaddr, length)) as number;
      },
      'int',
      ['int', 'pointer', 'uint', 'pointer'],
    );
  });

  replaceExport(libc, 'sendto', (target) => {
    const original = new SystemFunction(target, 'ssize_t', ['int', 'pointer', 'size_t', 'int', 'pointer', 'uint']);
    return new NativeCallback(
      (
        fd: number,
        buffer: NativePointer,
        length: UInt64,
        flags: number,
        sockaddr: NativePointer,
        addressLength: number,
        errnoOut: NativePointer,
      ): number | Int64 => {
        const destination = (flags & MSG_FASTOPEN) !== 0 ? space.tryPseudoDestination(sockaddr, addressLength) : null;
        return connectThrough(fd, destination, errnoOut, () =>
          original(fd, buffer, length, flags, sockaddr, addressLength),
        );
      },
      'ssize_t',
      ['int', 'pointer', 'size_t', 'int', 'pointer', 'uint', 'pointer'],
    );
  });

  replaceExport(libc, 'sendmsg', (target) => {
    const original = new SystemFunction(target, 'ssize_t', ['int', 'pointer', 'int']);
    return new NativeCallback(
      (fd: number, message: NativePointer, flags: number, errnoOut: NativePointer): number | Int64 => {
        const destination =
          (flags & MSG_FASTOPEN) !== 0 && !message.isNull()
            ? space.tryPseudoDestination(message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32())
            : null;
        return connectThrough(fd, destination, errnoOut, () => original(fd, message, flags));
      },
      'ssize_t',
      ['int', 'pointer', 'int', 'pointer'],
    );
  });
}
