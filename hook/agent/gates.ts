/**
 * The gates: native replacements (a CModule, compiled in-process by TinyCC in 1-2 ms) of every hooked libc
 * function, so that an ordinary call never enters JavaScript. Entering the agent's JS cost 19-26 µs per
 * call (measured by the bench's ordinary-name figures); deciding in C costs well under a microsecond.
 *
 * Each gate decides whether its call concerns a pseudo name or address, exactly as loosely as PseudoSpace
 * or more so (never less):
 * - a name is pseudo when, without one trailing dot and compared ASCII-case-insensitively, it ends with
 *   `.` + one of the zones (so never the zone itself), or matches a forwarded name pattern (forwarding.ts:
 *   a `.suffix`, the name and those under it, or a name alone);
 * - an address is pseudo when it is AF_INET inside the pseudo network, or AF_INET6 `::ffff:a.b.c.d` with
 *   a.b.c.d inside it; a connect's (connect, sendto and sendmsg with MSG_FASTOPEN) also when that IPv4
 *   address and its port lie in one of forwarding mode's networks (a loop over a handful of words, none
 *   when the redirector forwards nothing).
 * Anything else is passed to the function itself with the same arguments: called from inside its own
 * replacement, Interceptor routes the call to the original, and its return value and errno reach the
 * caller untouched. Only pseudo calls go to the function's JS slow path (a NativeCallback), which
 * re-checks with PseudoSpace and keeps every decision. getpeername is the one gate that decides after
 * the call: the original runs first, and only a pseudo peer goes on to the slow path, which may put its
 * published port back (listen-ports.ts) or the forwarded address a stand-in was for (forwarding.ts), and
 * only once either happened in this process (`up_config.moved`).
 *
 * Why `Interceptor.replace` and not `replaceFast` (which an earlier attempt used, and which skips a
 * trampoline): a gate stays on the stack while the original runs, and the original may block for a long
 * time (a connect in progress, a slow resolver). replaceFast jumps straight to the gate, so Frida does not
 * know a thread is inside it; on detach the script unloaded, the CModule was unmapped, and the blocked
 * thread returned into freed code (SIGSEGV). The ordinary Interceptor counts the threads inside each
 * replacement (its trampolines increment a usage counter on entry and decrement it on leave), keeps a
 * reverted function's trampolines until the count is zero, and GumJS does not complete a script's unload
 * (which frees the CModule) before that. So a detach while a thread is blocked inside a hooked call waits
 * for that call to return, and the process keeps running. test/e2e/hook.test.ts proves it.
 *
 * The names, the pseudo network and the forwarded networks are data, written by `configureGates` into `up_config` (the C source
 * is a constant). So are, per gate, the function to call for an ordinary call (the hooked export itself)
 * and the slow path, both written before the gate is installed, so a gate never sees an empty slot. The
 * slow paths of the connect family cannot set errno through `this` (called from C, their `this` is a
 * CallbackContext), so they get one extra argument, an `int *` the gate stores into errno after they
 * return (left at -1: errno is not set); the Interceptor then passes the thread's errno to the caller.
 *
 * Length: about 450 lines, over the ~350 the house aims at: most of it is the gates' C source, one
 * constant that must stay beside the code that writes the config it reads (the layout of `up_config`).
 */
import { AF_INET, AF_INET6, AI_NUMERICHOST, MSG_FASTOPEN, NI_NUMERICHOST, libcFunctions } from './libc';

/** The gated functions, in the order of their slots in up_config.target / up_config.slow. */
const GATES = [
  'connect',
  'sendto',
  'sendmsg',
  'getaddrinfo',
  'gethostbyname',
  'gethostbyname2',
  'gethostbyname_r',
  'gethostbyname2_r',
  'gethostbyaddr',
  'gethostbyaddr_r',
  'getnameinfo',
  'getpeername',
] as const;
export type GateName = (typeof GATES)[number];

const SLOTS = 16;
/**
 * struct up_config: u32 base, u32 mask, const u8 *zones, void *target[SLOTS], void *slow[SLOTS], u32 moved,
 * u32 nets_count, const u32 *nets.
 */
const CONFIG = {
  base: 0,
  mask: 4,
  zones: 8,
  target: 16,
  slow: 16 + 8 * SLOTS,
  moved: 16 + 16 * SLOTS,
  netsCount: 20 + 16 * SLOTS,
  nets: 24 + 16 * SLOTS,
  size: 32 + 16 * SLOTS,
};

/** How a name of the gates' list matches (its byte after the length): see up_pseudo_name. */
export const NAME_UNDER = 0;
export const NAME_OR_UNDER = 1;
export const NAME_ONLY = 2;

/** A name the gates send to the slow path: a zone (NAME_UNDER) or a forwarded name pattern. */
export interface GatedName {
  name: string;
  match: typeof NAME_UNDER | typeof NAME_OR_UNDER | typeof NAME_ONLY;
}

/** An IPv4 network whose connects go to the slow path (forwarding mode), host order, with its ports. */
export interface GateNet {
  base: number;
  mask: number;
  low: number;
  high: number;
}

const SOURCE = `
#define SLOTS ${SLOTS}
#define AF_INET ${AF_INET}
#define AF_INET6 ${AF_INET6}
#define AI_NUMERICHOST ${AI_NUMERICHOST}
#define NI_NUMERICHOST ${NI_NUMERICHOST}
#define MSG_FASTOPEN ${MSG_FASTOPEN}

struct up_config {
  unsigned int base;
  unsigned int mask;
  const unsigned char * volatile zones;
  void * volatile target[SLOTS];
  void * volatile slow[SLOTS];
  volatile unsigned int moved;
  volatile unsigned int nets_count;
  const unsigned int * volatile nets;
};

extern struct up_config up_config;
extern int * __errno_location (void);

#define TARGET(i) up_config.target[i]
#define SLOW(i) up_config.slow[i]

static unsigned int up_be32 (const unsigned char * p)
{
  return ((unsigned int) p[0] << 24) | ((unsigned int) p[1] << 16) | ((unsigned int) p[2] << 8) | (unsigned int) p[3];
}

static int up_in_net (unsigned int a)
{
  return (a & up_config.mask) == (up_config.base & up_config.mask);
}

static int up_is_v4_mapped (const unsigned char * p)
{
  int i;
  for (i = 0; i != 10; i++)
    if (p[i] != 0)
      return 0;
  return p[10] == 0xff && p[11] == 0xff;
}

static int up_pseudo_raw (const unsigned char * a, unsigned int len, int family)
{
  if (a == 0)
    return 0;
  if (family == AF_INET && len >= 4)
    return up_in_net (up_be32 (a));
  if (family == AF_INET6 && len >= 16 && up_is_v4_mapped (a))
    return up_in_net (up_be32 (a + 12));
  return 0;
}

/* nets: nets_count entries of four host-order words: base, mask, lowest port, highest port. */
static int up_forwarded (unsigned int a, unsigned int port)
{
  const unsigned int * net = up_config.nets;
  unsigned int i, n = up_config.nets_count;
  for (i = 0; i != n; i++, net += 4)
    if ((a & net[1]) == net[0] && port >= net[2] && port <= net[3])
      return 1;
  return 0;
}

/* A connect the slow path takes: to a pseudo address, or to one forwarding mode catches. */
static int up_connect_sockaddr (const unsigned char * sa, unsigned int len)
{
  unsigned short family;
  unsigned int a, port;
  if (sa == 0 || len < 2)
    return 0;
  family = *(const unsigned short *) sa;
  if (family == AF_INET && len >= 16)
    a = up_be32 (sa + 4);
  else if (family == AF_INET6 && len >= 24 && up_is_v4_mapped (sa + 8))
    a = up_be32 (sa + 20);
  else
    return 0;
  if (up_in_net (a))
    return 1;
  port = ((unsigned int) sa[2] << 8) | sa[3];
  return up_forwarded (a, port);
}

static int up_pseudo_sockaddr (const unsigned char * sa, unsigned int len)
{
  unsigned short family;
  if (sa == 0 || len < 2)
    return 0;
  family = *(const unsigned short *) sa;
  if (family == AF_INET && len >= 16)
    return up_in_net (up_be32 (sa + 4));
  if (family == AF_INET6 && len >= 24 && up_is_v4_mapped (sa + 8))
    return up_in_net (up_be32 (sa + 20));
  return 0;
}

/*
 * zones: a sequence of (length byte, match byte, lower-case bytes), ended by a zero length. The match byte:
 * 0, names strictly under it (a zone); 1, the name itself too (a forwarded .suffix); 2, the name alone.
 */
static int up_pseudo_name (const char * name)
{
  const unsigned char * z;
  unsigned long n = 0;
  if (name == 0 || (z = up_config.zones) == 0)
    return 0;
  while (name[n] != 0)
  {
    if (++n > 1024)
      return 0;
  }
  if (n > 0 && name[n - 1] == '.')
    n--;
  while (*z != 0)
  {
    unsigned long zl = *z, i;
    unsigned int match = z[1];
    const unsigned char * zs = z + 2;
    if ((n > zl + 1 && name[n - zl - 1] == '.' && match != 2) || (n == zl && match != 0))
    {
      const unsigned char * tail = (const unsigned char *) name + n - zl;
      for (i = 0; i != zl; i++)
      {
        unsigned int c = tail[i];
        if (c >= 'A' && c <= 'Z')
          c += 32;
        if (c != zs[i])
          break;
      }
      if (i == zl)
        return 1;
    }
    z = zs + zl;
  }
  return 0;
}

typedef int (* up_connect_fn) (int, const void *, unsigned int);
typedef int (* up_connect_slow_fn) (int, const void *, unsigned int, int *);
typedef long (* up_sendto_fn) (int, const void *, unsigned long, int, const void *, unsigned int);
typedef long (* up_sendto_slow_fn) (int, const void *, unsigned long, int, const void *, unsigned int, int *);
typedef long (* up_sendmsg_fn) (int, const void *, int);
typedef long (* up_sendmsg_slow_fn) (int, const void *, int, int *);

int up_connect (int fd, const void * sa, unsigned int len)
{
  if (up_connect_sockaddr (sa, len))
  {
    int err = -1;
    int r = ((up_connect_slow_fn) SLOW (0)) (fd, sa, len, &err);
    if (err >= 0)
      *__errno_location () = err;
    return r;
  }
  return ((up_connect_fn) TARGET (0)) (fd, sa, len);
}

long up_sendto (int fd, const void * buf, unsigned long n, int flags, const void * sa, unsigned int len)
{
  if ((flags & MSG_FASTOPEN) != 0 && up_connect_sockaddr (sa, len))
  {
    int err = -1;
    long r = ((up_sendto_slow_fn) SLOW (1)) (fd, buf, n, flags, sa, len, &err);
    if (err >= 0)
      *__errno_location () = err;
    return r;
  }
  return ((up_sendto_fn) TARGET (1)) (fd, buf, n, flags, sa, len);
}

long up_sendmsg (int fd, const void * msg, int flags)
{
  if ((flags & MSG_FASTOPEN) != 0 && msg != 0
      && up_connect_sockaddr (*(const unsigned char * const *) msg, *(const unsigned int *) ((const char *) msg + 8)))
  {
    int err = -1;
    long r = ((up_sendmsg_slow_fn) SLOW (2)) (fd, msg, flags, &err);
    if (err >= 0)
      *__errno_location () = err;
    return r;
  }
  return ((up_sendmsg_fn) TARGET (2)) (fd, msg, flags);
}

typedef int (* up_getaddrinfo_fn) (const char *, const char *, const void *, void *);

int up_getaddrinfo (const char * node, const char * service, const void * hints, void * res)
{
  int pseudo = (hints == 0 || (*(const int *) hints & AI_NUMERICHOST) == 0) && up_pseudo_name (node);
  return ((up_getaddrinfo_fn) (pseudo ? SLOW (3) : TARGET (3))) (node, service, hints, res);
}

typedef void * (* up_gethostbyname_fn) (const char *);
typedef void * (* up_gethostbyname2_fn) (const char *, int);
typedef int (* up_gethostbyname_r_fn) (const char *, void *, char *, unsigned long, void *, int *);
typedef int (* up_gethostbyname2_r_fn) (const char *, int, void *, char *, unsigned long, void *, int *);

void * up_gethostbyname (const char * name)
{
  return ((up_gethostbyname_fn) (up_pseudo_name (name) ? SLOW (4) : TARGET (4))) (name);
}

void * up_gethostbyname2 (const char * name, int family)
{
  return ((up_gethostbyname2_fn) (up_pseudo_name (name) ? SLOW (5) : TARGET (5))) (name, family);
}

int up_gethostbyname_r (const char * name, void * ret, char * buf, unsigned long buflen, void * result, int * h_errnop)
{
  return ((up_gethostbyname_r_fn) (up_pseudo_name (name) ? SLOW (6) : TARGET (6))) (name, ret, buf, buflen, result, h_errnop);
}

int up_gethostbyname2_r (const char * name, int family, void * ret, char * buf, unsigned long buflen, void * result, int * h_errnop)
{
  return ((up_gethostbyname2_r_fn) (up_pseudo_name (name) ? SLOW (7) : TARGET (7))) (name, family, ret, buf, buflen, result, h_errnop);
}

typedef void * (* up_gethostbyaddr_fn) (const void *, unsigned int, int);
typedef int (* up_gethostbyaddr_r_fn) (const void *, unsigned int, int, void *, char *, unsigned long, void *, int *);
typedef int (* up_getnameinfo_fn) (const void *, unsigned int, char *, unsigned int, char *, unsigned int, int);

void * up_gethostbyaddr (const void * addr, unsigned int len, int family)
{
  return ((up_gethostbyaddr_fn) (up_pseudo_raw (addr, len, family) ? SLOW (8) : TARGET (8))) (addr, len, family);
}

int up_gethostbyaddr_r (const void * addr, unsigned int len, int family, void * ret, char * buf, unsigned long buflen, void * result, int * h_errnop)
{
  return ((up_gethostbyaddr_r_fn) (up_pseudo_raw (addr, len, family) ? SLOW (9) : TARGET (9))) (addr, len, family, ret, buf, buflen, result, h_errnop);
}

int up_getnameinfo (const void * sa, unsigned int len, char * host, unsigned int hostlen, char * serv, unsigned int servlen, int flags)
{
  int pseudo = host != 0 && hostlen > 0 && (flags & NI_NUMERICHOST) == 0 && up_pseudo_sockaddr (sa, len);
  return ((up_getnameinfo_fn) (pseudo ? SLOW (10) : TARGET (10))) (sa, len, host, hostlen, serv, servlen, flags);
}

typedef int (* up_getpeername_fn) (int, void *, unsigned int *);
typedef void (* up_getpeername_slow_fn) (int, void *, unsigned int);

/* After the call, unlike the others: only a pseudo peer, once some peer was rewritten, may need its port or address put back. */
int up_getpeername (int fd, void * sa, unsigned int * len)
{
  unsigned int room = len != 0 ? *len : 0;
  int r = ((up_getpeername_fn) TARGET (11)) (fd, sa, len);
  if (r == 0 && up_config.moved != 0)
  {
    unsigned int n = *len < room ? *len : room;
    if (up_pseudo_sockaddr (sa, n))
    {
      int saved = *__errno_location ();
      ((up_getpeername_slow_fn) SLOW (11)) (fd, sa, n);
      *__errno_location () = saved;
    }
  }
  return r;
}
`;

/** The compiled gates and their configuration. Never disposed: GumJS frees both at unload, after Interceptor let go. */
let compiled: { config: NativePointer; module: CModule } | null = null;
/** Every packed zone and net list written, referenced so that it lives as long as up_config may point at it. */
const zoneData: NativePointer[] = [];

function gates(): { config: NativePointer; module: CModule } {
  if (compiled === null) {
    const config = Memory.alloc(CONFIG.size);
    const module = new CModule(SOURCE, { up_config: config, __errno_location: libcFunctions().errnoLocation });
    compiled = { config, module };
  }
  return compiled;
}

/**
 * Writes the names (lower case, without trailing dot, as PseudoSpace holds them), the pseudo network
 * (host-order base and prefix) and forwarding mode's networks where the gates read them. Compiles the
 * gates on first use.
 */
export function configureGates(
  names: readonly GatedName[],
  base: number,
  prefix: number,
  nets: readonly GateNet[],
): void {
  const { config } = gates();
  const packed: number[] = [];
  for (const { name, match } of names) {
    // PseudoSpace accepts only ASCII host names of at most 253 characters, so a name that is not ASCII or
    // longer than a length byte can count never matches there either.
    if (name.length === 0 || name.length > 255 || !isPlainAscii(name)) continue;
    packed.push(name.length, match);
    for (let i = 0; i < name.length; i++) packed.push(name.charCodeAt(i));
  }
  packed.push(0);
  const data = Memory.alloc(packed.length);
  data.writeByteArray(packed);
  const netData = Memory.alloc(Math.max(16 * nets.length, 16));
  nets.forEach((net, i) => {
    const at = netData.add(16 * i);
    at.writeU32(net.base >>> 0);
    at.add(4).writeU32(net.mask >>> 0);
    at.add(8).writeU32(net.low);
    at.add(12).writeU32(net.high);
  });
  config.add(CONFIG.base).writeU32(base >>> 0);
  config.add(CONFIG.mask).writeU32(maskOf(prefix));
  config.add(CONFIG.zones).writePointer(data);
  // The count last, once the entries it covers are written: a gate on another thread reads it first.
  config.add(CONFIG.nets).writePointer(netData);
  config.add(CONFIG.netsCount).writeU32(nets.length);
  zoneData.push(data, netData);
}

/** The host-order mask of a prefix length. */
export function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/**
 * Lets the getpeername gate enter its slow path from now on: some pseudo listener of this process's
 * connects sits on another port than the published one (listen-ports.ts), or stands in for a forwarded
 * address (forwarding.ts). Until then the gate stays in C.
 */
export function setPeersRewritten(): void {
  gates().config.add(CONFIG.moved).writeU32(1);
}

/**
 * The gate replacing `name`, armed: an ordinary call goes to `target` (the hooked export, which from
 * inside its replacement reaches the original), a pseudo call to `slowPath`. Install it with
 * `Interceptor.replace(target, gate)`.
 */
export function armGate(name: GateName, target: NativePointer, slowPath: NativePointer): NativePointer {
  const { config, module } = gates();
  const index = GATES.indexOf(name);
  const gate: unknown = module[`up_${name}`];
  if (!(gate instanceof NativePointer)) throw new Error(`the gates lack up_${name}`);
  config.add(CONFIG.target + 8 * index).writePointer(target);
  config.add(CONFIG.slow + 8 * index).writePointer(slowPath);
  return gate;
}

/** True when every character is ASCII and none is NUL (the gate's C side ends strings there). */
function isPlainAscii(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code === 0 || code > 0x7f) return false;
  }
  return true;
}
