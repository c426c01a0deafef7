/**
 * The agent's replacements of (and listeners on) libc functions, kept in one registry so that `dispose()`
 * can revert every one and leave the process exactly as it was. A missing export is skipped (failing
 * softly), since an older glibc may lack one of the optional entry points.
 *
 * Replacement or listener: Frida's Interceptor calls a REPLACEMENT on every thread of the process,
 * Frida's own included, but invokes LISTENERS only on threads it does not ignore, and it ignores its
 * own. A function Frida itself calls must therefore be listened to, never replaced, or our JavaScript
 * runs inside Frida's internals (see connect-hooks.ts for the one such function we hook, sendmsg).
 */

export type InstalledHook =
  | {
      kind: 'replacement';
      name: string;
      target: NativePointer;
      /** The NativeCallback, referenced here so that it lives as long as the replacement. */
      callback: NativePointer;
    }
  | { kind: 'listener'; name: string; target: NativePointer; listener: InvocationListener };

const installed: InstalledHook[] = [];

/** Replaces `libc!name` with `callback`; returns false when libc does not export `name`. */
export function replaceExport(libc: Module, name: string, makeCallback: (target: NativePointer) => NativePointer): boolean {
  const target = libc.findExportByName(name);
  if (target === null) return false;
  if (installed.some((hook) => hook.target.equals(target))) return true;
  const callback = makeCallback(target);
  Interceptor.replace(target, callback);
  installed.push({ kind: 'replacement', name, target, callback });
  return true;
}

/** Attaches `callbacks` to `libc!name`; returns false when libc does not export `name`. */
export function listenToExport(libc: Module, name: string, callbacks: ScriptInvocationListenerCallbacks): boolean {
  const target = libc.findExportByName(name);
  if (target === null) return false;
  if (installed.some((hook) => hook.target.equals(target))) return true;
  installed.push({ kind: 'listener', name, target, listener: Interceptor.attach(target, callbacks) });
  return true;
}

export function installedHookNames(): string[] {
  return installed.map((hook) => hook.name);
}

/** Reverts every replacement and detaches every listener; the callbacks stay referenced until the script unloads. */
export function revertAll(): void {
  for (const hook of installed) {
    if (hook.kind === 'listener') hook.listener.detach();
    else Interceptor.revert(hook.target);
  }
  Interceptor.flush();
  installed.length = 0;
}

/** Sets errno as the hooked function's caller will see it once the replacement (or listened call) returns. */
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
