/**
 * The command dies with its controller.
 *
 * Why: `hook-run -- CMD` makes CMD its own child and waits for it. Killed with SIGKILL (or crashed), the
 * controller can pass nothing on, and CMD would run on orphaned, with a hook whose controller is gone;
 * `timeout -s KILL 5 hook-run -- CMD` would then leave CMD behind. So the controller asks the agent in
 * CMD, and in CMD only (never in a process it merely attached to), for the kernel's parent-death signal:
 * SIGKILL when the controller's process ends. It survives CMD's execs, not its forks: CMD's own children
 * are CMD's business, as they are without hook-run. A controller already gone by then kills CMD at once.
 */
import { tryGetLibc } from './libc';

const PR_SET_PDEATHSIG = 1;
const SIGKILL = 9;

/** Makes this process die with process `controllerPid`, its parent; a no-op without glibc. */
export function exitWithController(controllerPid: number): void {
  const libc = tryGetLibc();
  if (libc === null) return;
  const prctl = new NativeFunction(libc.getExportByName('prctl'), 'int', ['int', 'ulong', 'ulong', 'ulong', 'ulong']);
  const getppid = new NativeFunction(libc.getExportByName('getppid'), 'int', []);
  const kill = new NativeFunction(libc.getExportByName('kill'), 'int', ['int', 'int']);
  prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  // The signal is armed for the parent we have now: if that is no longer the controller, it died first.
  if (getppid() !== controllerPid) kill(Process.id, SIGKILL);
}
