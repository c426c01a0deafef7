/**
 * Lookups of pseudo names, answered in-process.
 *
 * Each hook answers a pseudo name by calling the ORIGINAL function with the numeric pseudo address, so
 * every structure the app gets back is glibc's own (an addrinfo list from glibc's malloc, glibc's static
 * or the caller's hostent): the real freeaddrinfo frees it, and nothing points into memory Frida's GC or
 * an unloaded agent could reclaim. That is why freeaddrinfo needs no hook. Any other name goes to the
 * original untouched, with no IPC.
 *
 * Reverse lookups (getnameinfo, gethostbyaddr[_r]) of a pseudo address answer the pseudo name, so that
 * an app that prints its peer's name sees the name it asked for.
 */
import { formatIPv4 } from '../../protocol/ipc-wire';
import { replaceExport, tryReadCString } from './hooks';
import {
  AF_INET,
  AF_INET6,
  AI,
  AI_CANONNAME,
  AI_NUMERICHOST,
  AI_V4MAPPED,
  EAGAIN,
  EAI_AGAIN,
  EAI_NONAME,
  EAI_OVERFLOW,
  ENOENT,
  HOST_NOT_FOUND,
  HOSTENT,
  libcFunctions,
  mallocCString,
  NI_NUMERICHOST,
  permanentCString,
  setHErrno,
  NO_DATA,
  TRY_AGAIN,
} from './libc';
import { readU32BigEndian, type PseudoSpace } from './pseudo-space';
import { resolvePseudoName, tryReverse } from './redirector-client';
import type { ResolveOutcome } from './redirector-client';

export function installResolveHooks(libc: Module, space: PseudoSpace): void {
  /** The pseudo name `node` names, or null for every other (or unreadable) name. */
  const pseudoOf = (node: NativePointer): string | null => {
    const name = tryReadCString(node);
    return name === null ? null : space.tryPseudoName(name);
  };

  replaceExport(libc, 'getaddrinfo', (target) => {
    const original = new NativeFunction(target, 'int', ['pointer', 'pointer', 'pointer', 'pointer']);
    return new NativeCallback(
      (node: NativePointer, service: NativePointer, hints: NativePointer, res: NativePointer): number => {
        const flags = hints.isNull() ? 0 : hints.add(AI.flags).readS32();
        const pseudo = (flags & AI_NUMERICHOST) !== 0 ? null : pseudoOf(node);
        if (pseudo === null) return original(node, service, hints, res);
        const outcome = resolvePseudoName(pseudo);
        if (outcome.kind !== 'ok') return outcome.kind === 'not-found' ? EAI_NONAME : EAI_AGAIN;
        let effectiveHints = hints;
        if (!hints.isNull() && hints.add(AI.family).readS32() === AF_INET6) {
          // A v6-only caller gets ::ffff:a.b.c.d; the caller's hints are never written.
          effectiveHints = Memory.alloc(AI.size);
          Memory.copy(effectiveHints, hints, AI.size);
          effectiveHints.add(AI.flags).writeS32(flags | AI_V4MAPPED);
        }
        const status = original(Memory.allocUtf8String(outcome.address), service, effectiveHints, res);
        if (status === 0 && (flags & AI_CANONNAME) !== 0) {
          const first = res.readPointer();
          const canonical = first.add(AI.canonname);
          const old = canonical.readPointer();
          if (!old.isNull()) libcFunctions().free(old);
          canonical.writePointer(mallocCString(outcome.name));
        }
        return status;
      },
      'int',
      ['pointer', 'pointer', 'pointer', 'pointer'],
    );
  });

  replaceExport(libc, 'gethostbyname', (target) => {
    const original = new NativeFunction(target, 'pointer', ['pointer']);
    return new NativeCallback(
      (name: NativePointer): NativePointer => {
        const pseudo = pseudoOf(name);
        if (pseudo === null) return original(name);
        const outcome = resolvePseudoName(pseudo);
        if (outcome.kind !== 'ok') return failStatic(outcome);
        return renamed(original(Memory.allocUtf8String(outcome.address)), outcome.name);
      },
      'pointer',
      ['pointer'],
    );
  });

  replaceExport(libc, 'gethostbyname2', (target) => {
    const original = new NativeFunction(target, 'pointer', ['pointer', 'int']);
    return new NativeCallback(
      (name: NativePointer, family: number): NativePointer => {
        const pseudo = family === AF_INET || family === AF_INET6 ? pseudoOf(name) : null;
        if (pseudo === null) return original(name, family);
        const outcome = family === AF_INET6 ? NO_IPV6 : resolvePseudoName(pseudo);
        if (outcome.kind !== 'ok') return failStatic(outcome);
        return renamed(original(Memory.allocUtf8String(outcome.address), family), outcome.name);
      },
      'pointer',
      ['pointer', 'int'],
    );
  });

  replaceExport(libc, 'gethostbyname_r', (target) => {
    const original = new NativeFunction(target, 'int', [
      'pointer',
      'pointer',
      'pointer',
      'size_t',
      'pointer',
      'pointer',
    ]);
    return new NativeCallback(
      (
        name: NativePointer,
        ret: NativePointer,
        buf: NativePointer,
        buflen: UInt64,
        result: NativePointer,
        hErrno: NativePointer,
      ): number => {
        const pseudo = pseudoOf(name);
        if (pseudo === null) return original(name, ret, buf, buflen, result, hErrno);
        const outcome = resolvePseudoName(pseudo);
        if (outcome.kind !== 'ok') return failReentrant(outcome, result, hErrno);
        const status = original(Memory.allocUtf8String(outcome.address), ret, buf, buflen, result, hErrno);
        renamed(result.readPointer(), outcome.name);
        return status;
      },
      'int',
      ['pointer', 'pointer', 'pointer', 'size_t', 'pointer', 'pointer'],
    );
  });

  replaceExport(libc, 'gethostbyname2_r', (target) => {
    const original = new NativeFunction(target, 'int', [
      'pointer',
      'int',
      'pointer',
      'pointer',
      'size_t',
      'pointer',
      'pointer',
    ]);
    return new NativeCallback(
      (
        name: NativePointer,
        family: number,
        ret: NativePointer,
        buf: NativePointer,
        buflen: UInt64,
        result: NativePointer,
        hErrno: NativePointer,
      ): number => {
        const pseudo = family === AF_INET || family === AF_INET6 ? pseudoOf(name) : null;
        if (pseudo === null) return original(name, family, ret, buf, buflen, result, hErrno);
        const outcome = family === AF_INET6 ? NO_IPV6 : resolvePseudoName(pseudo);
        if (outcome.kind !== 'ok') return failReentrant(outcome, result, hErrno);
        const status = original(Memory.allocUtf8String(outcome.address), family, ret, buf, buflen, result, hErrno);
        renamed(result.readPointer(), outcome.name);
        return status;
      },
      'int',
      ['pointer', 'int', 'pointer', 'pointer', 'size_t', 'pointer', 'pointer'],
    );
  });

  installReverseHooks(libc, space);
}

function installReverseHooks(libc: Module, space: PseudoSpace): void {
  /** The pseudo name of a raw in_addr / in6_addr (network order), or null. */
  const reverseOf = (address: NativePointer, length: number, family: number): string | null => {
    if (address.isNull()) return null;
    let value: number;
    if (family === AF_INET && length >= 4) value = readU32BigEndian(address);
    else if (
      family === AF_INET6 &&
      length >= 16 &&
      address.readU64().toNumber() === 0 &&
      address.add(8).readU32() === 0xffff0000
    )
      value = readU32BigEndian(address.add(12));
    else return null;
    return space.isPseudoAddress(value) ? tryReverse(formatIPv4(value)) : null;
  };

  const gethostbyname2 = libc.findExportByName('gethostbyname2');
  if (gethostbyname2 !== null) {
    // Called from inside another replacement, this goes through our gethostbyname2 hook, which passes a
    // numeric string straight to glibc.
    const byName = new NativeFunction(gethostbyname2, 'pointer', ['pointer', 'int']);
    replaceExport(libc, 'gethostbyaddr', (target) => {
      const original = new NativeFunction(target, 'pointer', ['pointer', 'uint', 'int']);
      return new NativeCallback(
        (address: NativePointer, length: number, family: number): NativePointer => {
          const name = reverseOf(address, length, family);
          if (name === null) return original(address, length, family);
          return renamed(byName(Memory.allocUtf8String(numericOfRaw(address, family)), family), name);
        },
        'pointer',
        ['pointer', 'uint', 'int'],
      );
    });
  }

  const gethostbyname2R = libc.findExportByName('gethostbyname2_r');
  if (gethostbyname2R !== null) {
    const byName = new NativeFunction(gethostbyname2R, 'int', [
      'pointer',
      'int',
      'pointer',
      'pointer',
      'size_t',
      'pointer',
      'pointer',
    ]);
    replaceExport(libc, 'gethostbyaddr_r', (target) => {
      const original = new NativeFunction(target, 'int', [
        'pointer',
        'uint',
        'int',
        'pointer',
        'pointer',
        'size_t',
        'pointer',
        'pointer',
      ]);
      return new NativeCallback(
        (
          address: NativePointer,
          length: number,
          family: number,
          ret: NativePointer,
          buf: NativePointer,
          buflen: UInt64,
          result: NativePointer,
          hErrno: NativePointer,
        ): number => {
          const name = reverseOf(address, length, family);
          if (name === null) return original(address, length, family, ret, buf, buflen, result, hErrno);
          const status = byName(
            Memory.allocUtf8String(numericOfRaw(address, family)),
            family,
            ret,
            buf,
            buflen,
            result,
            hErrno,
          );
          renamed(result.readPointer(), name);
          return status;
        },
        'int',
        ['pointer', 'uint', 'int', 'pointer', 'pointer', 'size_t', 'pointer', 'pointer'],
      );
    });
  }

  replaceExport(libc, 'getnameinfo', (target) => {
    const original = new NativeFunction(target, 'int', [
      'pointer',
      'uint',
      'pointer',
      'uint',
      'pointer',
      'uint',
      'int',
    ]);
    return new NativeCallback(
      (
        sockaddr: NativePointer,
        length: number,
        host: NativePointer,
        hostLength: number,
        service: NativePointer,
        serviceLength: number,
        flags: number,
      ): number => {
        const wantsName = !host.isNull() && hostLength > 0 && (flags & NI_NUMERICHOST) === 0;
        const destination = wantsName ? space.tryPseudoDestination(sockaddr, length) : null;
        const name = destination === null ? null : tryReverse(destination.address);
        if (name === null) return original(sockaddr, length, host, hostLength, service, serviceLength, flags);
        if (!service.isNull() && serviceLength > 0) {
          const status = original(sockaddr, length, NULL, 0, service, serviceLength, flags);
          if (status !== 0) return status;
        }
        if (name.length + 1 > hostLength) return EAI_OVERFLOW;
        host.writeUtf8String(name);
        return 0;
      },
      'int',
      ['pointer', 'uint', 'pointer', 'uint', 'pointer', 'uint', 'int'],
    );
  });
}

/**
 * gethostbyname2[_r](pseudo, AF_INET6) answers "no address of that family" (h_errno NO_DATA), as glibc
 * does for any IPv4-only name, so callers such as `getent hosts` fall back to AF_INET; no IPC is made.
 * (getaddrinfo with AF_INET6 hints is different: it answers ::ffff:a.b.c.d, see above.)
 */
const NO_IPV6 = { kind: 'no-data' } as const;

function numericOfRaw(address: NativePointer, family: number): string {
  return family === AF_INET6
    ? `::ffff:${formatIPv4(readU32BigEndian(address.add(12)))}`
    : formatIPv4(readU32BigEndian(address));
}

/** Points a hostent's h_name at the pseudo name (a permanent copy: hostents may be kept for ever). */
function renamed(hostent: NativePointer, name: string): NativePointer {
  if (!hostent.isNull()) hostent.add(HOSTENT.name).writePointer(permanentCString(name));
  return hostent;
}

type Failure = Exclude<ResolveOutcome, { kind: 'ok' }> | typeof NO_IPV6;

function hErrnoFor(outcome: Failure): number {
  return outcome.kind === 'not-found' ? HOST_NOT_FOUND : outcome.kind === 'no-data' ? NO_DATA : TRY_AGAIN;
}

function failStatic(outcome: Failure): NativePointer {
  setHErrno(hErrnoFor(outcome));
  return NULL;
}

function failReentrant(outcome: Failure, result: NativePointer, hErrno: NativePointer): number {
  result.writePointer(NULL);
  if (!hErrno.isNull()) hErrno.writeS32(hErrnoFor(outcome));
  return outcome.kind === 'again' ? EAGAIN : ENOENT;
}
