"""Loads the agent into processes: attach, create the script, call the agent's `init`, and, for every
child that child gating suspends, hook it and always resume it. The user's lines for whatever can go
wrong on the way are worded here.
"""

import json
import os
import signal
import sys

from messages import HookError, debug, one_line, say


class Hooker:
    """Loads the agent into processes and keeps their scripts alive."""

    def __init__(self, frida, device, source, ipc_path, publish=None):
        self.frida = frida
        # hook-run --publish: {'name', 'json'}; every hooked process publishes its listening socket.
        self.publish = publish
        self.device = device
        self.source = source
        self.ipc_path = ipc_path
        self.scripts = {}
        self.main_pid = None
        self.main_failure = None
        self.awaiting_exec = set()
        self.gate_new_children = True

    def hook(self, pid, gate_children, main=False):
        """Attaches, loads and inits. Raises HookError (with the user's line) on failure. The `main`
        process, the command itself, is told to die with us (the agent's lifetime.ts): killed, even by
        SIGKILL, hook-run never leaves its command orphaned."""
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
            options = {'ipcPath': self.ipc_path}
            if self.publish is not None:
                options['publish'] = self.publish
            if main:
                options['controllerPid'] = os.getpid()
            result = script.exports_sync.init(options)
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
            elif isinstance(payload, dict) and payload.get('type') == 'published':
                announce_publication(pid, payload, self.publish)
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
                self.hook(child.pid, gate_children=True, main=True)
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
            # Once the command is gone (children.py, settle), a child hooked late gates nothing more.
            self.hook(child.pid, gate_children=self.gate_new_children)
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


def detach_quietly(session):
    try:
        session.detach()
    except Exception:
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


def announce_publication(pid, payload, publish):
    """One line (or one JSON object, with --json) on stderr for a publication made for the command."""
    event = {
        'event': str(payload.get('event', 'published')),
        'name': str(payload.get('name', '')),
        'host': str(payload.get('host', '')),
        'port': int(payload.get('port', 0)),
        'pid': pid,
    }
    if publish is not None and publish.get('json'):
        try:
            sys.stderr.write(json.dumps(event) + '\n')
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
    elif event['event'] == 'published':
        say(f'published {event["name"]}: {event["host"]}:{event["port"]} (process {pid})')
    else:
        say(f'unpublished {event["name"]} (process {pid})')
