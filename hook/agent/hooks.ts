/**
 * The agent's replacements of libc functions, kept in one registry so that `dispose()` can revert every
 * one and leave the process exactly as it was. A missing export is skipped (failing softly), since an
 * older glibc may lack one of the optional entry points.
 *
 * Each export is replaced by its native gate (fast-path.ts), which calls the original itself for every
 * ordinary call and the JS slow path only for pseudo names and addresses.
 */
import { gateFor } from './fast-path';
import type { GateName } from './fast-path';

export interface InstalledHook {
  name: string;
  target: NativePointer;
  /** The JS slow path (a NativeCallback), referenced here so that it lives as long as the replacement. */
  callback: NativePointer;
  /** The gate's slots, cleared on revert so that a later install is waited for. */
  slots: NativePointer[];
}

const installed: InstalledHook[] = [];

/**
 * Replaces `libc!name` with its native gate, whose pseudo calls go to the slow path `makeCallback` makes;
 * `makeCallback` gets the pointer through which the original function is called. Returns false when libc
 * does not export `name`.
 */
export function replaceExport(libc: Module, name: GateName, makeCallback: (original: NativePointer) => NativePointer): boolean {
  const target = libc.findExportByName(name);
  if (target === null) return false;
  if (installed.some((hook) => hook.target.equals(target))) return true;
  const gate = gateFor(name);
  let original: NativePointer;
  try {
    original = Interceptor.replaceFast(target, gate.replacement);
  } catch {
    // A prologue replaceFast cannot patch: the ordinary Interceptor, through which a call of the target
    // from inside its replacement reaches the original.
    Interceptor.replace(target, gate.replacement);
    original = target;
  }
  const callback = makeCallback(original);
  gate.slowSlot.writePointer(callback);
  gate.originalSlot.writePointer(original);
  installed.push({ name, target, callback, slots: [gate.slowSlot, gate.originalSlot] });
  return true;
}

export function installedHookNames(): string[] {
  return installed.map((hook) => hook.name);
}

/** Reverts every replacement; the callbacks stay referenced until the script unloads. */
export function revertAll(): void {
  for (const hook of installed) Interceptor.revert(hook.target);
  Interceptor.flush();
  for (const hook of installed) for (const slot of hook.slots) slot.writePointer(NULL);
  installed.length = 0;
}

/** Sets errno as the hooked function's caller will see it once the gate returns (see fast-path.ts). */
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
