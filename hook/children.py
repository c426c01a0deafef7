"""Serves child gating: Frida reports each forked or exec'd child, suspended, on its own thread, which must
not block; the children are hooked and resumed on ours, one at a time.

And at the command's exit, none is left suspended: a child the command forked just before exiting (a
daemon's child, `ssh -f`) may not even be reported yet, and Frida kills a child still held when its
controller goes. The sidecar is the command's subreaper (PR_SET_CHILD_SUBREAPER), so such orphans become
its children: it waits, at most SETTLE_SECONDS, until each has been hooked and resumed, or is gone.
Normally there is none, and nothing is waited for.
"""

import ctypes
import os
import queue
import threading
import time

PR_SET_CHILD_SUBREAPER = 36
SETTLE_SECONDS = 5


def become_subreaper():
    """Orphaned descendants of the command are reparented to us rather than to init."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


class ChildWorker:
    """Hooks the children child gating reports, on a thread of its own, from its construction on."""

    def __init__(self, hooker, device):
        self._hooker = hooker
        self._device = device
        self._pending = queue.Queue()
        self._seen = set()
        self._busy = False
        threading.Thread(target=self._work, name='child-hooker', daemon=True).start()
        device.on('child-added', lambda child: self._pending.put(child))

    def _work(self):
        while True:
            child = self._pending.get()
            self._busy = True
            try:
                self._hooker.on_child_added(child)
            except Exception:  # on_child_added resumes in `finally`; the next child must still be served
                pass
            finally:
                self._seen.add(child.pid)
                self._busy = False
                self._pending.task_done()

    def settle(self, main_pid):
        """Waits until no process of the command's tree is held by gating: neither an orphan it left us nor
        a child of a hooked process that is not yet reported and resumed (a fork child is reported once it
        reaches its agent) or is stopped at an exec that Frida's helper traces (TracerPid set). First,
        gating stops in every hooked process, so that nothing new is held meanwhile: what they start from
        now on runs unhooked rather than be killed with us (and is not waited for)."""
        self._hooker.gate_new_children = False
        deadline = time.monotonic() + SETTLE_SECONDS
        # A child being hooked now may have read the flag before it changed, and get gating on: its session
        # must be among those whose gating stops below, or what it forks meanwhile would be held, and
        # killed with us, without counting as held (it started after `ungated_after`).
        while self._busy and time.monotonic() < deadline:
            time.sleep(0.005)
        for session, _script in list(self._hooker.scripts.values()):
            try:
                session.disable_child_gating()
            except Exception:
                pass
        ungated_after = start_time_now()
        while time.monotonic() < deadline:
            if self._pending.unfinished_tasks == 0 and not self._device_has_pending():
                parents = [os.getpid()] + [pid for pid in self._hooker.scripts if pid != main_pid]
                tree = [pid for parent in parents for pid in children_of(parent) if pid != main_pid]
                if not any(self._held(pid, ungated_after) for pid in tree):
                    return
            time.sleep(0.01)
        # Out of time (a loaded machine: each attach is CPU-bound): whatever gating still holds runs on
        # unhooked rather than be killed when we exit.
        self._release_pending()

    def _release_pending(self):
        try:
            pending = self._device.enumerate_pending_children()
        except Exception:
            return
        for child in pending:
            try:
                self._device.resume(child.pid)
            except Exception:
                pass

    def _held(self, pid, ungated_after):
        if is_traced(pid):
            return True
        started = start_time(pid)
        # Start times count clock ticks (10 ms): a child the command forked just before it exited mostly
        # started in the very tick gating stopped in, and must count as held until it is seen. (A child
        # forked unhooked in that tick after it is waited for, at most SETTLE_SECONDS: rare, and harmless.)
        return pid not in self._seen and started is not None and started <= ungated_after

    def _device_has_pending(self):
        try:
            return len(self._device.enumerate_pending_children()) > 0
        except Exception:
            return False


def children_of(pid):
    """The child processes of `pid`, from /proc/PID/task/*/children."""
    pids = set()
    try:
        for task in os.listdir(f'/proc/{pid}/task'):
            with open(f'/proc/{pid}/task/{task}/children') as file:
                pids.update(int(child) for child in file.read().split())
    except OSError:
        return []
    return list(pids)


def start_time(pid):
    """When `pid` started, in clock ticks after boot (/proc/PID/stat field 22), or None."""
    try:
        with open(f'/proc/{pid}/stat') as file:
            return int(file.read().rsplit(')', 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def start_time_now():
    """Now, in the unit of start_time()."""
    with open('/proc/uptime') as file:
        return int(float(file.read().split()[0]) * os.sysconf('SC_CLK_TCK'))


def is_traced(pid):
    try:
        with open(f'/proc/{pid}/status') as file:
            return any(line.startswith('TracerPid:') and line.split()[1] != '0' for line in file)
    except OSError:
        return False
