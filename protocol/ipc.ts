/**
 * The IPC's messages, hook → redirector, in one table (IpcMessages): for each request kind the event it
 * travels as, the schema of its data and the schema of its reply (null for a notification, which gets no
 * reply). The wire form is in ipc-wire.ts (re-exported here); PROTOCOL.md §2 describes each message.
 *
 * Everything read from the other side is parsed with these schemas, never cast: the redirector parses
 * each request (tryParseIpcRequest), the tests and the bench each reply (tryParseIpcReply). The agent
 * cannot load zod (json-shape.ts says why); it checks replies against the JSON Schemas that
 * `agentIpcTable` writes from the same table when hook/build-agent.mjs bundles it. Its types come from
 * here as type-only imports, which cost the bundle nothing.
 *
 * Version notes. v1 as first shipped: hello, resolve, open-tunnel, reverse. Added within v1: `publish` (for `hook-run --publish`), `list` (for `underpass ls`) and `status` (for
 * `underpass status`, which an older redirector does not answer: the command then says so), `claim`, and
 * `features` in the hello reply announcing it. IPC_VERSION did not change, because the hello check is an
 * exact match and a new number would turn every mixed pair away: an older agent never claims and is
 * admitted by the redirector's slower /proc owner check; a newer agent claims only when hello listed
 * `claim` (an older redirector would ignore the event, and each claim costs an IPC connection). Then
 * `moved` in the resolve, open-tunnel and reverse replies (a listener on another port than the published
 * one): an older agent ignores it and connects to the published port, which is all an older redirector
 * ever listened on. Then forwarding mode for hooked apps (issue 15): `forward` in the hello reply (the
 * names and networks to hand over), in the resolve and reverse replies (the address stands for a
 * forwarded name), `via` in the open-tunnel reply, and `fix` in an error reply. An older agent ignores
 * them all and never hands a forwarded name or network over; an older redirector sends none, so a newer
 * agent hands nothing over either.
 */
import { z } from 'zod';
import { IPC_REPLY_EVENT } from './ipc-wire';
import { assertShape, type JsonShape } from './json-shape';

export {
  encodeIpcMessage,
  formatIPv4,
  inPseudoNet,
  IPC_DELIMITER,
  IPC_MAX_MESSAGE,
  IPC_REPLY_EVENT,
  IPC_VERSION,
  tryDecodeIpcMessage,
  tryParseIPv4,
  trySockaddrIPv4,
  type IpcMessage,
  type IPv4Endpoint,
} from './ipc-wire';

const port = z.number().int().min(1).max(65535);
/** A dotted quad, checked loosely (its length): the redirector looks it up in its own tables. */
const dottedQuad = z.string().min(7).max(15);
const ok = z.literal(true);

/** Optional requests a redirector serves, announced in its hello reply. */
export type IpcFeature = 'claim';

export const HelloRequest = z.object({ v: z.number().int(), pid: z.number().int() });
export type HelloRequest = z.infer<typeof HelloRequest>;

/** Where a redirector serves unhooked clients, each as `HOST:PORT`; a listener it does not run is absent. */
export const HelloListeners = z.object({
  /** DNS responder for the zone (UDP and TCP). */
  dns: z.string().optional(),
  /** SOCKS5 with remote names. */
  socks: z.string().optional(),
  /** HTTP proxy (CONNECT). */
  httpProxy: z.string().optional(),
});
export type HelloListeners = z.infer<typeof HelloListeners>;

/**
 * What a hooked app hands to the redirector for forwarding mode (its `--forward` patterns): lookups of
 * these names, and connects to these IPv4 networks (a v4-mapped IPv6 destination included). Ports are
 * checked by the redirector for names (a lookup has none), by the hook's gate for networks.
 */
export const HelloForward = z.object({
  /** `suffix`: the name and every name under it; else the name alone. Lower case, no trailing dot. */
  names: z.array(z.object({ name: z.string(), suffix: z.boolean() })),
  nets: z.array(
    z.object({
      address: dottedQuad,
      prefix: z.number().int().min(0).max(32),
      ports: z.object({ low: port, high: port }).optional(),
    }),
  ),
});
export type HelloForward = z.infer<typeof HelloForward>;

export const HelloReply = z.object({
  ok,
  v: z.number().int(),
  /** Zones whose names are pseudo names, lower case, no trailing dot (e.g. `underpass.internal`). */
  zones: z.array(z.string()),
  /** The loopback sub-range pseudo addresses come from, as dotted quad and prefix length. */
  pseudoNet: z.object({ base: z.string(), prefix: z.number().int() }),
  /**
   * Optional requests this redirector serves (IpcFeature); absent from older redirectors. Any string is
   * taken, so that a newer redirector's features do not turn an older hook away.
   */
  features: z.array(z.string()).optional(),
  /** Its listeners for programs the hook cannot enter (issue 12); absent from older redirectors. */
  listeners: HelloListeners.optional(),
  /** Forwarding mode's destinations (issue 15); absent when it has none, and from older redirectors. */
  forward: HelloForward.optional(),
});
export type HelloReply = z.infer<typeof HelloReply>;

export const ResolveRequest = z.object({ name: z.string().min(1).max(1024) });
export type ResolveRequest = z.infer<typeof ResolveRequest>;

/**
 * Where the redirector listens for a publication when it could not listen on the published port of the
 * pseudo address (another program holds that port on every local address, or it is privileged): the
 * hook sends a connect() to `address:port` to `address:listenPort` instead, and getpeername() still
 * answers `port`. Absent from a reply when the listener sits on the published port itself, as it
 * normally does.
 */
export const MovedPort = z.object({
  /** The published port, the one the app connects to. */
  port,
  /** The port the redirector's listener holds on the same pseudo address. */
  listenPort: port,
});
export type MovedPort = z.infer<typeof MovedPort>;

export const ResolveReply = z.object({
  ok,
  name: z.string(),
  /** Dotted-quad IPv4 pseudo address, inside `pseudoNet`. */
  address: z.string(),
  moved: MovedPort.optional(),
  /**
   * The name is a forwarding-mode destination (the tunnel server resolves and dials it), not a
   * publication: the hook asks before every connect to its address, non-blocking ones too.
   */
  forward: z.boolean().optional(),
});
export type ResolveReply = z.infer<typeof ResolveReply>;

/** The pseudo address the app connects to (a v4-mapped IPv6 destination is sent as IPv4), and the port. */
export const ConnectRequest = z.object({ address: dottedQuad, port });
export type ConnectRequest = z.infer<typeof ConnectRequest>;

export const ConnectReply = z.object({
  ok,
  moved: MovedPort.optional(),
  /**
   * Forwarding mode, a destination outside the pseudo network (a `--forward` CIDR): the pseudo address
   * whose listener carries it. The hook connects there instead (`moved` then speaks of this address),
   * and getpeername() answers the destination the app asked for.
   */
  via: dottedQuad.optional(),
});
export type ConnectReply = z.infer<typeof ConnectReply>;

/**
 * A hooked app's word that the connection it just opened to a pseudo destination is its own: sent once
 * its connect() has returned (0, or EINPROGRESS), when the kernel has chosen the source port. The
 * listener then admits the accepted socket with these four ends at once, without the /proc owner check.
 * The IPC socket is its user's alone, so a claim proves the connection belongs to the redirector's user.
 * It is a notification: the hook closes right after writing it, and the redirector sends nothing back.
 * `address`/`port` is the pseudo destination the socket really connected to (as in ConnectRequest, but
 * `listenPort` when the listener moved); `localAddress`/`localPort` the app socket's own end, from
 * getsockname() (IPv4; a v4-mapped address is sent as IPv4).
 */
export const ClaimRequest = z.object({ address: z.ipv4(), port, localAddress: z.ipv4(), localPort: port });
export type ClaimRequest = z.infer<typeof ClaimRequest>;

export const ReverseRequest = z.object({ address: dottedQuad });
export type ReverseRequest = z.infer<typeof ReverseRequest>;

export const ReverseReply = z.object({
  ok,
  name: z.string(),
  /** As in ResolveReply, when the name has a listener: what a hook asks about an address it never resolved. */
  moved: MovedPort.optional(),
  /** As in ResolveReply. */
  forward: z.boolean().optional(),
});
export type ReverseReply = z.infer<typeof ReverseReply>;

/**
 * `hook-run --publish NAME`: the hooked server app listens on `port` (of `address`): the redirector
 * publishes NAME for it through a session of its own, and answers once the server accepted it.
 */
export const PublishRequest = z.object({
  name: z.string().min(1).max(200),
  address: z.string().max(64),
  port,
  pid: z.number().int(),
});
export type PublishRequest = z.infer<typeof PublishRequest>;

export const PublishReply = z.object({ ok, host: z.string(), port });
export type PublishReply = z.infer<typeof PublishReply>;

/** `underpass status`: nothing to ask, all to hear. */
export const StatusRequest = z.object({});
export type StatusRequest = z.infer<typeof StatusRequest>;

export const StatusReply = z.object({
  ok,
  session: z.object({
    /** Whether the session to the tunnel server is up now. */
    up: z.boolean(),
    /** The tunnel server, HOST:PORT. */
    server: z.string(),
    /** How the session gets there (`TLS direct`, `TLS via HTTP proxy …`); absent before the first session. */
    route: z.string().optional(),
    /** A PING's round trip on the live session, in ms. */
    rttMs: z.number().optional(),
    account: z.string().optional(),
    zone: z.string().optional(),
    /** The cluster node the session is on, when the tunnel server is one (added within version 1). */
    node: z.string().optional(),
  }),
  /** The listeners on pseudo addresses, one per publication in use. */
  listeners: z.array(
    z.object({
      host: z.string(),
      address: z.string(),
      port,
      listenPort: port.optional(),
      /** Where its tunnels go (added within version 1): `direct` to the proxy's listener, or `relay`. */
      via: z.enum(['direct', 'relay']).optional(),
    }),
  ),
  /** Listeners for programs the hook cannot enter. */
  fallbacks: HelloListeners,
  /** Tunneled connections open now. */
  tunnels: z.number().int(),
  /** The latest refusals, oldest first: when, the code, the one line. */
  refusals: z.array(z.object({ time: z.string(), code: z.string(), message: z.string() })),
});
export type StatusReply = z.infer<typeof StatusReply>;

/** `underpass ls [PREFIX]`: the publications under a prefix (a pseudo name's suffix). */
export const ListRequest = z.object({ under: z.string().max(253) });
export type ListRequest = z.infer<typeof ListRequest>;

export const ListReply = z.object({
  ok,
  names: z.array(z.object({ host: z.string(), port, online: z.boolean() })),
  /** More names lie under the prefix than one answer carries. */
  truncated: z.boolean(),
});
export type ListReply = z.infer<typeof ListReply>;

/** Stable error codes a reply may carry; the hook maps them to errno / EAI_* values. */
export const IPC_ERROR_CODES = [
  'NOT_FOUND', // not a publication: getaddrinfo answers EAI_NONAME
  'REFUSED', // service offline, wrong port, target refused: connect() fails with ECONNREFUSED
  'UNAVAILABLE', // redirector has no session to the server: EAI_AGAIN / ECONNREFUSED
  'BAD_REQUEST', // the request did not fit its schema
] as const;
export type IpcErrorCode = (typeof IPC_ERROR_CODES)[number];

export const ErrorReply = z.object({
  ok: z.literal(false),
  code: z.enum(IPC_ERROR_CODES),
  message: z.string(),
  /** What to do, when it is not what the code usually calls for (a forwarding refusal); the hook says it. */
  fix: z.string().optional(),
});
export type ErrorReply = z.infer<typeof ErrorReply>;

/**
 * Every request: its event, its data's schema, its reply's schema (null: a notification). node-ipc
 * reserves `connect`, `data`, `error`, `close`, `start` and `socket.disconnected` for its own use, so
 * no event may take those names.
 */
export const IpcMessages = {
  hello: { event: 'hello', request: HelloRequest, reply: HelloReply },
  resolve: { event: 'resolve', request: ResolveRequest, reply: ResolveReply },
  connect: { event: 'open-tunnel', request: ConnectRequest, reply: ConnectReply },
  reverse: { event: 'reverse', request: ReverseRequest, reply: ReverseReply },
  claim: { event: 'claim', request: ClaimRequest, reply: null },
  status: { event: 'status', request: StatusRequest, reply: StatusReply },
  list: { event: 'list', request: ListRequest, reply: ListReply },
  publish: { event: 'publish', request: PublishRequest, reply: PublishReply },
} as const;

export type IpcKind = keyof typeof IpcMessages;
/** The requests the redirector answers. */
export type IpcRequestKind = { [K in IpcKind]: (typeof IpcMessages)[K]['reply'] extends null ? never : K }[IpcKind];
/** The requests it only hears. */
export type IpcNotificationKind = Exclude<IpcKind, IpcRequestKind>;
export type IpcRequest<K extends IpcKind> = z.infer<(typeof IpcMessages)[K]['request']>;
/** A request's successful reply. */
export type IpcSuccess<K extends IpcRequestKind> = z.infer<NonNullable<(typeof IpcMessages)[K]['reply']>>;
/** What the redirector may answer a request: its successful reply, or an error reply. */
export type IpcReply<K extends IpcRequestKind> = IpcSuccess<K> | ErrorReply;

/** Event names by request kind, and `reply`. */
export const IpcEvent = {
  hello: IpcMessages.hello.event,
  resolve: IpcMessages.resolve.event,
  connect: IpcMessages.connect.event,
  reverse: IpcMessages.reverse.event,
  claim: IpcMessages.claim.event,
  status: IpcMessages.status.event,
  list: IpcMessages.list.event,
  publish: IpcMessages.publish.event,
  reply: IPC_REPLY_EVENT,
} as const;

const requestSchemas: { [K in IpcKind]: z.ZodType<IpcRequest<K>> } = {
  hello: HelloRequest,
  resolve: ResolveRequest,
  connect: ConnectRequest,
  reverse: ReverseRequest,
  claim: ClaimRequest,
  status: StatusRequest,
  list: ListRequest,
  publish: PublishRequest,
};

const replySchemas: { [K in IpcRequestKind]: z.ZodType<IpcReply<K>> } = {
  hello: z.union([HelloReply, ErrorReply]),
  resolve: z.union([ResolveReply, ErrorReply]),
  connect: z.union([ConnectReply, ErrorReply]),
  reverse: z.union([ReverseReply, ErrorReply]),
  status: z.union([StatusReply, ErrorReply]),
  list: z.union([ListReply, ErrorReply]),
  publish: z.union([PublishReply, ErrorReply]),
};

/** A request's data, parsed; null when it does not fit the request's schema. */
export function tryParseIpcRequest<K extends IpcKind>(kind: K, data: unknown): IpcRequest<K> | null {
  const parsed = requestSchemas[kind].safeParse(data);
  return parsed.success ? parsed.data : null;
}

/** A reply's data, parsed (the success shape of `kind`, or an error reply); null for anything else. */
export function tryParseIpcReply<K extends IpcRequestKind>(kind: K, data: unknown): IpcReply<K> | null {
  const parsed = replySchemas[kind].safeParse(data);
  return parsed.success ? parsed.data : null;
}

/** The table as the agent carries it: each kind's event, and each reply's JSON Schema. */
export interface AgentIpcTable {
  events: { [K in IpcKind]: (typeof IpcMessages)[K]['event'] };
  replies: { [K in IpcRequestKind]: JsonShape<IpcReply<K>> };
}

/** The JSON Schema of a reply, in the subset json-shape.ts checks. */
function replyShape<K extends IpcRequestKind>(kind: K): JsonShape<IpcReply<K>> {
  const schema: unknown = z.toJSONSchema(replySchemas[kind], { io: 'input', unrepresentable: 'throw' });
  assertShape(schema, `the ${kind} reply`);
  return schema;
}

/** Written into the agent's bundle by hook/build-agent.mjs; the tests check it against the zod schemas. */
export function agentIpcTable(): AgentIpcTable {
  return {
    events: IpcEvent,
    replies: {
      hello: replyShape('hello'),
      resolve: replyShape('resolve'),
      connect: replyShape('connect'),
      reverse: replyShape('reverse'),
      status: replyShape('status'),
      list: replyShape('list'),
      publish: replyShape('publish'),
    },
  };
}
