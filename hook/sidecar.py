#!/usr/bin/env python3
"""The Python controller of the Underpass hook, on the `frida` wheel.

`hook-run` uses it when the Node `frida` binding cannot be loaded. It does for one command, or for one
running process, what hook/controller.ts describes: load dist/hook/agent.js before the first instruction,
call the agent's `init({ipcPath})`, carry the agent into every forked or exec'd descendant (child gating),
and pass the command's exit status through.

Usage (hook-run runs it as `.venv/bin/python -S sidecar.py ...`, see add_venv_site_packages):
  sidecar.py --agent AGENT.js --ipc PATH -- COMMAND [ARGS...]   spawn COMMAND hooked; exit with its status
  sidecar.py --agent AGENT.js --ipc PATH --pid PID               hook a running process until SIGINT/SIGTERM

This file parses the command line and wires the parts, one module each: launch.py (start the command,
parked by parking.py or through the stub's exec gating, and wait for it), hooker.py (attach, load, init),
children.py (child gating, and no child left held at exit), signal_relay.py (signals passed on),
attach.py (--pid), frida_loader.py (the wheel, fast), messages.py (the user's lines), unhookable.py
(static and Go commands, which run unhooked).

Expected failures print one line on stderr, prefixed `hook-run:`, and exit non-zero; never a stack trace.
Set UNDERPASS_HOOK_DEBUG=1 for one line per hooked process, UNDERPASS_HOOK_PARKING=0 to start commands
through the stub's exec gating even where parking.py could park them.
"""

import os
import signal
import sys

import unhookable
from attach import attach_process
from frida_loader import add_venv_site_packages, import_frida
from hooker import Hooker
from launch import run_command
from messages import HookError, UsageError, say
from signal_relay import SignalRelay

PR_SET_PDEATHSIG = 1


def parse_args(argv):
    options = {
        'agent': None,
        'ipc': None,
        'pid': None,
        'command': None,
        'exit_with_parent': False,
        'publish': None,
        'json': False,
    }
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--':
            options['command'] = argv[i + 1 :]
            break
        if arg == '--exit-with-parent':
            options['exit_with_parent'] = True
            i += 1
            continue
        if arg == '--json':
            options['json'] = True
            i += 1
            continue
        if arg in ('--agent', '--ipc', '--pid', '--publish'):
            if i + 1 >= len(argv):
                raise UsageError(f'{arg} needs a value')
            options[arg[2:]] = argv[i + 1]
            i += 2
            continue
        raise UsageError(f'unknown argument {arg!r}')
    if options['agent'] is None or options['ipc'] is None:
        raise UsageError('--agent and --ipc are required')
    if (options['pid'] is None) == (options['command'] is None):
        raise UsageError('give either --pid PID or -- COMMAND [ARGS...]')
    if options['command'] is not None and len(options['command']) == 0:
        raise UsageError('no COMMAND after --')
    if options['pid'] is not None:
        try:
            options['pid'] = int(options['pid'])
        except ValueError:
            raise UsageError(f'--pid needs a process id, not {options["pid"]!r}') from None
        if options['pid'] <= 0:
            raise UsageError(f'--pid needs a process id, not {options["pid"]}')
    return options


def main(argv):
    try:
        options = parse_args(argv)
    except UsageError as error:
        say(f'{error} (usage: hook-run [--ipc PATH] -- COMMAND [ARGS...] | hook-run [--ipc PATH] --pid PID)')
        return 2
    if options['exit_with_parent']:
        exit_with_parent()
    if options['command'] is not None:
        status = unhookable.run_if_unhookable(options['command'], options['ipc'], say)
        if status is not None:
            return status
    # Now, before Frida starts threads: they must inherit the relay's blocked signals.
    relay = SignalRelay()
    add_venv_site_packages()
    try:
        frida = import_frida()
    except ImportError:
        say("the Python 'frida' package is missing from this interpreter: run 'npm run setup'")
        return 1
    try:
        with open(options['agent'], encoding='utf-8') as file:
            source = file.read()
    except OSError as error:
        say(f"cannot read the hook agent {options['agent']} ({error.strerror}): run 'npm run build'")
        return 1

    device = frida.get_local_device()
    publish = {'name': options['publish'], 'json': options['json']} if options['publish'] else None
    hooker = Hooker(frida, device, source, options['ipc'], publish)
    try:
        if options['pid'] is not None:
            return attach_process(hooker, options['pid'], relay)
        return run_command(frida, device, hooker, options['command'], relay)
    except HookError as error:
        say(str(error))
        return error.status


def exit_with_parent():
    """Dies (SIGKILL) with the process that started us: `--exit-with-parent` is what hook/controller.ts's
    Node controller passes, so that a killed Node controller never leaves the sidecar, and through it the
    command (which dies with the sidecar, see hooker.py), running on."""
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # gone before the prctl took effect
        os._exit(128 + signal.SIGKILL)


if __name__ == '__main__':
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter and frida teardown: the command's status is all that is left to report.
    os._exit(code)
