/**
 * The C library as the agent sees it: glibc's exports resolved from the loaded libc (Frida 17 has no
 * static `Module.findExportByName`), the native functions the agent itself calls, and the constants and
 * struct offsets of Linux LP64 (x86_64 and aarch64 agree on every one used here).
 */

export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_RCVTIMEO = 20;
export const SO_SNDTIMEO = 21;
export const F_GETFL = 3;
export const O_NONBLOCK = 0o4000;
export const MSG_FASTOPEN = 0x20000000;

export const EINTR = 4;
export const ENOENT = 2;
export const EAGAIN = 11;
export const ETIMEDOUT = 110;
/** A non-blocking connect under way. */
export const EINPROGRESS = 115;
export const ECONNREFUSED = 111;

export const AI_CANONNAME = 0x2;
export const AI_NUMERICHOST = 0x4;
export const AI_V4MAPPED = 0x8;
export const NI_NUMERICHOST = 0x1;
export const EAI_NONAME = -2;
export const EAI_AGAIN = -3;
export const EAI_OVERFLOW = -12;

export const HOST_NOT_FOUND = 1;
export const TRY_AGAIN = 2;
export const NO_DATA = 4;

/** struct addrinfo (48 bytes). */
export const AI = {
  flags: 0,
  family: 4,
  socktype: 8,
  protocol: 12,
  addrlen: 16,
  addr: 24,
  canonname: 32,
  next: 40,
  size: 48,
};
/** struct hostent. */
export const HOSTENT = { name: 0, aliases: 8, addrtype: 16, length: 20, addrList: 24 };
/** struct msghdr: the destination fields, and its size (to copy one). */
export const MSGHDR = { name: 0, namelen: 8, size: 56 };

/** The loaded glibc, or null when the process has none (static binary, musl, Go without cgo). */
export function tryGetLibc(): Module | null {
  return Process.findModuleByName('libc.so.6');
}

export function getLibc(): Module {
  const libc = tryGetLibc();
  if (libc === null) throw new Error('libc.so.6 is not loaded in this process');
  return libc;
}

/**
 * Native functions the agent calls itself. Cooperative scheduling: the JS lock is released while they
 * block. read/write are declared to return `int`, not `long` (which Frida hands back as an Int64 object):
 * the agent never moves more than IPC_MAX_MESSAGE bytes at once.
 */
export interface LibcFunctions {
  socket: NativeFunction<number, [number, number, number]>;
  connect: SystemFunction<number, [number, NativePointerValue, number]>;
  write: SystemFunction<number, [number, NativePointerValue, number]>;
  read: SystemFunction<number, [number, NativePointerValue, number]>;
  close: NativeFunction<number, [number]>;
  setsockopt: NativeFunction<number, [number, number, number, NativePointerValue, number]>;
  fcntl: NativeFunction<number, [number, number]>;
  free: NativeFunction<void, [NativePointerValue]>;
  strdup: NativeFunction<NativePointer, [NativePointerValue]>;
  errnoLocation: NativeFunction<NativePointer, []>;
  hErrnoLocation: NativeFunction<NativePointer, []> | null;
}

let functions: LibcFunctions | null = null;

export function libcFunctions(): LibcFunctions {
  if (functions !== null) return functions;
  const libc = getLibc();
  const at = (name: string): NativePointer => libc.getExportByName(name);
  const hErrno = libc.findExportByName('__h_errno_location');
  functions = {
    socket: new NativeFunction(at('socket'), 'int', ['int', 'int', 'int']),
    connect: new SystemFunction(at('connect'), 'int', ['int', 'pointer', 'uint']),
    write: new SystemFunction(at('write'), 'int', ['int', 'pointer', 'ulong']),
    read: new SystemFunction(at('read'), 'int', ['int', 'pointer', 'ulong']),
    close: new NativeFunction(at('close'), 'int', ['int']),
    setsockopt: new NativeFunction(at('setsockopt'), 'int', ['int', 'int', 'int', 'pointer', 'uint']),
    fcntl: new NativeFunction(at('fcntl'), 'int', ['int', 'int']),
    free: new NativeFunction(at('free'), 'void', ['pointer']),
    strdup: new NativeFunction(at('strdup'), 'pointer', ['pointer']),
    errnoLocation: new NativeFunction(at('__errno_location'), 'pointer', []),
    hErrnoLocation: hErrno === null ? null : new NativeFunction(hErrno, 'pointer', []),
  };
  return functions;
}

/** Sets the calling thread's h_errno (the gethostbyname family's error channel). */
export function setHErrno(value: number): void {
  const location = libcFunctions().hErrnoLocation;
  if (location !== null) location().writeS32(value);
}

const strdupCache = new Map<string, NativePointer>();

/**
 * A C string in libc's heap holding `text`, made once per distinct text and never freed: hostent fields
 * the app may keep pointers to must outlive the agent (which may be unloaded) and never be freed by it.
 */
export function permanentCString(text: string): NativePointer {
  let pointer = strdupCache.get(text);
  if (pointer === undefined) {
    pointer = libcFunctions().strdup(Memory.allocUtf8String(text));
    strdupCache.set(text, pointer);
  }
  return pointer;
}

/** A fresh copy of `text` from libc's malloc, for the app to free (e.g. `ai_canonname`). */
export function mallocCString(text: string): NativePointer {
  return libcFunctions().strdup(Memory.allocUtf8String(text));
}
