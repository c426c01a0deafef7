/**
 * Keeps Frida's own descriptors out of reach of the app's "close everything" sweeps.
 *
 * Why: an injected Frida agent lives on descriptors in the app's own table (its socket to the controller,
 * the eventfds that wake its GLib main loops). A program that closes every inherited descriptor, as
 * OpenSSH does first thing in main (`closefrom(STDERR_FILENO + 1)`), as Python's `os.closerange` and
 * daemons do, closes those too; the agent's threads then never wake, and the process hangs for ever in
 * exit (a futex in the agent's memory), with or without our script. Frida cloaks these descriptors
 * (`Cloak.hasFileDescriptor`) but, on Linux, nothing stops the app from closing them.
 *
 * So the sweeps skip them: `close`, `close_range`, `closefrom` and `syscall(SYS_close | SYS_close_range)`
 * are replaced by native gates (a CModule) that leave a cloaked descriptor open and answer as if it had
 * been closed. A call from Frida's own code (its return address inside the agent's mapping) passes
 * untouched: Frida must still close what it opened. Every other descriptor is closed as asked.
 *
 * `close` and `syscall` are hot, so their gates decide in C against a table of the cloaked descriptors,
 * written here from `Cloak`; everything else they pass straight to the original. The table can only be
 * read in C, and Frida's set changes (it reopens its socket after a fork), so it is rewritten whenever a
 * sweep (`close_range`, `closefrom`, which are rare and go to JavaScript) runs, at install, and after
 * each fork. A descriptor dup2()'d over a cloaked one is not guarded: no app does that by accident.
 */
import { libcFunctions } from './libc';

/** System call numbers (close_range is 436 on every Linux architecture). */
const SYS_CLOSE: Partial<Record<Architecture, number>> = { x64: 3, arm64: 57 };
const SYS_FSTAT: Partial<Record<Architecture, number>> = { x64: 5, arm64: 80 };
/** Where struct stat keeps st_mode: after st_dev, st_ino and (x86_64 only) st_nlink. */
const ST_MODE_OFFSET: Partial<Record<Architecture, number>> = { x64: 24, arm64: 16 };
const SYS_CLOSE_RANGE = 436;
const ENOSYS = 38;
/** close_range's "to the end" upper bound. */
const ALL_FDS = 0xffffffff;

/** struct up_fd_config: the table, the agent's mapping [lo, hi), originals and slow paths. */
const CONFIG = {
  table: 0,
  agentLo: 8,
  agentHi: 16,
  close: 24,
  closeRange: 32,
  syscall: 40,
  slowCloseRange: 48,
  size: 56,
};

const SOURCE = (sysClose: number, sysFstat: number, stModeOffset: number): string => `
#include <gum/guminterceptor.h>

#define SYS_CLOSE ${sysClose}
#define SYS_FSTAT ${sysFstat}
#define ST_MODE_OFFSET ${stModeOffset}
#define SYS_CLOSE_RANGE ${SYS_CLOSE_RANGE}

struct up_fd_config {
  /* count, then that many descriptors; replaced as a whole, never written in place */
  const int * volatile table;
  unsigned long agent_lo;
  unsigned long agent_hi;
  void * close;
  void * close_range;
  void * syscall;
  void * slow_close_range;
};

extern struct up_fd_config up_fd_config;
extern int * __errno_location (void);

typedef int (* up_close_fn) (int);
typedef int (* up_close_range_fn) (unsigned int, unsigned int, int);
typedef int (* up_slow_close_range_fn) (unsigned int, unsigned int, int, int *);
typedef long (* up_syscall_fn) (long, long, long, long, long, long, long);

static int up_is_cloaked (long fd)
{
  const int * t = up_fd_config.table;
  int i;
  if (t == 0)
    return 0;
  for (i = 1; i <= t[0]; i++)
    if (t[i] == fd)
      return 1;
  return 0;
}

/*
 * Whether a descriptor the table names is still of a kind Frida's are (a socket, or an anonymous inode
 * such as an eventfd, whose stat has no file type). A forked child carries its parent's table, and
 * numbers Frida gave up there may come back as the app's own pipe or file (bash's command
 * substitutions): skipping the close of such a pipe would leave its reader waiting for ever.
 */
static int up_still_frida (long fd)
{
  unsigned long st[32];
  unsigned int type;
  if (SYS_FSTAT < 0 || up_fd_config.syscall == 0)
    return 1;
  if (((up_syscall_fn) up_fd_config.syscall) (SYS_FSTAT, fd, (long) st, 0, 0, 0, 0) != 0)
    return 1;
  type = *(unsigned int *) ((char *) st + ST_MODE_OFFSET) & 0170000;
  return type == 0140000 || type == 0;
}

/* Frida's own code closing what it opened: the caller of the replaced function is inside the agent. */
static int up_from_agent (void)
{
  GumInvocationContext * ic = gum_interceptor_get_current_invocation ();
  unsigned long caller;
  if (ic == NULL)
    return 0;
  caller = (unsigned long) gum_invocation_context_get_return_address (ic);
  return caller >= up_fd_config.agent_lo && caller < up_fd_config.agent_hi;
}

int up_close (int fd)
{
  if (up_is_cloaked (fd) && !up_from_agent () && up_still_frida (fd))
    return 0;
  return ((up_close_fn) up_fd_config.close) (fd);
}

int up_close_range (unsigned int first, unsigned int last, int flags)
{
  int err = -1;
  int r;
  if (up_from_agent ())
    return ((up_close_range_fn) up_fd_config.close_range) (first, last, flags);
  r = ((up_slow_close_range_fn) up_fd_config.slow_close_range) (first, last, flags, &err);
  if (err >= 0)
    *__errno_location () = err;
  return r;
}

void up_closefrom (int lowfd)
{
  int err = -1;
  if (lowfd < 0)
    lowfd = 0;
  ((up_slow_close_range_fn) up_fd_config.slow_close_range) ((unsigned int) lowfd, ${ALL_FDS}U, 0, &err);
}

long up_syscall (long n, long a, long b, long c, long d, long e, long f)
{
  if (n == SYS_CLOSE && up_is_cloaked (a) && !up_from_agent () && up_still_frida (a))
    return 0;
  if (n == SYS_CLOSE_RANGE && !up_from_agent ())
  {
    int err = -1;
    long r = ((up_slow_close_range_fn) up_fd_config.slow_close_range) ((unsigned int) a, (unsigned int) b, (int) c, &err);
    if (err >= 0)
      *__errno_location () = err;
    return r;
  }
  return ((up_syscall_fn) up_fd_config.syscall) (n, a, b, c, d, e, f);
}
`;

interface Guard {
  config: NativePointer;
  module: CModule;
  replaced: { name: string; target: NativePointer }[];
  /** Native callbacks and tables the gates point at: they must live as long as the gates. */
  keep: NativePointer[];
  /** Closes [first, last] with the original close_range (or the system call), or returns its errno. */
  closeRange: (first: number, last: number, flags: number) => number;
}

let guard: Guard | null = null;

/**
 * Installs the gates (once per process); returns the names of the functions it guards. Fails softly:
 * a libc without close_range/closefrom (older than 2.34) gets the gates it has exports for.
 */
export function installFdGuard(libc: Module): string[] {
  if (guard !== null) return guardedNames();
  const sysClose = SYS_CLOSE[Process.arch];
  const config = Memory.alloc(CONFIG.size);
  const module = new CModule(SOURCE(sysClose ?? -1, SYS_FSTAT[Process.arch] ?? -1, ST_MODE_OFFSET[Process.arch] ?? 0), {
    up_fd_config: config,
    __errno_location: libcFunctions().errnoLocation,
  });
  const [lo, hi] = agentRange();
  config.add(CONFIG.agentLo).writePointer(lo);
  config.add(CONFIG.agentHi).writePointer(hi);

  const close = libc.getExportByName('close');
  const closeRangeExport = libc.findExportByName('close_range');
  const closefromExport = libc.findExportByName('closefrom');
  const syscallExport = libc.findExportByName('syscall');
  // Called from inside a replacement (the sweep's slow path runs inside close_range's, closefrom's or
  // syscall's), these reach the originals; close_range from inside closefrom's replacement goes through
  // close_range's gate once more, which finds nothing left to skip.
  let rawCloseRange: (first: number, last: number, flags: number) => number = () => ENOSYS;
  if (closeRangeExport !== null) {
    const call = new SystemFunction(closeRangeExport, 'int', ['uint', 'uint', 'int']);
    rawCloseRange = errnoOfCall((first, last, flags) => call(first, last, flags));
  } else if (syscallExport !== null) {
    const call = new SystemFunction(syscallExport, 'long', ['long', 'uint', 'uint', 'int']);
    rawCloseRange = errnoOfCall((first, last, flags) => call(SYS_CLOSE_RANGE, first, last, flags));
  }
  const slowCloseRange = new NativeCallback(
    (first: number, last: number, flags: number, errnoOut: NativePointer): number => {
      const errno = closeAround(first >>> 0, last >>> 0, flags, rawCloseRange, close);
      if (errno === 0) return 0;
      errnoOut.writeS32(errno);
      return -1;
    },
    'int',
    ['uint', 'uint', 'int', 'pointer'],
  );
  config.add(CONFIG.close).writePointer(close);
  config.add(CONFIG.closeRange).writePointer(closeRangeExport ?? NULL);
  config.add(CONFIG.syscall).writePointer(syscallExport ?? NULL);
  config.add(CONFIG.slowCloseRange).writePointer(slowCloseRange);

  guard = { config, module, replaced: [], keep: [slowCloseRange], closeRange: rawCloseRange };
  refreshCloakedTable();
  const gates: [string, NativePointer | null][] = [
    ['close', close],
    ['close_range', closeRangeExport],
    ['closefrom', closefromExport],
    ['syscall', sysClose === undefined ? null : syscallExport],
  ];
  for (const [name, target] of gates) {
    if (target === null) continue;
    const gate: unknown = module[`up_${name}`];
    if (!(gate instanceof NativePointer)) throw new Error(`the fd guard lacks up_${name}`);
    Interceptor.replace(target, gate);
    guard.replaced.push({ name, target });
  }
  return guardedNames();
}

/** Reverts the gates; the module and its table stay referenced until the script unloads. */
export function revertFdGuard(): void {
  if (guard === null) return;
  for (const { target } of guard.replaced) Interceptor.revert(target);
  Interceptor.flush();
  guard.replaced.length = 0;
  guard = null;
}

function guardedNames(): string[] {
  return guard === null ? [] : guard.replaced.map(({ name }) => name);
}

/**
 * Closes [first, last] except the cloaked descriptors, in runs between them; 0, or the first errno.
 * Falls back to closing one by one where the kernel has no close_range (ENOSYS).
 */
function closeAround(
  first: number,
  last: number,
  flags: number,
  rawCloseRange: (first: number, last: number, flags: number) => number,
  close: NativePointer,
): number {
  const open = openDescriptors();
  const cloaked = writeTable(open.filter((fd) => Cloak.hasFileDescriptor(fd)));
  const skipped = cloaked.filter((fd) => fd >= first && fd <= last).sort((a, b) => a - b);
  let errno = 0;
  let start = first;
  const runs: [number, number][] = [];
  for (const fd of skipped) {
    if (fd > start) runs.push([start, fd - 1]);
    start = fd + 1;
  }
  if (start <= last) runs.push([start, last]);
  for (const [from, to] of runs) {
    const result = rawCloseRange(from, to, flags);
    if (result === ENOSYS && flags === 0) {
      const closeOne = new NativeFunction(close, 'int', ['int']);
      for (const fd of open) if (fd >= from && fd <= to) closeOne(fd);
    } else if (result !== 0 && errno === 0) errno = result;
  }
  return errno;
}

/** Rewrites the table the C gates read from Cloak's current set; returns that set. */
function refreshCloakedTable(): number[] {
  return writeTable(openDescriptors().filter((fd) => Cloak.hasFileDescriptor(fd)));
}

function writeTable(fds: number[]): number[] {
  if (guard === null) return fds;
  const table = Memory.alloc(4 * (fds.length + 1));
  table.writeS32(fds.length);
  fds.forEach((fd, i) => table.add(4 * (i + 1)).writeS32(fd));
  guard.config.add(CONFIG.table).writePointer(table);
  // A thread may still be scanning an earlier table: they are all kept (a few bytes per sweep or fork).
  guard.keep.push(table);
  return fds;
}

/** getdents64's number: 217 on x86_64, 61 on aarch64 (the generic table). */
const SYS_GETDENTS64: Partial<Record<Architecture, number>> = { x64: 217, arm64: 61 };
const O_RDONLY_DIRECTORY_CLOEXEC = 0o200000 | 0o2000000;
/** struct linux_dirent64: d_ino (8), d_off (8), d_reclen (2), d_type (1), d_name. */
const DIRENT = { reclen: 16, name: 19 };
const DIRENT_BUFFER = 32768;

let readDirectory: {
  open: NativeFunction<number, [NativePointerValue, number]>;
  getdents64: NativeFunction<number, [number, number, NativePointerValue, number]>;
  close: NativeFunction<number, [number]>;
  number: number;
} | null = null;

/**
 * The descriptors open in this process, from /proc/self/fd read with the getdents64 system call:
 * Frida hides its own descriptors from readdir() (its FD list cloaker), and those are the ones wanted.
 * An architecture without a known number gets readdir's list, without Frida's: nothing is then skipped.
 */
function openDescriptors(): number[] {
  const number = SYS_GETDENTS64[Process.arch];
  if (number === undefined) return [];
  if (readDirectory === null) {
    const libc = Process.getModuleByName('libc.so.6');
    readDirectory = {
      open: new NativeFunction(libc.getExportByName('open'), 'int', ['pointer', 'int']),
      getdents64: new NativeFunction(libc.getExportByName('syscall'), 'int', ['long', 'int', 'pointer', 'uint']),
      close: new NativeFunction(libc.getExportByName('close'), 'int', ['int']),
      number,
    };
  }
  const { open, getdents64, close } = readDirectory;
  const fd = open(Memory.allocUtf8String('/proc/self/fd'), O_RDONLY_DIRECTORY_CLOEXEC);
  if (fd < 0) return [];
  const fds: number[] = [];
  const buffer = Memory.alloc(DIRENT_BUFFER);
  try {
    for (;;) {
      const length = getdents64(number, fd, buffer, DIRENT_BUFFER);
      if (length <= 0) break;
      for (let offset = 0; offset < length;) {
        const entry = buffer.add(offset);
        const name = entry.add(DIRENT.name).readUtf8String() ?? '';
        if (/^\d+$/.test(name) && Number(name) !== fd) fds.push(Number(name));
        offset += entry.add(DIRENT.reclen).readU16();
      }
    }
  } finally {
    close(fd);
  }
  return fds;
}

/** [lo, hi) of Frida's agent library (mapped from a memfd, so only /proc/self/maps names it). */
function agentRange(): [NativePointer, NativePointer] {
  let lo: NativePointer | null = null;
  let hi: NativePointer | null = null;
  for (const line of File.readAllText('/proc/self/maps').split('\n')) {
    if (!line.includes('frida-agent')) continue;
    const [start, end] = (line.split(' ')[0] ?? '').split('-');
    if (start === undefined || end === undefined) continue;
    const from = ptr(`0x${start}`);
    const to = ptr(`0x${end}`);
    if (lo === null || from.compare(lo) < 0) lo = from;
    if (hi === null || to.compare(hi) > 0) hi = to;
  }
  return lo === null || hi === null ? [NULL, NULL] : [lo, hi];
}

/** close_range through `call` (the export, or syscall with the number bound): 0, or its errno. */
function errnoOfCall(call: (first: number, last: number, flags: number) => SystemFunctionResult<number>) {
  return (first: number, last: number, flags: number): number => {
    const result = call(first, last, flags) as UnixSystemFunctionResult<number>;
    return result.value === 0 ? 0 : result.errno;
  };
}
