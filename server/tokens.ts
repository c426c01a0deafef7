/**
 * Issued tokens: one per user or machine, each with an account, optional scopes and an expiry, each
 * revocable on its own — so a leaked token costs one revocation, not a new token for every endpoint.
 *
 * A token reads `up_<id>_<secret>`: the id is public (it names the token in lists, logs and the audit
 * log); only the SHA-256 of the whole token is kept. `DATA_DIR/tokens.json` holds them and is written
 * only by `underpass token` (create, revoke), atomically and under a lock; a running server watches it,
 * so a new token works and a revoked one stops at once, without a restart. The server keeps last use in
 * `DATA_DIR/tokens-seen.json`, a file of its own, so the two writers never race on one file.
 * Every create, revoke, refused use and publication change is one JSON line in `DATA_DIR/audit.log`.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import picomatch from 'picomatch';
import { z } from 'zod';
import ms from 'ms';
import { AuthError, ConfigError } from '../protocol/errors';
import { label } from '../protocol/names';

export const TOKENS_FILE = 'tokens.json';
export const SEEN_FILE = 'tokens-seen.json';
export const AUDIT_FILE = 'audit.log';
const TOKEN_PREFIX = 'up_';
const ID_LENGTH = 12;

const IssuedToken = z
  .object({
    account: z.string(),
    name: z.string().optional(),
    /** SHA-256 of the whole token, hex. */
    digest: z.string().regex(/^[0-9a-f]{64}$/),
    created: z.iso.datetime(),
    expires: z.iso.datetime().optional(),
    revoked: z.iso.datetime().optional(),
    /** Globs over publication names this token may publish; absent: any. */
    publish: z.array(z.string()).optional(),
    /** Globs over NAME.OWNER this token may reach; absent: any its account may. */
    connect: z.array(z.string()).optional(),
  })
  .strict();
export type IssuedToken = z.infer<typeof IssuedToken>;

const TokensFile = z.object({ v: z.literal(1), tokens: z.record(z.string(), IssuedToken) }).strict();
type TokensFile = z.infer<typeof TokensFile>;

/** What a valid issued token lets its bearer do. */
export interface TokenGrant {
  id: string;
  account: string;
  expires: number | null;
  mayPublish(name: string): boolean;
  /** `host` is the pseudo name without its zone: NAME.OWNER. */
  mayConnect(host: string): boolean;
}

export type TokenVerdict =
  | { ok: true; grant: TokenGrant }
  | { ok: false; id: string; reason: 'unknown' | 'expired' | 'revoked'; message: string };

export function digestOf(token: string): string {
  return crypto.createHash('sha256').update(token, 'utf8').digest('hex');
}

/** The public id of an issued token, or null for any other string (the server's own token, say). */
export function tryTokenId(token: string): string | null {
  if (!token.startsWith(TOKEN_PREFIX) || token.length < TOKEN_PREFIX.length + ID_LENGTH + 2) return null;
  const id = token.slice(TOKEN_PREFIX.length, TOKEN_PREFIX.length + ID_LENGTH);
  if (!/^[0-9a-f]+$/.test(id) || token[TOKEN_PREFIX.length + ID_LENGTH] !== '_') return null;
  return id;
}

function tokensPath(dataDir: string): string {
  return path.join(dataDir, TOKENS_FILE);
}

/** Reads DATA_DIR/tokens.json; a missing file is no tokens, a damaged one a ConfigError naming it. */
export function readTokens(dataDir: string): TokensFile {
  const file = tokensPath(dataDir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { v: 1, tokens: {} };
    throw new ConfigError(`cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const parsed = TokensFile.safeParse(safeJson(text));
  if (!parsed.success)
    throw new ConfigError(
      `${file} is damaged (${parsed.error.issues[0]?.message ?? 'invalid'}): restore it from a backup`,
    );
  return parsed.data;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/**
 * Runs `change` on the tokens file under an exclusive lock (a directory, made atomically), then writes it
 * back through a rename, so a reader sees the old file or the new one, never half of one.
 */
function updateTokens<T>(dataDir: string, change: (file: TokensFile) => T): T {
  const lock = path.join(dataDir, `${TOKENS_FILE}.lock`);
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      fs.mkdirSync(lock);
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      // A lock older than the deadline was left by a writer that died.
      const age = Date.now() - (fs.statSync(lock, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > 10_000) fs.rmSync(lock, { recursive: true, force: true });
      else if (Date.now() > deadline) throw new ConfigError(`${lock} is held by another 'underpass token': try again`);
      else Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }
  try {
    const file = readTokens(dataDir);
    const result = change(file);
    const target = tokensPath(dataDir);
    const temporary = `${target}.${process.pid}.tmp`;
    fs.writeFileSync(temporary, JSON.stringify(file, null, 2) + '\n', { mode: 0o600 });
    fs.renameSync(temporary, target);
    return result;
  } finally {
    fs.rmSync(lock, { recursive: true, force: true });
  }
}

export interface CreateTokenOptions {
  account: string;
  /** Lifetime in ms; absent: never expires. */
  expiresInMs?: number;
  publish?: string[];
  connect?: string[];
  name?: string;
}

/** Issues a token; returns it (shown once) with its entry. */
export function createToken(
  dataDir: string,
  options: CreateTokenOptions,
  now = Date.now(),
): { token: string; id: string; entry: IssuedToken } {
  const account = label(options.account, 'account name');
  for (const pattern of [...(options.publish ?? []), ...(options.connect ?? [])]) checkPattern(pattern);
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  return updateTokens(dataDir, (file) => {
    let id: string;
    do id = crypto.randomBytes(ID_LENGTH / 2).toString('hex');
    while (file.tokens[id] !== undefined);
    const token = `${TOKEN_PREFIX}${id}_${crypto.randomBytes(32).toString('base64url')}`;
    const entry: IssuedToken = {
      account,
      ...(options.name !== undefined ? { name: options.name } : {}),
      digest: digestOf(token),
      created: new Date(now).toISOString(),
      ...(options.expiresInMs !== undefined ? { expires: new Date(now + options.expiresInMs).toISOString() } : {}),
      ...(options.publish !== undefined && options.publish.length > 0 ? { publish: options.publish } : {}),
      ...(options.connect !== undefined && options.connect.length > 0 ? { connect: options.connect } : {}),
    };
    file.tokens[id] = entry;
    appendAudit(dataDir, { event: 'token.create', id, account, ...scopesOf(entry) }, now);
    return { token, id, entry };
  });
}

function scopesOf(entry: IssuedToken): Record<string, unknown> {
  return {
    ...(entry.expires !== undefined ? { expires: entry.expires } : {}),
    ...(entry.publish !== undefined ? { publish: entry.publish } : {}),
    ...(entry.connect !== undefined ? { connect: entry.connect } : {}),
    ...(entry.name !== undefined ? { name: entry.name } : {}),
  };
}

/** Revokes token `id` (its id, or the whole token); a running server ends its sessions at once. */
export function revokeToken(dataDir: string, idOrToken: string, now = Date.now()): IssuedToken & { id: string } {
  const id = tryTokenId(idOrToken) ?? idOrToken;
  return updateTokens(dataDir, (file) => {
    const entry = file.tokens[id];
    if (entry === undefined)
      throw new ConfigError(`no token ${id} in ${tokensPath(dataDir)}: see 'underpass token list'`);
    if (entry.revoked === undefined) {
      entry.revoked = new Date(now).toISOString();
      appendAudit(dataDir, { event: 'token.revoke', id, account: entry.account }, now);
    }
    return { ...entry, id };
  });
}

export interface ListedToken extends IssuedToken {
  id: string;
  lastUsed?: string;
}

/** Every issued token, oldest first, with the last use the server recorded. */
export function listTokens(dataDir: string): ListedToken[] {
  const seen = readSeen(dataDir);
  return Object.entries(readTokens(dataDir).tokens)
    .map(([id, entry]) => ({ id, ...entry, ...(seen[id] !== undefined ? { lastUsed: seen[id] } : {}) }))
    .sort((a, b) => a.created.localeCompare(b.created));
}

export function readSeen(dataDir: string): Record<string, string> {
  const parsed = z.record(z.string(), z.string()).safeParse(safeJson(readOrEmpty(path.join(dataDir, SEEN_FILE))));
  return parsed.success ? parsed.data : {};
}

function readOrEmpty(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** A glob is checked when it is given, not at the first connection that meets it. */
function checkPattern(pattern: string): void {
  if (pattern.trim() === '' || /\s/.test(pattern))
    throw new ConfigError(`scope pattern '${pattern}' is empty or has spaces: use globs such as 'web*' or '*.alice'`);
  try {
    picomatch(pattern);
  } catch (e) {
    throw new ConfigError(`scope pattern '${pattern}' is not a glob: ${e instanceof Error ? e.message : String(e)}`);
  }
}

export function matcher(patterns: string[] | undefined): (subject: string) => boolean {
  if (patterns === undefined) return () => true;
  const tests = patterns.map((p) => picomatch(p, { dot: true, nocase: true }));
  return (subject) => tests.some((test) => test(subject));
}

/** One line of the audit log. A line under 4 KiB is one write(2) with O_APPEND: concurrent writers never interleave. */
export function appendAudit(dataDir: string, fields: Record<string, unknown>, now = Date.now()): void {
  const line = JSON.stringify({ time: new Date(now).toISOString(), ...fields }) + '\n';
  fs.appendFileSync(path.join(dataDir, AUDIT_FILE), line, { mode: 0o600 });
}

/** Parses `--expires`: `30d`, `12h`, `90m`, `2s` (the `ms` package's forms). */
export function parseExpires(text: string): number {
  // ms() has no form for "never": leaving the flag out is that.
  const value = msOf(text);
  if (value === undefined || !(value > 0))
    throw new ConfigError(`--expires '${text}' is not a duration: use forms such as 30d, 12h, 90m or 2s`);
  return value;
}

function msOf(text: string): number | undefined {
  // ms's type takes only its own literal forms; it answers NaN (or undefined) for anything else.
  const value: unknown = ms(text.trim() as ms.StringValue);
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** The one line a refused issued token earns its bearer. */
export function refusalOf(verdict: Extract<TokenVerdict, { ok: false }>): AuthError {
  return new AuthError(verdict.message);
}
