/**
 * Chooses the hook's controller (controller.ts): the Node binding's when `frida` loads, else the Python
 * sidecar's; one line saying what to run when neither can.
 */
import { existsSync } from 'node:fs';
import { defaultHookPaths, HookRunError } from './controller';
import type { HookController, HookPaths, PublishOption } from './controller';
import { FridaBindingController, tryLoadFridaBinding } from './frida-binding-controller';
import { SidecarController } from './sidecar-controller';

/**
 * The Node binding's controller when `frida` loads, else the sidecar's; rejects with HookRunError
 * (telling the user to run `npm run setup` or `npm run build`) when neither can run.
 */
export async function pickController(
  ipcPath: string,
  paths: HookPaths = defaultHookPaths(),
  publish?: PublishOption,
): Promise<HookController> {
  if (!existsSync(paths.agent)) throw new HookRunError(`the hook agent ${paths.agent} is missing: run 'npm run build'`);
  const binding = await tryLoadFridaBinding();
  if (binding !== null) return new FridaBindingController(binding, paths, ipcPath, publish);
  if (existsSync(paths.venvPython) && existsSync(paths.sidecar)) return new SidecarController(paths, ipcPath, publish);
  throw new HookRunError(
    "no hook controller: the Node 'frida' binding does not load and .venv is missing: run 'npm run setup'",
  );
}
