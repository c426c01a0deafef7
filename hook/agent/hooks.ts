/**
 * The agent's replacements of libc functions, kept in one registry so that `dispose()` can revert every
 * one and leave the process exactly as it was. A missing export is skipped (failing softly), since an
 * older glibc may lack one of the optional entry points.
 */

export interface InstalledHook {
  name: string;
  target: NativePointer;
  /** The NativeCallback, referenced here so that it lives as long as the replacement. */
  callback: NativePointer;
}

const installed: InstalledHook[] = [];

/** Replaces `libc!name` with `callback`; returns false when libc does not export `name`. */
export function replaceExport(libc: Module, name: string, makeCallback: (target: NativePointer) => NativePointer): boolean {
  const target = libc.findExportByName(name);
  if (target === null) return false;
  if (installed.some((hook) => hook.target.equals(target))) return true;
  const callback = makeCallback(target);
  Interceptor.replace(target, callback);
  installed.push({ name, target, callback });
  return true;
}

export function installedHookNames(): string[] {
  return installed.map((hook) => hook.name);
}

/** Reverts every replacement; the callbacks stay referenced until the script unloads. */
export function revertAll(): void {
  for (const hook of installed) Interceptor.revert(hook.target);
  Interceptor.flush();
  installed.length = 0;
}

/** Sets errno as the hooked function's caller will see it once the replacement returns. */
export function setCallerErrno(context: CallbackContext | InvocationContext, value: number): void {
  (context as UnixInvocationContext).errno = value;
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
