/**
 * Tokens and the accounts they stand for. A token is a bearer secret; the server keeps only its SHA-256
 * and compares digests in constant time, so neither the comparison's timing nor a leaked memory dump of
 * the table gives a token away. Without `--token`, one is generated into `DATA_DIR/token` (mode 0600) on
 * first start and reused after.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { DEFAULT_ACCOUNT } from '../protocol/names';

function digest(token: string): Buffer {
  return crypto.createHash('sha256').update(token, 'utf8').digest();
}

export class Accounts {
  private readonly entries: Array<{ digest: Buffer; account: string }> = [];

  add(token: string, account: string = DEFAULT_ACCOUNT): void {
    this.entries.push({ digest: digest(token), account });
  }

  /** The account a token belongs to, or null. Looks at every entry so the time does not depend on which matched. */
  tryAccountOf(token: string): string | null {
    const d = digest(token);
    let found: string | null = null;
    for (const entry of this.entries) if (crypto.timingSafeEqual(entry.digest, d)) found = entry.account;
    return found;
  }
}

/** The token from `--token`, else from DATA_DIR/token, else a new one written there. */
export async function loadOrCreateToken(dataDir: string, given: string | undefined): Promise<{ token: string; file: string | null }> {
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

  constructor(private readonly limit = 20, private readonly windowMs = 10_000) {}

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
