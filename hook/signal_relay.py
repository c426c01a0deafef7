"""Passes the signals hook-run gets on to its command, as a shell passes them to its foreground job.

Why: hook-run stands between the user and the command, so `kill PID`, `timeout`, a supervisor or a
terminal's hang-up reach hook-run, and must reach the command: SIGINT, SIGTERM, SIGHUP and SIGQUIT are
forwarded. A signal the terminal itself sent (Ctrl-C, Ctrl-\\, a hang-up: si_code SI_KERNEL) already
reached the command, which is in the same foreground process group, and is not sent twice. hook-run then
goes on waiting: it exits with the command's status once the command is gone, never before.

The four signals are blocked in every thread from the start, before Frida starts its own threads (which
inherit the mask), and one thread takes them with sigwaitinfo(), which says who sent each. Until the
command is started, a signal ends hook-run at once (status 128 + N), killing the stub it may have started.
"""

import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
# What the command starts with instead of the sidecar's state: default dispositions for these.
RESET_IN_CHILD = (*SIGNALS, signal.SIGPIPE, signal.SIGXFSZ)
SI_KERNEL = 0x80


class SignalRelay:
    def __init__(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        self._target = None
        self._abort = None
        self._handler = None
        threading.Thread(target=self._run, name='signal-relay', daemon=True).start()

    def on_abort(self, cleanup):
        """What to do before exiting on a signal that arrives before the command runs."""
        self._abort = cleanup

    def forward_to(self, pid):
        """From now on, signals go to process `pid` (unless the terminal sent them)."""
        self._target = pid

    def handle_with(self, handler):
        """Every signal calls `handler(signo)` instead (hook-run --pid: a signal removes the hook)."""
        self._handler = handler

    def _run(self):
        while True:
            info = signal.sigwaitinfo(SIGNALS)
            if self._handler is not None:
                self._handler(info.si_signo)
            elif self._target is not None:
                if info.si_code != SI_KERNEL:
                    try:
                        os.kill(self._target, info.si_signo)
                    except ProcessLookupError:
                        pass
            else:
                if self._abort is not None:
                    self._abort()
                os._exit(128 + info.si_signo)
