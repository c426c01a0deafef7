/**
 * Where things live on the client machine when the user names no path: one directory per user, mode
 * 0700, so that only that user's processes can reach the redirector's IPC endpoint.
 */
import os from 'node:os';
import path from 'node:path';

/** Directory of a user's redirector state: `$XDG_RUNTIME_DIR/underpass`, else `<tmpdir>/underpass-<uid>`. */
export function defaultRuntimeDir(): string {
  const xdg = process.env.XDG_RUNTIME_DIR;
  if (xdg !== undefined && xdg !== '') return path.join(xdg, 'underpass');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(os.tmpdir(), `underpass-${uid}`);
}

/** The IPC endpoint a redirector started without `--ipc` serves, and `hook-run` without `--ipc` uses. */
export function defaultIpcPath(): string {
  return path.join(defaultRuntimeDir(), 'redirector.sock');
}

/** Root of this checkout (the folder holding package.json), from a file compiled into dist/. */
export function projectRoot(): string {
  // dist/runtime/paths.js → two levels up.
  return path.resolve(__dirname, '..', '..');
}
