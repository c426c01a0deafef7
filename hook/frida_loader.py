"""Loads the `frida` wheel from the project's .venv as fast as it can be loaded: every hook-run pays for it."""

import os
import sys


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
