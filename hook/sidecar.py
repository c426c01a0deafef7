#!/usr/bin/env python3
"""The Python controller of the Underpass hook, on the `frida` wheel.

`hook-run` uses it when the Node `frida` binding cannot be loaded. It does for one command, or for one
running process, what hook/controller.ts describes: load dist/hook/agent.js before the first instruction,
call the agent's `init({ipcPath})`, carry the agent into every forked or exec'd descendant (child gating),
and pass the command's exit status through.

Usage (hook-run runs it as `.venv/bin/python -S sidecar.py ...`, see add_venv_site_packages):
  sidecar.py --agent AGENT.js --ipc PATH -- COMMAND [ARGS...]   spawn COMMAND hooked; exit with its status
  sidecar.py --agent AGENT.js --ipc PATH --pid PID               hook a running process until SIGINT/SIGTERM

Expected failures print one line on stderr, prefixed `hook-run:`, and exit non-zero; never a stack trace.
Set UNDERPASS_HOOK_DEBUG=1 for one line per hooked process, UNDERPASS_HOOK_PARKING=0 to start commands
through the stub's exec gating even where parking.py could park them.
"""

import os
import queue
import signal
import sys
import threading
import time

import parking
import unhookable

PROG = 'hook-run'
DEBUG = os.environ.get('UNDERPASS_HOOK_DEBUG', '') not in ('', '0')


class UsageError(Exception):
    pass


class HookError(Exception):
    """An expected failure: its message is the one line the user sees."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def say(message):
    # A closed stderr (`hook-run … 2>&1 | head`) must never stop the hooking of children.
    try:
        sys.stderr.write(f'{PROG}: {message}\n')
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def debug(message):
    if DEBUG:
        say(message)


def parse_args(argv):
    options = {'agent': None, 'ipc': None, 'pid': None, 'command': None}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--':
            options['command'] = argv[i + 1 :]
            break
        if arg in ('--agent', '--ipc', '--pid'):
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


class Hooker:
    """Loads the agent into processes and keeps their scripts alive."""

    def __init__(self, frida, device, source, ipc_path):
        self.frida = frida
        self.device = device
        self.source = source
        self.ipc_path = ipc_path
        self.scripts = {}
        self.main_pid = None
        self.main_failure = None
        self.awaiting_exec = set()

    def hook(self, pid, gate_children):
        """Attaches, loads and inits. Raises HookError (with the user's line) on failure."""
        frida = self.frida
        try:
            session = self.device.attach(pid)
        except frida.PermissionDeniedError:
            raise HookError(
                f'not allowed to attach to process {pid} (ptrace is restricted): run hook-run as the same user '
                f"after 'sudo sysctl kernel.yama.ptrace_scope=0', or as root"
            ) from None
        except frida.ProcessNotFoundError:
            raise HookError(f'no process with pid {pid}') from None
        except frida.NotSupportedError as error:
            raise HookError(f'cannot hook process {pid}: {one_line(error)}') from None
        except frida.InvalidOperationError as error:
            raise HookError(f'cannot attach to process {pid}: {one_line(error)}') from None
        try:
            if gate_children:
                session.enable_child_gating()
            script = session.create_script(self.source, name='underpass-hook')
            script.on('message', lambda message, data: self.on_message(pid, message))
            script.load()
            result = script.exports_sync.init({'ipcPath': self.ipc_path})
        except frida.RPCException as error:
            detach_quietly(session)
            text = one_line(error.args[0] if error.args else error)  # args[2] is the JS stack
            if text.startswith('no redirector at '):
                raise HookError(
                    f'no redirector at {self.ipc_path}: start one with '
                    f"'underpass redirector ... --ipc {self.ipc_path}' or pass --ipc PATH of a running one"
                ) from None
            raise HookError(f'hook failed in process {pid}: {text}') from None
        except (frida.InvalidOperationError, frida.TransportError, frida.ProcessNotFoundError) as error:
            raise HookError(f'process {pid} went away while being hooked: {one_line(error)}') from None
        if not result.get('hooked', False):
            say(f'process {pid}: {result.get("notice", "cannot be hooked")}; it runs unhooked')
        else:
            debug(f'hooked process {pid} ({", ".join(result.get("hooks", []))})')
        self.scripts[pid] = (session, script)
        return session, script

    def on_message(self, pid, message):
        if message.get('type') == 'send':
            payload = message.get('payload') or {}
            if isinstance(payload, dict) and payload.get('type') == 'warning':
                say(f'process {pid}: {payload.get("message")}')
            else:
                debug(f'process {pid}: {payload}')
        elif message.get('type') == 'error':
            say(f'process {pid}: hook error: {one_line(message.get("description", "unknown"))}')
            debug(message.get('stack', ''))

    def expect_exec(self, pid):
        """The stub `pid` is about to exec the command: that exec must be hooked or the command killed."""
        self.awaiting_exec.add(pid)

    def on_child_added(self, child):
        """Runs on a worker thread: hooks a gated child, then ALWAYS resumes it (or kills the command)."""
        if child.origin == 'exec' and is_static_executable(child.pid):
            self.awaiting_exec.discard(child.pid)
            name = (
                os.path.basename(os.readlink(f'/proc/{child.pid}/exe'))
                if os.path.exists(f'/proc/{child.pid}/exe')
                else child.pid
            )
            say(
                f'{name} (process {child.pid}) is statically linked: '
                'its lookups and connects cannot be hooked; it runs unhooked'
            )
            try:
                self.device.resume(child.pid)
            except Exception:
                pass
            return
        if child.pid in self.awaiting_exec and child.origin == 'exec':
            self.awaiting_exec.discard(child.pid)
            try:
                self.hook(child.pid, gate_children=True)
            except HookError as error:
                # The command itself: never run it unhooked when the user asked for the hook.
                self.main_failure = error
                kill_quietly(child.pid)
            except Exception as error:
                self.main_failure = HookError(f'cannot hook {child.pid}: {one_line(error)}')
                kill_quietly(child.pid)
            finally:
                try:
                    self.device.resume(child.pid)
                except Exception:
                    pass
            return
        try:
            self.hook(child.pid, gate_children=True)
        except HookError as error:
            say(f'child {child.pid} ({child.origin}) runs unhooked: {error}')
        except Exception as error:  # never leave a child suspended
            say(f'child {child.pid} ({child.origin}) runs unhooked: {one_line(error)}')
        finally:
            try:
                self.device.resume(child.pid)
            except Exception as error:
                debug(f'resume of child {child.pid} failed: {one_line(error)}')


def is_static_executable(pid):
    """True when /proc/PID/exe is an ELF file without a program interpreter (statically linked): frida's
    injector cannot load into those, and they call no libc resolver we could hook anyway."""
    try:
        with open(f'/proc/{pid}/exe', 'rb') as file:
            header = file.read(64)
            if len(header) < 64 or header[:4] != b'\x7fELF' or header[4] != 2:  # 64-bit only
                return False
            order = 'little' if header[5] == 1 else 'big'
            phoff = int.from_bytes(header[32:40], order)
            phentsize = int.from_bytes(header[54:56], order)
            phnum = int.from_bytes(header[56:58], order)
            file.seek(phoff)
            table = file.read(phentsize * phnum)
    except OSError:
        return False
    types = [int.from_bytes(table[i * phentsize : i * phentsize + 4], order) for i in range(phnum)]
    return 3 not in types  # PT_INTERP


def one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__


def detach_quietly(session):
    try:
        session.detach()
    except Exception:
        pass


def start_child_worker(hooker, device):
    """Child gating events arrive on frida's thread, which must not block; hook children on our own."""
    pending = queue.Queue()

    def work():
        while True:
            child = pending.get()
            try:
                hooker.on_child_added(child)
            except Exception:  # on_child_added resumes in `finally`; the next child must still be served
                pass

    threading.Thread(target=work, name='child-hooker', daemon=True).start()
    device.on('child-added', lambda child: pending.put(child))


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
    )
    os.close(gate_read)
    return pid, gate_write


def let_stub_go(pid, gate_write):
    """Sends the go-ahead, after taking the signals as a shell waiting for its foreground job does: the
    terminal's SIGINT/SIGQUIT reach the child directly; SIGTERM and SIGHUP sent to us are passed on."""
    signal.signal(signal.SIGINT, lambda signo, frame: None)
    signal.signal(signal.SIGQUIT, lambda signo, frame: None)
    for signo in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, lambda signo, frame: forward(pid, signo))
    os.write(gate_write, b'go\n')
    os.close(gate_write)


def run_command(frida, device, hooker, command):
    program = command[0] if '/' in command[0] else find_program(command[0])
    if program is None or not os.path.exists(program):
        raise HookError(f'{command[0]}: command not found', 127)
    if os.path.isdir(program) or not os.access(program, os.X_OK):
        raise HookError(f'{command[0]}: permission denied', 126)
    if parking.supported() and os.environ.get('UNDERPASS_HOOK_PARKING', '') != '0':
        return run_parked(device, hooker, command, program)

    pid, gate_write = spawn_stub(program, command)
    hooker.main_pid = pid
    try:
        start_child_worker(hooker, device)
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

    let_stub_go(pid, gate_write)
    status = wait_for_exit(pid)
    if hooker.main_failure is not None:
        raise hooker.main_failure
    if pid in hooker.awaiting_exec:
        raise HookError(f'{command[0]} did not start (the launcher exited with status {status})')
    if status is None:
        say(f'the exit status of process {pid} was lost (reaped while frida traced it); reporting 1')
        return 1
    return status


def run_parked(device, hooker, command, program):
    """run_command with one attach instead of two: the same stub, traced by us to its exec and parked at
    the command's entry point while Frida attaches (parking.py). Same stdio, signals and exit status."""
    pid, gate_write = spawn_stub(program, command)
    hooker.main_pid = pid
    try:
        start_child_worker(hooker, device)
        try:
            parking.trace_before_exec(pid)
        except parking.ParkError as error:
            raise trace_refused(pid, error) from None
    except BaseException:
        kill_quietly(pid)
        raise

    let_stub_go(pid, gate_write)
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
            hooker.hook(pid, gate_children=True)
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


def forward(pid, signo):
    try:
        os.kill(pid, signo)
    except ProcessLookupError:
        pass


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def attach_process(frida, hooker, pid):
    stop = threading.Event()
    gone = threading.Event()
    session, script = hooker.hook(pid, gate_children=False)
    session.on('detached', lambda reason, crash: (gone.set(), stop.set()))
    for signo in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signo, lambda signo, frame: stop.set())
    say(f'hooked process {pid}; Ctrl-C removes the hook and leaves it running')
    while not stop.wait(0.5):
        pass
    if gone.is_set():
        say(f'process {pid} exited')
        return 0
    try:
        script.exports_sync.dispose()
        script.unload()
    except Exception as error:
        if not gone.is_set():
            debug(f'unload in process {pid}: {one_line(error)}')
    detach_quietly(session)
    say(f'hook removed from process {pid}')
    return 0


def add_venv_site_packages():
    """Under `python -S`, puts this venv's site-packages (where the frida wheel is) on sys.path.

    hook-run starts the sidecar with -S: site.py and the .pth files it runs cost 5-10 ms of each start,
    for nothing the sidecar needs but this one directory.
    """
    if not sys.flags.no_site:
        return
    venv = os.path.dirname(os.path.dirname(os.path.abspath(sys.executable)))
    if not os.path.isfile(os.path.join(venv, 'pyvenv.cfg')):
        return
    version = f'python{sys.version_info[0]}.{sys.version_info[1]}'
    for lib in ('lib', 'lib64'):
        directory = os.path.join(venv, lib, version, 'site-packages')
        if os.path.isdir(directory) and directory not in sys.path:
            sys.path.append(directory)


def import_frida():
    """`import frida`, without the asyncio API the sidecar never uses.

    The wheel's `__init__` ends with `from . import aio` only to alias `ScriptExportsAsync`; `frida.aio`
    imports asyncio, which is about half of the whole import (70-100 ms of 150-240 ms measured here with
    frida 17.26 on CPython 3.11), paid by every `hook-run`. A placeholder module stands in for it; any use
    of the async API would fail loudly on the placeholder rather than misbehave.
    """
    if 'frida' in sys.modules or 'frida.aio' in sys.modules:
        import frida

        return frida
    import types

    placeholder = types.ModuleType('frida.aio')

    class _ScriptExports:
        def __init__(self, *args, **kwargs):
            raise RuntimeError('the sidecar does not load frida.aio')

    placeholder._ScriptExports = _ScriptExports
    sys.modules['frida.aio'] = placeholder
    try:
        import frida
    except BaseException:
        sys.modules.pop('frida.aio', None)
        raise
    return frida


def main(argv):
    try:
        options = parse_args(argv)
    except UsageError as error:
        say(f'{error} (usage: hook-run [--ipc PATH] -- COMMAND [ARGS...] | hook-run [--ipc PATH] --pid PID)')
        return 2
    if options['command'] is not None:
        status = unhookable.run_if_unhookable(options['command'], options['ipc'], say)
        if status is not None:
            return status
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
    hooker = Hooker(frida, device, source, options['ipc'])
    try:
        if options['pid'] is not None:
            return attach_process(frida, hooker, options['pid'])
        return run_command(frida, device, hooker, options['command'])
    except HookError as error:
        say(str(error))
        return error.status
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter and frida teardown: the command's status is all that is left to report.
    os._exit(code)
