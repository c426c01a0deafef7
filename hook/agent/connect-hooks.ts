/**
 * Connects to pseudo addresses.
 *
 * The redirector listens on each pseudo address:port itself, so the app's own sockaddr is normally
 * already the right destination and is passed on untouched. What the hook adds is the seed's blocking
 * semantics: a BLOCKING connect() asks the redirector first and returns 0 only once the tunnel reached the
 * real server, or -1/ECONNREFUSED. A NON-BLOCKING connect() asks nothing first and keeps its EINPROGRESS
 * semantics; the redirector opens the tunnel on accept and resets the connection if that fails, which the
 * app sees as a refused or reset connection.
 *
 * When another program holds the published port on every local address, the redirector's listener is on
 * another port of the pseudo address (listen-ports.ts): the original call then gets a copy of the app's
 * sockaddr with that port (the app's memory is never written), and getpeername() on the socket answers
 * the published port again, so the app sees the peer it asked for.
 *
 * After the original call, either kind claims the connection (redirector-client.ts) with the ends it
 * really has: its listener admits a claimed connection at once instead of looking up who owns the client
 * in /proc, which costs milliseconds on a machine with many sockets. The app's return value and errno
 * stay the original's.
 *
 * sendto()/sendmsg() with MSG_FASTOPEN connect without calling connect(), so they get the same check.
 * Everything else (AF_UNIX, other addresses, the agent's own IPC socket) goes to the original untouched,
 * decided by the native gate (gates.ts) without entering these slow paths, which get errno's out-pointer
 * from the gate as their last argument.
 */
import { errnoOf, replaceExport, setCallerErrno } from './hooks';
import { F_GETFL, libcFunctions, MSG_FASTOPEN, MSGHDR, O_NONBLOCK } from './libc';
import type { IPv4Endpoint } from '../../protocol/ipc';
import { listenPortOf, tryPublishedPortOf } from './listen-ports';
import type { PseudoSpace } from './pseudo-space';
import { claimConnection, learnListener, requestConnect } from './redirector-client';

export function installConnectHooks(libc: Module, space: PseudoSpace): void {
  const { fcntl } = libcFunctions();
  const isBlocking = (fd: number): boolean => {
    const flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) === 0;
  };
  /**
   * What connect(), sendto() and sendmsg() share once they know where a call goes (`destination`, null
   * when it is not a pseudo address): a blocking call to a pseudo destination asks the redirector first
   * and fails with its errno if refused; then the original `call` runs — given the listener's port when
   * it is not the app's, else null — and its connection is claimed; the app gets the original's return
   * value and errno.
   */
  const connectThrough = (
    fd: number,
    destination: IPv4Endpoint | null,
    errnoOut: NativePointer,
    call: (movedTo: number | null) => SystemFunctionResult<number> | SystemFunctionResult<Int64>,
  ): number | Int64 => {
    if (destination === null) {
      const result = call(null);
      setCallerErrno(errnoOut, errnoOf(result));
      return result.value;
    }
    if (isBlocking(fd)) {
      const refused = requestConnect(destination.address, destination.port);
      if (refused !== 0) {
        setCallerErrno(errnoOut, refused);
        return -1;
      }
    } else {
      learnListener(destination.address);
    }
    const port = listenPortOf(destination.address, destination.port);
    const result = call(port === destination.port ? null : port);
    claimConnection(fd, { address: destination.address, port }, result.value, errnoOf(result));
    setCallerErrno(errnoOut, errnoOf(result));
    return result.value;
  };

  replaceExport(libc, 'connect', (target) => {
    const original = new SystemFunction(target, 'int', ['int', 'pointer', 'uint']);
    return new NativeCallback(
      (fd: number, sockaddr: NativePointer, length: number, errnoOut: NativePointer): number => {
        const destination = space.tryPseudoDestination(sockaddr, length);
        // connect()'s original returns an int, so its result is a number.
        return connectThrough(fd, destination, errnoOut, (movedTo) =>
          original(fd, movedTo === null ? sockaddr : withPort(sockaddr, length, movedTo), length),
        ) as number;
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
        return connectThrough(fd, destination, errnoOut, (movedTo) =>
          original(
            fd,
            buffer,
            length,
            flags,
            movedTo === null ? sockaddr : withPort(sockaddr, addressLength, movedTo),
            addressLength,
          ),
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
        return connectThrough(fd, destination, errnoOut, (movedTo) => {
          if (movedTo === null) return original(fd, message, flags);
          // Both copies stay referenced here until the call returns: Frida frees what nothing refers to.
          const name = withPort(message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32(), movedTo);
          const copy = Memory.alloc(MSGHDR.size);
          Memory.copy(copy, message, MSGHDR.size);
          copy.add(MSGHDR.name).writePointer(name);
          return original(fd, copy, flags);
        });
      },
      'ssize_t',
      ['int', 'pointer', 'int', 'pointer'],
    );
  });

  // Only sockets connected to a moved listener reach this (gates.ts): their peer shows the published port.
  replaceExport(
    libc,
    'getpeername',
    () =>
      new NativeCallback(
        (_fd: number, sockaddr: NativePointer, length: number): void => {
          const peer = space.tryPseudoDestination(sockaddr, length);
          const published = peer === null ? null : tryPublishedPortOf(peer.address, peer.port);
          if (published !== null) writePort(sockaddr, published);
        },
        'void',
        ['int', 'pointer', 'uint'],
      ),
  );
}

/** A copy of the `length`-byte sockaddr at `sockaddr` (AF_INET or AF_INET6: the port sits at 2) with `port`. */
function withPort(sockaddr: NativePointer, length: number, port: number): NativePointer {
  const copy = Memory.alloc(length);
  Memory.copy(copy, sockaddr, length);
  writePort(copy, port);
  return copy;
}

function writePort(sockaddr: NativePointer, port: number): void {
  sockaddr.add(2).writeU8(port >>> 8);
  sockaddr.add(3).writeU8(port & 0xff);
}
