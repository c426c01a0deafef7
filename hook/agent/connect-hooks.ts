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
import { AF_INET, F_GETFL, libcFunctions, MSG_FASTOPEN, MSGHDR, O_NONBLOCK } from './libc';
import { tryParseIPv4, type IPv4Endpoint } from '../../protocol/ipc-wire';
import { isForwardedName, tryForwardedAddressOf, tryStandInOf } from './forwarding';
import { listenPortOf, tryPublishedPortOf } from './listen-ports';
import type { PseudoSpace } from './pseudo-space';
import { claimConnection, learnListener, requestConnect } from './redirector-client';

/** Where a connect the redirector serves goes; `outside`: a forwarded address outside the pseudo network. */
interface Destination extends IPv4Endpoint {
  outside: boolean;
}

export function installConnectHooks(libc: Module, space: PseudoSpace): void {
  const { fcntl } = libcFunctions();
  const isBlocking = (fd: number): boolean => {
    const flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) === 0;
  };
  const destinationOf = (sockaddr: NativePointer, length: number): Destination | null => {
    const pseudo = space.tryPseudoDestination(sockaddr, length);
    if (pseudo !== null) return { ...pseudo, outside: false };
    const forwarded = space.tryForwardDestination(sockaddr, length);
    return forwarded === null ? null : { ...forwarded, outside: true };
  };
  /**
   * What connect(), sendto() and sendmsg() share once they know where a call goes (`destination`, null
   * when the redirector does not serve it): a blocking call asks the redirector first, and so does every
   * forwarded one (forwarding.ts says why), failing with its errno if refused; then the original `call`
   * runs — given the listener's address and port when they are not the app's, else null — and its
   * connection is claimed; the app gets the original's return value and errno.
   */
  const connectThrough = (
    fd: number,
    destination: Destination | null,
    errnoOut: NativePointer,
    call: (to: IPv4Endpoint | null) => SystemFunctionResult<number> | SystemFunctionResult<Int64>,
  ): number | Int64 => {
    if (destination === null) {
      const result = call(null);
      setCallerErrno(errnoOut, errnoOf(result));
      return result.value;
    }
    const blocking = isBlocking(fd);
    // Learnt before deciding: a reverse reply also says whether the address is a forwarded name's.
    if (!blocking && !destination.outside) learnListener(destination.address);
    if (blocking || destination.outside || isForwardedName(destination.address)) {
      const refused = requestConnect(destination.address, destination.port);
      if (refused !== 0) {
        setCallerErrno(errnoOut, refused);
        return -1;
      }
    }
    const address = (destination.outside ? tryStandInOf(destination.address) : null) ?? destination.address;
    const to = { address, port: listenPortOf(address, destination.port) };
    const result = call(to.address === destination.address && to.port === destination.port ? null : to);
    claimConnection(fd, to, result.value, errnoOf(result));
    setCallerErrno(errnoOut, errnoOf(result));
    return result.value;
  };

  replaceExport(libc, 'connect', (target) => {
    const original = new SystemFunction(target, 'int', ['int', 'pointer', 'uint']);
    return new NativeCallback(
      (fd: number, sockaddr: NativePointer, length: number, errnoOut: NativePointer): number => {
        const destination = destinationOf(sockaddr, length);
        // connect()'s original returns an int, so its result is a number.
        return connectThrough(fd, destination, errnoOut, (to) =>
          original(fd, to === null ? sockaddr : redirected(sockaddr, length, to), length),
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
        const destination = (flags & MSG_FASTOPEN) !== 0 ? destinationOf(sockaddr, addressLength) : null;
        return connectThrough(fd, destination, errnoOut, (to) =>
          original(
            fd,
            buffer,
            length,
            flags,
            to === null ? sockaddr : redirected(sockaddr, addressLength, to),
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
            ? destinationOf(message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32())
            : null;
        return connectThrough(fd, destination, errnoOut, (to) => {
          if (to === null) return original(fd, message, flags);
          // Both copies stay referenced here until the call returns: Frida frees what nothing refers to.
          const name = redirected(message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32(), to);
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

  // Pseudo peers reach this once some peer was rewritten (gates.ts): a moved listener's shows the
  // published port, a stand-in's the forwarded address.
  replaceExport(
    libc,
    'getpeername',
    () =>
      new NativeCallback(
        (_fd: number, sockaddr: NativePointer, length: number): void => {
          const peer = space.tryPseudoDestination(sockaddr, length);
          if (peer === null) return;
          const published = tryPublishedPortOf(peer.address, peer.port);
          const forwarded = tryForwardedAddressOf(peer.address);
          if (published !== null) writePort(sockaddr, published);
          if (forwarded !== null) writeAddress(sockaddr, forwarded);
        },
        'void',
        ['int', 'pointer', 'uint'],
      ),
  );
}

/**
 * A copy of the `length`-byte sockaddr at `sockaddr` (AF_INET, or AF_INET6 `::ffff:a.b.c.d`: the port
 * sits at 2) with the address and port of `to`.
 */
function redirected(sockaddr: NativePointer, length: number, to: IPv4Endpoint): NativePointer {
  const copy = Memory.alloc(length);
  Memory.copy(copy, sockaddr, length);
  writePort(copy, to.port);
  writeAddress(copy, to.address);
  return copy;
}

/** Writes the IPv4 `address` into an AF_INET sockaddr, or as `::ffff:a.b.c.d` into an AF_INET6 one. */
function writeAddress(sockaddr: NativePointer, address: string): void {
  const value = tryParseIPv4(address);
  if (value === null) return;
  const at = sockaddr.add(sockaddr.readU16() === AF_INET ? 4 : 20);
  at.writeByteArray([value >>> 24, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff]);
}

function writePort(sockaddr: NativePointer, port: number): void {
  sockaddr.add(2).writeU8(port >>> 8);
  sockaddr.add(3).writeU8(port & 0xff);
}
