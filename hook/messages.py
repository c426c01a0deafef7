"""What hook-run tells the user: one line on stderr per expected failure or notice, prefixed `hook-run:`,
never a stack trace; UNDERPASS_HOOK_DEBUG=1 adds the debug lines. Every module of the sidecar reports
through here, so a closed stderr can never stop it halfway.
"""

import os
import sys

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


def one_line(error):
    return ' '.join(str(error).split()) or type(error).__name__
