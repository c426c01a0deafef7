"""Programs the hook cannot enter (issue 12): static binaries and Go programs, which resolve and connect with
their own code. hook-run runs them unhooked, but makes their resolver ask the redirector's DNS responder
first: in a private mount namespace whose /etc/resolv.conf names the responder, then the system's own
nameservers (the responder refuses every name outside the zone at once, so the others still answer those).
A pseudo name then resolves to its pseudo address, where the redirector listens and admits the program's
connections by the /proc owner check, as it does any unhooked client of its user.

Why a mount namespace: it changes /etc/resolv.conf for this program (and what it starts) alone, and
needs no change to the program. Root may make one; another user may where unprivileged user namespaces are
allowed, and then maps only its own uid and gid, so the program runs as itself. resolv.conf names no port,
so this needs the responder on port 53: the redirector takes the last address of its pseudo range there
when it can (redirector/dns-responder.ts). Where any of this cannot be had, the program runs as before,
with one line saying what to do; if the redirector runs a SOCKS5 or HTTP CONNECT listener, ALL_PROXY,
HTTPS_PROXY and HTTP_PROXY name it (not in the namespace case: there the program's other traffic stays
its own, untouched by a proxy that tunnels pseudo names only).

The decision is made from the executable's file before anything runs, so the sidecar does not even load
Frida for such a command. Only the command itself is served: a static program started later by a hooked
one is found at its exec, too late for a namespace, and gets the hook's notice.
"""

import os
import signal

# ctypes, json, socket and tempfile are imported where used: this module is loaded by every hook-run, and
# only the rare unhookable command needs them.

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
PT_INTERP = 3
GO_SECTIONS = (b'.go.buildinfo', b'.note.go.buildid')
IPC_VERSION = 1
# glibc reads at most three nameservers (MAXNS).
MAX_NAMESERVERS = 3


def classify(path):
    """'go', 'static' or None (a dynamically linked program the hook can enter), from the ELF file itself."""
    try:
        with open(path, 'rb') as file:
            header = file.read(64)
            if len(header) < 64 or header[:4] != b'\x7fELF' or header[4] != 2:  # 64-bit ELF only
                return None
            order = 'little' if header[5] == 1 else 'big'

            def number(data, at, size):
                return int.from_bytes(data[at : at + size], order)

            phoff, phentsize, phnum = number(header, 32, 8), number(header, 54, 2), number(header, 56, 2)
            file.seek(phoff)
            programs = file.read(phentsize * phnum)
            static = all(number(programs, i * phentsize, 4) != PT_INTERP for i in range(phnum))
            shoff, shentsize, shnum, shstrndx = (
                number(header, 40, 8),
                number(header, 58, 2),
                number(header, 60, 2),
                number(header, 62, 2),
            )
            go = False
            if 0 < shnum < 4096 and shstrndx < shnum:
                file.seek(shoff)
                sections = file.read(shentsize * shnum)
                names_at = shstrndx * shentsize
                file.seek(number(sections, names_at + 24, 8))
                names = file.read(min(number(sections, names_at + 32, 8), 1 << 20))
                for i in range(shnum):
                    start = number(sections, i * shentsize, 4)
                    end = names.find(b'\0', start)
                    if names[start:end] in GO_SECTIONS:
                        go = True
                        break
    except (OSError, ValueError):
        return None
    return 'go' if go else 'static' if static else None


def ask_redirector(ipc_path):
    """The redirector's hello reply (node-ipc's wire form: JSON and a form feed), or None when none answers."""
    import json
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(ipc_path)
            sock.sendall(json.dumps({'type': 'hello', 'data': {'v': IPC_VERSION, 'pid': os.getpid()}}).encode() + b'\f')
            data = b''
            while b'\f' not in data and len(data) < 16384:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return None
    try:
        reply = json.loads(data.split(b'\f', 1)[0]).get('data')
    except (ValueError, AttributeError):
        return None
    return reply if isinstance(reply, dict) and reply.get('ok') is True else None


def resolv_conf(responder, system_file='/etc/resolv.conf'):
    """The private resolv.conf: the responder first, then the system's nameservers; its other lines kept."""
    lines, servers = [], []
    try:
        with open(system_file) as file:
            for line in file:
                words = line.split()
                if words[:1] == ['nameserver'] and len(words) > 1:
                    servers.append(words[1])
                elif words and not words[0].startswith(('#', ';')):
                    lines.append(line.rstrip('\n'))
    except OSError:
        pass
    servers = [responder] + [s for s in servers if s != responder]
    return ''.join(f'nameserver {s}\n' for s in servers[:MAX_NAMESERVERS]) + ''.join(f'{line}\n' for line in lines)


def find_program(name):
    if '/' in name:
        return name
    for directory in (os.environ.get('PATH') or os.defpath).split(os.pathsep):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def enter_namespace(resolv_file):
    """In the forked child: a private mount namespace (and a user namespace unless root) whose
    /etc/resolv.conf is `resolv_file`. Raises OSError with what failed."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result, what):
        if result != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f'{what}: {os.strerror(errno)}')

    uid, gid = os.getuid(), os.getgid()
    check(libc.unshare(CLONE_NEWNS | (0 if uid == 0 else CLONE_NEWUSER)), 'unshare')
    if uid != 0:
        for name, text in (('setgroups', 'deny'), ('uid_map', f'{uid} {uid} 1'), ('gid_map', f'{gid} {gid} 1')):
            with open(f'/proc/self/{name}', 'w') as file:
                file.write(text)
    # Private first: a bind over a shared mount would reach the machine's own /etc/resolv.conf.
    check(libc.mount(b'none', b'/', None, MS_REC | MS_PRIVATE, None), 'making the mounts private')
    check(libc.mount(resolv_file.encode(), b'/etc/resolv.conf', None, MS_BIND, None), 'mounting /etc/resolv.conf')


# The signals hook-run passes on, and SIGCHLD, which says the command ended. They stay blocked in hook-run
# while it waits (sigwaitinfo), and are unblocked in the child before its exec.
RELAYED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP)
# si_code of a signal the kernel sent (the terminal's ^C or ^\, a hangup): the command, in the same
# foreground process group, got its own copy, so passing it on would deliver it twice.
SI_KERNEL = 0x80


def spawn(program, command, env, resolv_file):
    """Forks and execs the command, in the private namespace when `resolv_file` is given. Returns its pid, or
    raises OSError when the namespace could not be made (the command then never ran)."""
    report_read, report_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_read)
            if resolv_file is not None:
                enter_namespace(resolv_file)
            os.set_inheritable(report_write, False)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, (*RELAYED, signal.SIGCHLD))
            os.execve(program, command, env)
        except BaseException as error:  # noqa: B036 - the child must never return into the sidecar
            try:
                os.write(report_write, str(error).encode() or b'error')
            finally:
                os._exit(127)
    os.close(report_write)
    with os.fdopen(report_read, 'rb') as report:
        failure = report.read().decode(errors='replace')
    if failure:
        os.waitpid(pid, 0)
        raise OSError(failure)
    return pid


def wait(pid):
    """The command's exit status, 128 + N for a death by signal N. SIGINT, SIGQUIT, SIGTERM and SIGHUP that a
    process sends hook-run go on to the command; the terminal's reach it directly."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        info = signal.sigwaitinfo((*RELAYED, signal.SIGCHLD))
        if info.si_signo != signal.SIGCHLD and info.si_code != SI_KERNEL:
            try:
                os.kill(pid, info.si_signo)
            except ProcessLookupError:
                pass


def run_if_unhookable(command, ipc_path, say):
    """Runs `command` as described above and returns its exit status when the hook cannot enter it; returns
    None, having done nothing, for a program the hook serves (or that does not exist: the sidecar says so)."""
    program = find_program(command[0])
    kind = classify(program) if program is not None else None
    if kind is None:
        return None
    name = os.path.basename(program)
    # Blocked before the fork, so that none is lost or takes its default action meanwhile (see wait).
    signal.pthread_sigmask(signal.SIG_BLOCK, (*RELAYED, signal.SIGCHLD))
    hello = ask_redirector(ipc_path)
    if hello is None:
        say(
            f"no redirector at {ipc_path}: start one with 'underpass redirector ... --ipc {ipc_path}' "
            f'or pass --ipc PATH of a running one'
        )
        return 1
    listeners = hello.get('listeners') if isinstance(hello.get('listeners'), dict) else {}
    dns = listeners.get('dns')
    env = dict(os.environ)
    pid, how = None, None
    if isinstance(dns, str) and dns.endswith(':53'):
        import tempfile

        responder = dns.rsplit(':', 1)[0]
        with tempfile.NamedTemporaryFile('w', prefix='underpass-resolv-', suffix='.conf', delete=False) as file:
            file.write(resolv_conf(responder))
        os.chmod(file.name, 0o644)
        try:
            pid = spawn(program, command, env, file.name)
            how = (
                f"pseudo names resolve through the redirector's DNS responder {responder} (a private /etc/resolv.conf)"
            )
        except OSError as error:
            how = (
                f'it cannot have a private /etc/resolv.conf naming the DNS responder ({error}): run hook-run as root, '
                f"or allow unprivileged user namespaces ('sudo sysctl kernel.unprivileged_userns_clone=1'), "
                f"or reach pseudo names through 'underpass forward'"
            )
        finally:
            os.unlink(file.name)
    else:
        how = (
            'the redirector runs no DNS responder on port 53 to resolve pseudo names for it: start the redirector '
            "as root, or after 'sudo sysctl net.ipv4.ip_unprivileged_port_start=53', without --dns off; or reach "
            "them through 'underpass forward'"
        )
    if pid is None:
        proxy = listeners.get('socks')
        url = f'socks5h://{proxy}' if isinstance(proxy, str) else None
        if url is None and isinstance(listeners.get('httpProxy'), str):
            url = f'http://{listeners["httpProxy"]}'
        if url is not None:
            for variable in ('ALL_PROXY', 'HTTPS_PROXY', 'HTTP_PROXY', 'all_proxy', 'https_proxy', 'http_proxy'):
                env.setdefault(variable, url)
            how += f"; ALL_PROXY, HTTPS_PROXY and HTTP_PROXY name the redirector's proxy {url}"
        pid = spawn(program, command, env, None)
    if kind == 'go':
        say(
            f'process {pid}: {name} is a Go program: it resolves and connects with its own code; {how}; '
            f'it runs unhooked'
        )
    else:
        say(
            f'{name} (process {pid}) is statically linked: its lookups and connects cannot be hooked; {how}; '
            f'it runs unhooked'
        )
    return wait(pid)
