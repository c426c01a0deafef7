/**
 * Tokens and the accounts they stand for. A token is a bearer secret; the server keeps only its SHA-256
 * and compares digests in constant time, so neither the comparison's timing nor a leaked memory dump of
 * the table gives a token away. Without `--token`, one is generated into `DATA_DIR/token` (mode 0600) on
 * first start and reused after.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../protocol/errors';
import { DEFAULT_ACCOUNT } from '../protocol/defaults';
import { label, publicationId, publicationName } from '../protocol/names';

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

export class Accounts {
  private readonly entries: Array<{ digest: Buffer; account: string }> = [];
  /** `owner/publication` → accounts its owner granted it to. */
  private readonly grants = new Map<string, Set<string>>();

  /** Takes `other`'s tokens and grants instead of its own (a cluster node taking the cluster's new ones). */
  replaceWith(other: Accounts): void {
    this.entries.splice(0, this.entries.length, ...other.entries);
    this.grants.clear();
    for (const [id, set] of other.grants) this.grants.set(id, set);
  }

  add(token: string, account: string = DEFAULT_ACCOUNT): void {
    this.entries.push({ digest: digest(token), account });
  }

  grant(owner: string, publication: string, to: string): void {
    const id = publicationId(owner, publication);
    const set = this.grants.get(id) ?? new Set<string>();
    set.add(to);
    this.grants.set(id, set);
  }

  /** Whether `account` may use `owner`'s `publication` without presenting its service key. */
  mayUse(account: string, owner: string, publication: string): boolean {
    return account === owner || (this.grants.get(publicationId(owner, publication))?.has(account) ?? false);
  }

  /** The account a token belongs to, or null. Looks at every entry so the time does not depend on which matched. */
  tryAccountOf(token: string): string | null {
    const d = digest(token);
    let found: string | null = null;
    for (const entry of this.entries) if (crypto.timingSafeEqual(entry.digest, d)) found = entry.account;
    return found;
  }
}

const AccountsFile = z
  .object({
    /** account → token */
    tokens: z.record(z.string(), z.string().min(16)),
    /** "owner/publication" → accounts that may use it */
    grants: z.record(z.string(), z.array(z.string())).default({}),
  })
  .strict();

/**
 * Loads `--accounts FILE`: `{"tokens": {"alice": "<token>", …}, "grants": {"alice/redis": ["bob"]}}`.
 * Throws ConfigError naming the file and what is wrong.
 */
export async function loadAccountsFile(file: string, into: Accounts): Promise<void> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`--accounts ${file}: ${e instanceof Error ? e.message : String(e)}`);
  }
  parseAccounts(text, file, into);
}

/** Reads an accounts file's text (`file` names it in errors: a path, or where a cluster keeps it). */
export function parseAccounts(text: string, file: string, into: Accounts): void {
  let parsed: z.infer<typeof AccountsFile>;
  try {
    parsed = AccountsFile.parse(JSON.parse(text));
  } catch (e) {
    const why =
      e instanceof z.ZodError ? (e.issues[0]?.message ?? 'invalid') : e instanceof Error ? e.message : String(e);
    throw new ConfigError(
      `--accounts ${file}: ${why} (expected {"tokens": {"ACCOUNT": "TOKEN"}, "grants": {"OWNER/PUBLICATION": ["ACCOUNT"]}}, tokens of 16 characters or more)`,
    );
  }
  for (const [account, token] of Object.entries(parsed.tokens)) into.add(token, label(account, 'account name'));
  for (const [id, accounts] of Object.entries(parsed.grants)) {
    const [owner, publication, extra] = id.split('/');
    if (owner === undefined || publication === undefined || extra !== undefined)
      throw new ConfigError(`--accounts ${file}: grant '${id}' is not OWNER/PUBLICATION`);
    for (const to of accounts)
      into.grant(label(owner, 'account name'), publicationName(publication), label(to, 'account name'));
  }
}

/** The token from `--token`, else from DATA_DIR/token, else a new one written there. */
export async function loadOrCreateToken(
  dataDir: string,
  given: string | undefined,
): Promise<{ token: string; file: string | null }> {
  if (given !== undefined) return { token: given, file: null };
  const file = path.join(dataDir, 'token');
  try {
    const token = (await fs.readFile(file, 'utf8')).trim();
    if (token !== '') return { token, file };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const token = crypto.randomBytes(24).toString('base64url');
  await fs.writeFile(file, token + '\n', { mode: 0o600 });
  return { token, file };
}

/** Compares two secrets (service keys) in constant time. */
export function secretsEqual(a: string, b: string): boolean {
  return crypto.timingSafeEqual(digest(a), digest(b));
}

/**
 * Counts failed authentications per remote address. Past `limit` failures within `windowMs`, the address
 * is refused outright (without a token check) until the window has passed, so guessing tokens is slow and
 * costs the server almost nothing; everyone else is unaffected.
 */
export class AuthThrottle {
  private readonly failures = new Map<string, { count: number; since: number }>();

  constructor(
    private readonly limit = 20,
    private readonly windowMs = 10_000,
  ) {}

  isBlocked(address: string, now = Date.now()): boolean {
    const entry = this.failures.get(address);
    if (!entry) return false;
    if (now - entry.since > this.windowMs) {
      this.failures.delete(address);
      return false;
    }
    return entry.count >= this.limit;
  }

  fail(address: string, now = Date.now()): void {
    const entry = this.failures.get(address);
    if (!entry || now - entry.since > this.windowMs) this.failures.set(address, { count: 1, since: now });
    else entry.count += 1;
    if (this.failures.size > 100_000) this.failures.clear();
  }
}
