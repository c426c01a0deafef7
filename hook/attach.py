"""`hook-run --pid PID`: hooks a running process until SIGINT/SIGTERM/SIGHUP/SIGQUIT, then removes the hook and
leaves the process running as before; ends by itself when the process exits.
"""

import threading

from hooker import detach_quietly
from messages import debug, one_line, say


def attach_process(hooker, pid, relay):
    stop = threading.Event()
    gone = threading.Event()
    relay.handle_with(lambda signo: stop.set())
    session, script = hooker.hook(pid, gate_children=False)
    session.on('detached', lambda reason, crash: (gone.set(), stop.set()))
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
