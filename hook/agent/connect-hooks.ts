/**
 * Connects to pseudo addresses.
 *
 * The redirector listens on each pseudo address:port itself, so the app's own sockaddr is already the
 * right destination and is never modified (getpeername then answers what the app asked for). What the
 * hook adds is the seed's blocking semantics: a BLOCKING connect() asks the redirector first and returns
 * 0 only once the tunnel reached the real server, or -1/ECONNREFUSED. A NON-BLOCKING connect() makes no
 * IPC at all and keeps its EINPROGRESS semantics; the redirector opens the tunnel on accept and resets the
 * connection if that fails, which the app sees as a refused or reset connection.
 *
 * sendto()/sendmsg() with MSG_FASTOPEN connect without calling connect(), so they get the same check.
 * Everything else (AF_UNIX, other addresses, the agent's own IPC socket) goes to the original untouched.
 */
import { errnoOf, listenToExport, replaceExport, setCallerErrno } from './hooks';
import { F_GETFL, libcFunctions, MSG_FASTOPEN, MSGHDR, O_NONBLOCK } from './libc';
import type { PseudoSpace } from './pseudo-space';
import { requestConnect } from './redirector-client';

export function installConnectHooks(libc: Module, space: PseudoSpace): void {
  const { fcntl } = libcFunctions();
  const isBlocking = (fd: number): boolean => {
    const flags = fcntl(fd, F_GETFL);
    return flags >= 0 && (flags & O_NONBLOCK) === 0;
  };
  /** 0 to go ahead, else the errno to fail with. */
  const check = (fd: number, sockaddr: NativePointer, length: number): number => {
    const destination = space.tryPseudoDestination(sockaddr, length);
    if (destination === null || !isBlocking(fd)) return 0;
    return requestConnect(destination.address, destination.port);
  };

  replaceExport(libc, 'connect', (target) => {
    const original = new SystemFunction(target, 'int', ['int', 'pointer', 'uint']);
    return new NativeCallback(
      function (this: CallbackContext | InvocationContext, fd: number, sockaddr: NativePointer, length: number): number {
        const refused = check(fd, sockaddr, length);
        if (refused !== 0) {
          setCallerErrno(this, refused);
          return -1;
        }
        const result = original(fd, sockaddr, length);
        setCallerErrno(this, errnoOf(result));
        return result.value;
      },
      'int',
      ['int', 'pointer', 'uint'],
    );
  });

  // sendto()/sendmsg() are listened to, not replaced (hooks.ts says why): Frida writes every message of
  // its own transport with sendmsg(), on its own threads, so a replacement ran our JavaScript inside
  // Frida's transport. In a forked child, while Frida recovers from the fork (reconnecting to the host,
  // disposing of the script inherited from the parent), that thread died of SIGSEGV in Frida's JavaScript
  // runtime (issue 3: core dumps of `sh` show it in libc sendmsg -> our NativeCallback -> QuickJS). A
  // listener cannot return on the app's behalf, so a refused MSG_FASTOPEN send is made to fail at once on
  // descriptor -1, and its result and errno are rewritten on the way out.
  const fastOpenRefusal = {
    onLeave(this: InvocationContext, retval: InvocationReturnValue): void {
      const refused = (this as FastOpenInvocation).refusedWith;
      if (refused === undefined) return;
      retval.replace(ptr(-1));
      setCallerErrno(this, refused);
    },
  };

  listenToExport(libc, 'sendto', {
    onEnter(this: InvocationContext, args: InvocationArguments): void {
      if ((args[3]!.toInt32() & MSG_FASTOPEN) === 0) return;
      const refused = check(args[0]!.toInt32(), args[4]!, args[5]!.toUInt32());
      if (refused === 0) return;
      (this as FastOpenInvocation).refusedWith = refused;
      args[0] = ptr(-1);
    },
    ...fastOpenRefusal,
  });

  listenToExport(libc, 'sendmsg', {
    onEnter(this: InvocationContext, args: InvocationArguments): void {
      const message = args[1]!;
      if ((args[2]!.toInt32() & MSG_FASTOPEN) === 0 || message.isNull()) return;
      const refused = check(args[0]!.toInt32(), message.add(MSGHDR.name).readPointer(), message.add(MSGHDR.namelen).readU32());
      if (refused === 0) return;
      (this as FastOpenInvocation).refusedWith = refused;
      args[0] = ptr(-1);
    },
    ...fastOpenRefusal,
  });
}

/** What a MSG_FASTOPEN listener carries from entry to exit: the errno of a refused send. */
interface FastOpenInvocation {
  refusedWith?: number;
}
