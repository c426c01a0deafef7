"""Starts `hook-run -- COMMAND` with one Frida attach instead of two.

Why: the sidecar must be the command's parent (so that it, not Frida, reaps it and reads its exit
status), and the agent must be in before the command's first instruction. Its general answer
(sidecar.py, run_command) is a stub shell the sidecar starts, attaches to with child gating on, and
releases: the stub's exec arrives as a gated child, suspended, and is attached to in turn. Each attach
costs ~110 ms of the sidecar's own CPU (Frida writes its 37 MB agent into a fresh memfd every time), so
the stub's attach is a third of `hook-run -- true`.

Here the sidecar traces the stub itself (plain ptrace: PTRACE_SEIZE with PTRACE_O_TRACEEXEC), lets the
exec happen, runs the new image to its ELF entry point (the dynamic loader has loaded and initialised
libc, no code of the program has run), and parks the thread there in a small loop of system calls
written over the entry code. It then detaches, and Frida attaches once, as to any sleeping process;
when the agent is in, the sidecar traces the thread again, puts the entry code and the registers back,
and detaches: the program starts at its first instruction with the hook in place. (Letting Frida attach
to a process stopped by SIGSTOP instead is slow, ~700 ms, and leaves it traced.)

The park loop sleeps 5 ms at a time and exits with status 127 if its parent changes, so a sidecar killed
while the command is parked never leaves it parked for ever, nor lets it run unhooked. Before the loop,
the command's main thread asks for the parent-death signal (prctl PR_SET_PDEATHSIG, SIGKILL): from then
on a sidecar killed in any way, SIGKILL included, takes the command with it instead of leaving it orphaned.
It is the main thread's own setting, which Frida's threads, stopped and restarted around every fork,
could not keep; it survives the command's execs and is not inherited by its children.

x86_64 only for now (the loop's machine code and the register layout are per architecture); elsewhere
`supported()` is false and the sidecar uses the stub. Library constructors, which the dynamic loader runs
before the entry point, run before the hook is in (the stub's exec gating injected earlier); a library
that resolves names in its constructor is the one case this path sees differently.
"""

import ctypes
import errno as errno_module
import os
import signal
import struct
import time

PTRACE_CONT = 7
PTRACE_GETREGS = 12
PTRACE_SETREGS = 13
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
PTRACE_INTERRUPT = 0x4207
PTRACE_O_TRACEEXEC = 0x10
PTRACE_O_EXITKILL = 0x100000
PTRACE_EVENT_EXEC = 4
PTRACE_EVENT_STOP = 0x80
WALL = 0x40000000  # __WALL
AT_ENTRY = 9

# struct user_regs_struct (x86_64): 27 unsigned longs; rip is the 17th.
X86_64_REGS = 27
X86_64_RIP = 16

# The park loop (x86_64, position-independent, 81 bytes):
#         mov edi, 1 (PR_SET_PDEATHSIG); mov esi, 9 (SIGKILL); mov eax, 157 (prctl); syscall
#   park: mov eax, 110 (getppid); syscall; cmp eax, PARENT; jne gone
#         lea rdi, [rip + ts]; xor esi, esi; mov eax, 35 (nanosleep); syscall; jmp park
#   gone: mov edi, 127; mov eax, 231 (exit_group); syscall
#   ts:   struct timespec {0, 5000000}
#   (assembled with GNU as; the parent's pid goes at PARK_PARENT_OFFSET, the cmp's immediate)
PARK_X86_64 = bytes.fromhex(
    'bf01000000'
    'be09000000'
    'b89d000000'
    '0f05'
    'b86e000000'
    '0f05'
    '3d00000000'
    '7512'
    '488d3d1b000000'
    '31f6'
    'b823000000'
    '0f05'
    'ebe0'
    'bf7f000000'
    'b8e7000000'
    '0f05'
    '0f1f4000'
    '0000000000000000'
    '404b4c0000000000'
)
PARK_PARENT_OFFSET = 25


class ParkError(Exception):
    """The command could not be parked; `errno` is set when a ptrace or /proc call failed."""

    def __init__(self, message, errno=None):
        super().__init__(message)
        self.errno = errno


def supported():
    """True when this machine's architecture has a park loop and libc's ptrace is reachable."""
    if os.uname().machine != 'x86_64':  # not platform.machine(): importing platform costs ~8 ms
        return False
    try:
        return _libc() is not None
    except OSError:
        return False


_libc_handle = None


def _libc():
    global _libc_handle
    if _libc_handle is None:
        handle = ctypes.CDLL(None, use_errno=True)
        handle.ptrace.restype = ctypes.c_long
        handle.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
        _libc_handle = handle
    return _libc_handle


def _ptrace(request, pid, addr=None, data=None):
    libc = _libc()
    ctypes.set_errno(0)
    result = libc.ptrace(request, pid, addr, data)
    if result == -1 and ctypes.get_errno() != 0:
        errno = ctypes.get_errno()
        raise ParkError(f'ptrace({request}) on process {pid}: {os.strerror(errno)}', errno)
    return result


class Ended(Exception):
    """The traced process ended (exited or was killed, and is reaped) before the wanted point; `status` is
    its waitpid status, `after_exec` whether the command's image had started."""

    def __init__(self, status, after_exec=False):
        super().__init__(f'process ended with wait status {status}')
        self.status = status
        self.after_exec = after_exec


def _wait_stop(pid, accept):
    """Waits for a ptrace stop of `pid` that `accept(status)` wants; passes signals on meanwhile."""
    while True:
        _, status = os.waitpid(pid, WALL)
        if not os.WIFSTOPPED(status):
            raise Ended(status)
        if accept(status):
            return status
        event = status >> 16
        # A signal-delivery stop: deliver the signal as if nobody were tracing. Any other stop: go on.
        _ptrace(PTRACE_CONT, pid, None, os.WSTOPSIG(status) if event == 0 else 0)


class Parked:
    """A command parked at its entry point; `release()` starts it there."""

    def __init__(self, pid, entry, original, registers, memory):
        self.pid = pid
        self._entry = entry
        self._original = original
        self._registers = registers
        self._memory = memory

    def release(self):
        """Traces the thread again, puts back the entry code and registers, and lets it run."""
        pid = self.pid
        for attempt in range(50):
            try:
                _ptrace(PTRACE_SEIZE, pid, None, 0)
                break
            except ParkError as error:
                # Frida may not have let go of the thread yet (EPERM while another tracer holds it).
                if error.errno != errno_module.EPERM or attempt == 49:
                    raise
                time.sleep(0.01)
        _ptrace(PTRACE_INTERRUPT, pid)
        _wait_stop(pid, lambda status: status >> 16 == PTRACE_EVENT_STOP)
        os.pwrite(self._memory, self._original, self._entry)
        os.close(self._memory)
        # The registers as they were at the entry point (orig_rax -1: no system call is restarted).
        _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(self._registers))
        _ptrace(PTRACE_DETACH, pid, None, 0)

    def close(self):
        try:
            os.close(self._memory)
        except OSError:
            pass


def trace_before_exec(pid):
    """Traces the stub `pid` (our child, still waiting for its go-ahead) so that its exec stops."""
    _ptrace(PTRACE_SEIZE, pid, None, PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL)


def park_after_exec(pid, is_static):
    """After trace_before_exec and the stub's release: waits for the exec, then parks the new image.

    Returns a Parked, or None when `is_static(pid)` says the image cannot be hooked (it is then released
    untouched). Raises Ended when the process ends first (the stub failed, or the loader did), and
    ParkError when tracing fails.
    """
    _wait_stop(pid, lambda status: status >> 8 == signal.SIGTRAP | (PTRACE_EVENT_EXEC << 8))
    try:
        return _park(pid, is_static)
    except Ended as ended:
        ended.after_exec = True
        raise


def _park(pid, is_static):
    if is_static(pid):
        _ptrace(PTRACE_DETACH, pid, None, 0)
        return None
    with open(f'/proc/{pid}/auxv', 'rb') as file:
        auxv = file.read()
    entry = next((value for key, value in struct.iter_unpack('<QQ', auxv) if key == AT_ENTRY), None)
    if entry is None:
        raise ParkError(f'process {pid} has no entry point in its auxiliary vector')
    memory = os.open(f'/proc/{pid}/mem', os.O_RDWR | os.O_CLOEXEC)
    try:
        first = os.pread(memory, 1, entry)
        # Run the dynamic loader to the entry point, stopping on a breakpoint there.
        os.pwrite(memory, b'\xcc', entry)
        _ptrace(PTRACE_CONT, pid, None, 0)
        _wait_stop(pid, lambda status: status >> 8 == signal.SIGTRAP)
        # The entry code as the loader left it (it could have relocated text), our breakpoint undone.
        original = first + os.pread(memory, len(PARK_X86_64) - 1, entry + 1)
        if len(original) != len(PARK_X86_64):
            raise ParkError(f'process {pid}: the code at its entry point is too short to park')
        registers = (ctypes.c_ulonglong * X86_64_REGS)()
        _ptrace(PTRACE_GETREGS, pid, None, ctypes.byref(registers))
        if registers[X86_64_RIP] != entry + 1:
            raise ParkError(f'process {pid} stopped at {registers[X86_64_RIP]:#x}, not at its entry point {entry:#x}')
        registers[X86_64_RIP] = entry
        saved = (ctypes.c_ulonglong * X86_64_REGS)(*registers)
        park = bytearray(PARK_X86_64)
        park[PARK_PARENT_OFFSET : PARK_PARENT_OFFSET + 4] = struct.pack('<I', os.getpid())
        os.pwrite(memory, bytes(park), entry)
        _ptrace(PTRACE_SETREGS, pid, None, ctypes.byref(registers))
        _ptrace(PTRACE_DETACH, pid, None, 0)
    except BaseException:
        os.close(memory)
        raise
    return Parked(pid, entry, original, saved, memory)
