"""Starts `hook-run -- COMMAND`: the command is our own child, hooked before its first instruction, and
its exit status is ours. Two ways in: parked at its entry point (parking.py, one Frida attach), or the
stub's exec gated by Frida (two attaches) where parking is not available.
"""

import os
import time

import parking
from children import ChildWorker, become_subreaper
from hooker import is_static_executable, kill_quietly
from messages import HookError, one_line, say
from signal_relay import RESET_IN_CHILD

# The command is started by us, not by frida's spawn(): frida reaps the processes it spawns itself, often
# before our waitpid() could read the exit status. So we start a stub shell that waits on a pipe and then
# execs the command; we attach to the stub with child gating on, release it, and the exec arrives as a
# gated child (origin "exec") that is suspended before the command's first instruction, where the agent
# is loaded and initialised before it is resumed. The command keeps our pid as parent, its argv[0], its
# stdio and environment.
# The stub never execs without the go-ahead (a failed read exits 125 instead of running unhooked).
STUB = 'read -r go <&3 && [ "$go" = go ] || exit 125; exec "$0" "$@" 3<&-'


def spawn_stub(program, command):
    """Starts the stub with the command's arguments; returns its pid and the pipe end for the go-ahead."""
    gate_read, gate_write = os.pipe()
    pid = os.posix_spawn(
        '/bin/sh',
        ['sh', '-c', STUB, program] + command[1:],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, gate_read, 3)],
        # The command gets the signal mask and dispositions a shell would give it, not the sidecar's (the
        # relay's signals blocked, SIGPIPE and SIGXFSZ ignored by Python).
        setsigmask=(),
        setsigdef=RESET_IN_CHILD,
    )
    os.close(gate_read)
    return pid, gate_write


def let_stub_go(pid, gate_write, relay):
    """Sends the go-ahead; from now on the signals hook-run gets are the command's (signal_relay.py)."""
    relay.forward_to(pid)
    os.write(gate_write, b'go\n')
    os.close(gate_write)


def run_command(frida, device, hooker, command, relay):
    """Runs `command` hooked; returns its exit status once it has exited and no child of it is left
    suspended by child gating. Raises HookError for the user's line."""
    program = command[0] if '/' in command[0] else find_program(command[0])
    if program is None or not os.path.exists(program):
        raise HookError(f'{command[0]}: command not found', 127)
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        raise HookError(f'{command[0]}: permission denied', 126)
    become_subreaper()
    if parking.supported() and os.environ.get('UNDERPASS_HOOK_PARKING', '') != '0':
        return run_parked(device, hooker, command, program, relay)

    pid, gate_write = spawn_stub(program, command)
    relay.on_abort(lambda: kill_quietly(pid))
    hooker.main_pid = pid
    try:
        children = ChildWorker(hooker, device)
        try:
            stub_session = device.attach(pid)
            stub_session.enable_child_gating()
        except frida.PermissionDeniedError:
            raise HookError(
                'not allowed to trace the command (ptrace is restricted): run after '
                "'sudo sysctl kernel.yama.ptrace_scope=0', or as root"
            ) from None
        except (
            frida.ProcessNotRespondingError,
            frida.ProcessNotFoundError,
            frida.NotSupportedError,
            frida.InvalidOperationError,
            frida.TransportError,
        ) as error:
            # e.g. hook-run itself runs under strace or gdb: the launcher cannot be traced twice.
            raise HookError(f'cannot trace the command (is hook-run itself being traced?): {one_line(error)}') from None
        hooker.expect_exec(pid)
    except BaseException:
        kill_quietly(pid)
        raise

    let_stub_go(pid, gate_write, relay)
    status = wait_for_exit(pid)
    children.settle(pid)
    if hooker.main_failure is not None:
        raise hooker.main_failure
    if pid in hooker.awaiting_exec:
        raise HookError(f'{command[0]} did not start (the launcher exited with status {status})')
    if status is None:
        say(f'the exit status of process {pid} was lost (reaped while frida traced it); reporting 1')
        return 1
    return status


def run_parked(device, hooker, command, program, relay):
    """run_command with one attach instead of two: the same stub, traced by us to its exec and parked at
    the command's entry point while Frida attaches (parking.py). Same stdio, signals and exit status."""
    pid, gate_write = spawn_stub(program, command)
    relay.on_abort(lambda: kill_quietly(pid))
    hooker.main_pid = pid
    try:
        children = ChildWorker(hooker, device)
        try:
            parking.trace_before_exec(pid)
        except parking.ParkError as error:
            raise trace_refused(pid, error) from None
    except BaseException:
        kill_quietly(pid)
        raise

    let_stub_go(pid, gate_write, relay)
    try:
        parked = parking.park_after_exec(pid, is_static_executable)
    except parking.Ended as ended:
        # Reaped already. Before the exec it was the stub (the go-ahead failed): the command never ran.
        if not ended.after_exec:
            raise HookError(
                f'{command[0]} did not start (the launcher exited with status {exit_code(ended.status)})'
            ) from None
        return exit_code(ended.status)  # the dynamic loader failed, as it would have unhooked
    except parking.ParkError as error:
        kill_quietly(pid)
        raise HookError(f'cannot start {command[0]} hooked: {error}') from None

    if parked is None:
        # The same line as on_child_added's for a static child.
        name = os.path.basename(os.readlink(f'/proc/{pid}/exe')) if os.path.exists(f'/proc/{pid}/exe') else pid
        say(f'{name} (process {pid}) is statically linked: its lookups and connects cannot be hooked; it runs unhooked')
    else:
        try:
            hooker.hook(pid, gate_children=True, main=True)
        except BaseException as error:
            # The command itself: never run it unhooked when the user asked for the hook.
            parked.close()
            kill_quietly(pid)
            if isinstance(error, HookError):
                raise
            raise HookError(f'cannot hook {pid}: {one_line(error)}') from None
        try:
            parked.release()
        except parking.Ended as ended:
            return exit_code(ended.status)  # killed while parked (reaped by the release's wait)
        except parking.ParkError as error:
            # Hooked but stuck at its entry point: end it rather than wait on it for ever.
            kill_quietly(pid)
            raise HookError(f'cannot start {command[0]} hooked: {one_line(error)}') from None

    status = wait_for_exit(pid)
    children.settle(pid)
    if status is None:
        say(f'the exit status of process {pid} was lost; reporting 1')
        return 1
    return status


def trace_refused(pid, error):
    """The HookError for a refused PTRACE_SEIZE of our own stub, worded as run_command's."""
    try:
        with open(f'/proc/{pid}/status') as file:
            traced = any(line.startswith('TracerPid:') and line.split()[1] != '0' for line in file)
    except OSError:
        traced = False
    if traced:
        return HookError(f'cannot trace the command (is hook-run itself being traced?): {one_line(error)}')
    return HookError(
        'not allowed to trace the command (ptrace is restricted): run after '
        "'sudo sysctl kernel.yama.ptrace_scope=0', or as root"
    )


def exit_code(wait_status):
    """A waitpid status as the exit status hook-run reports (128 + N for a death by signal N)."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def find_program(name):
    """shutil.which(name) for a name without '/', without importing shutil (which imports zlib, bz2 and
    lzma: milliseconds of every hook-run)."""
    path = os.environ.get('PATH')
    if path is None:
        try:
            path = os.confstr('CS_PATH')
        except (AttributeError, ValueError):
            path = os.defpath
    for directory in path.split(os.pathsep) if path else []:
        candidate = os.path.join(directory, name)
        if os.path.exists(candidate) and os.access(candidate, os.F_OK | os.X_OK) and not os.path.isdir(candidate):
            return candidate
    return None


def wait_for_exit(pid):
    """The command's exit code (128 + signal number for a signal death).

    waitid(WNOWAIT) so that we never consume the ptrace stops frida's own tracing of the child produces
    (it reports those to any thread of ours); they are skipped until the exit itself, which we then reap.
    """
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            return None  # died while frida was tracing it (e.g. killed after a failed hook): frida reaped it
        if info.si_code in (os.CLD_EXITED, os.CLD_KILLED, os.CLD_DUMPED):
            break
        time.sleep(0.002)
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    if info.si_code == os.CLD_EXITED:
        return info.si_status
    return 128 + info.si_status
