/**
 * `hook-run`: runs a command with the hook in it and in every process it forks or execs, or hooks a
 * running process until SIGINT. The controller (Node frida binding or Python sidecar) does the work;
 * this file parses the command line and turns every expected failure into one line on stderr.
 *
 *   hook-run [--ipc PATH] -- COMMAND [ARGS...]
 *   hook-run [--ipc PATH] --pid PID
 *   hook-run [--ipc PATH] --publish [NAME] [--json] -- SERVER_COMMAND [ARGS...]
 */
import path from 'node:path';
import { Command, CommanderError } from 'commander';
import { defaultIpcPath } from '../runtime/paths';
import { HookRunError } from './controller';
import { pickController } from './pick-controller';

const USAGE = 'hook-run [--ipc PATH] -- COMMAND [ARGS...] | hook-run [--ipc PATH] --pid PID';

/** Runs hook-run with `argv` (without node and script); resolves to the exit status. */
export async function runHookCli(argv: string[]): Promise<number> {
  const split = argv.indexOf('--');
  const own = split < 0 ? argv : argv.slice(0, split);
  const command = split < 0 ? [] : argv.slice(split + 1);

  const program = new Command('hook-run')
    .description('Run COMMAND (or hook process PID) so that its connections to pseudo names are tunneled.')
    .usage('[--ipc PATH] -- COMMAND [ARGS...] | [--ipc PATH] --pid PID')
    .option('--ipc <path>', 'IPC endpoint of the redirector', defaultIpcPath())
    .option('--pid <pid>', 'hook this running process instead of running a command')
    .option(
      '--publish [name]',
      "publish the command's listening TCP socket as NAME (default: the program's name) through the redirector",
    )
    .option('--json', 'with --publish: one JSON object per publication on stderr')
    .helpOption('-h, --help', 'show this help')
    .exitOverride()
    .configureOutput({ writeErr: () => undefined, writeOut: (text) => process.stdout.write(text) })
    .allowExcessArguments(false);

  try {
    program.parse(own, { from: 'user' });
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      return fail(`${error.message.replace(/^error: /, '')} (usage: ${USAGE})`, 2);
    }
    throw error;
  }
  const options = program.opts<{ ipc: string; pid?: string; publish?: string | true; json?: boolean }>();

  if (options.pid !== undefined && command.length > 0)
    return fail(`give either --pid PID or -- COMMAND, not both (usage: ${USAGE})`, 2);
  if (options.pid === undefined && command.length === 0) return fail(`nothing to run (usage: ${USAGE})`, 2);
  if (options.ipc === '') return fail('--ipc needs a path', 2);

  try {
    const publish =
      options.publish === undefined
        ? undefined
        : {
            // `--publish` alone takes the program's name, as a publication name allows it.
            name:
              options.publish === true
                ? path
                    .basename(command[0] ?? 'app')
                    .toLowerCase()
                    .replace(/[^a-z0-9-]/g, '-')
                : options.publish,
            json: options.json === true,
          };
    if (publish !== undefined && options.pid !== undefined)
      return fail('--publish goes with -- SERVER_COMMAND, not --pid', 2);
    const controller = await pickController(options.ipc, undefined, publish);
    if (options.pid !== undefined) {
      const pid = Number(options.pid);
      if (!/^\d+$/.test(options.pid) || !Number.isSafeInteger(pid) || pid <= 0)
        return fail(`--pid needs a process id, not '${options.pid}'`, 2);
      return await controller.attach(pid);
    }
    return await controller.run(command);
  } catch (error) {
    if (error instanceof HookRunError) return fail(error.message, error.exitCode);
    return fail(error instanceof Error ? error.message : String(error), 1);
  }
}

function fail(message: string, code: number): number {
  process.stderr.write(`hook-run: ${message}\n`);
  return code;
}
