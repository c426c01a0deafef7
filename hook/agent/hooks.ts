/**
 * The agent's replacements of libc functions, kept in one registry so that `dispose()` can revert every
 * one and leave the process exactly as it was. A missing export is skipped (failing softly), since an
 * older glibc may lack one of the optional entry points.
 *
 * Each export is replaced by its native gate (gates.ts), which passes every ordinary call to the
 * original itself and calls the JS slow path only for pseudo names and addresses.
 *
 * Frida's Interceptor runs a replacement on every thread, Frida's own included, and Frida writes its
 * transport with sendmsg(). Our JavaScript inside Frida's threads is what crashed forked shells (cores
 * showed the JS engine faulting under Frida's sendmsg); a gate keeps those calls in C, since Frida never
 * sends with MSG_FASTOPEN to a pseudo address.
 */
import { armGate } from './gates';
import type { GateName } from './gates';

export interface InstalledHook {
  name: string;
  target: NativePointer;
  /** The JS slow path (a NativeCallback), referenced here so that it lives as long as the replacement. */
  callback: NativePointer;
}

const installed: InstalledHook[] = [];
/**
 * Slow paths of reverted hooks: a thread may still be inside one (a pseudo connect waiting for its
 * tunnel), so they stay referenced until the script unloads, which Frida holds back until it has left.
 */
const retired: NativePointer[] = [];

/**
 * Replaces `libc!name` with its gate, whose pseudo calls go to the slow path `makeCallback` makes from
 * the export's address (calling that address from inside the replacement reaches the original). Returns
 * false when libc does not export `name`.
 */
export function replaceExport(
  libc: Module,
  name: GateName,
  makeCallback: (target: NativePointer) => NativePointer,
): boolean {
  const target = libc.findExportByName(name);
  if (target === null) return false;
  if (installed.some((hook) => hook.target.equals(target))) return true;
  const callback = makeCallback(target);
  // The ordinary Interceptor, not replaceFast: it counts the threads inside the gate, so that a detach
  // never frees the gate under a thread blocked in the original (see gates.ts).
  Interceptor.replace(target, armGate(name, target, callback));
  installed.push({ name, target, callback });
  return true;
}

export function installedHookNames(): string[] {
  return installed.map((hook) => hook.name);
}

/** Reverts every replacement; the gates and slow paths stay referenced until the script unloads. */
export function revertAll(): void {
  for (const hook of installed) Interceptor.revert(hook.target);
  Interceptor.flush();
  for (const hook of installed) retired.push(hook.callback);
  installed.length = 0;
}

/** Sets errno as the hooked function's caller will see it once the gate returns (see gates.ts). */
export function setCallerErrno(errnoOut: NativePointer, value: number): void {
  errnoOut.writeS32(value);
}

/** The NUL-terminated string at `pointer`, or null when it is NULL or not valid text. */
export function tryReadCString(pointer: NativePointer): string | null {
  if (pointer.isNull()) return null;
  try {
    return pointer.readUtf8String();
  } catch {
    return null;
  }
}

/** errno of a SystemFunction call (Linux only, so always the Unix form). */
export function errnoOf(result: SystemFunctionResult<number> | SystemFunctionResult<Int64>): number {
  return (result as UnixSystemFunctionResult<number | Int64>).errno;
}
