/**
 * The running server's view of DATA_DIR/tokens.json (server/tokens.ts has the file and the commands
 * that change it): verifies tokens, follows the file as `underpass token` changes it, and reports the
 * tokens that stopped being valid (revoked, or expired) so that their sessions can end at once.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  digestOf,
  matcher,
  readSeen,
  readTokens,
  SEEN_FILE,
  TOKENS_FILE,
  tryTokenId,
  type IssuedToken,
  type TokenVerdict,
} from './tokens';

/** Issued tokens as the server checks them; `start()` loads the file and follows it. */
export class TokenStore {
  private tokens = new Map<string, IssuedToken>();
  private watcher: fs.FSWatcher | null = null;
  private expiryTimer: NodeJS.Timeout | null = null;
  private reloadTimer: NodeJS.Timeout | null = null;
  private readonly seen = new Map<string, number>();
  private seenDirty = false;
  private seenTimer: NodeJS.Timeout | null = null;
  /** Ids reported as ended, so each is reported once. */
  private readonly ended = new Set<string>();

  constructor(
    private readonly dataDir: string,
    /** Called with the ids of tokens that were valid and are not any more. */
    private readonly onEnded: (ids: string[], reason: 'revoked' | 'expired') => void,
    private readonly onReloadError: (error: Error) => void,
  ) {}

  /** Loads the file and starts following it. Throws ConfigError when it is damaged. */
  start(): void {
    this.load();
    // The directory, not the file: the CLI replaces the file by a rename, which a watch on it would lose.
    this.watcher = fs.watch(this.dataDir, { persistent: false }, (_event, file) => {
      if (file !== TOKENS_FILE) return;
      if (this.reloadTimer !== null) clearTimeout(this.reloadTimer);
      this.reloadTimer = setTimeout(() => this.reload(), 20);
      this.reloadTimer.unref();
    });
    this.seenTimer = setInterval(() => this.flushSeen(), 10_000);
    this.seenTimer.unref();
  }

  stop(): void {
    this.watcher?.close();
    for (const timer of [this.expiryTimer, this.reloadTimer]) if (timer !== null) clearTimeout(timer);
    if (this.seenTimer !== null) clearInterval(this.seenTimer);
    this.flushSeen();
  }

  private load(): void {
    this.tokens = new Map(Object.entries(readTokens(this.dataDir).tokens));
    this.scheduleExpiry();
  }

  private reload(): void {
    try {
      this.load();
    } catch (e) {
      // A damaged file keeps the tokens as they were: one line for the operator, nobody locked out.
      this.onReloadError(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    const revoked = [...this.tokens]
      .filter(([id, t]) => t.revoked !== undefined && !this.ended.has(id))
      .map(([id]) => id);
    for (const id of revoked) this.ended.add(id);
    if (revoked.length > 0) this.onEnded(revoked, 'revoked');
  }

  private scheduleExpiry(now = Date.now()): void {
    if (this.expiryTimer !== null) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
    let next = Infinity;
    const expired: string[] = [];
    for (const [id, t] of this.tokens) {
      if (t.expires === undefined || t.revoked !== undefined || this.ended.has(id)) continue;
      const at = Date.parse(t.expires);
      if (at <= now) expired.push(id);
      else next = Math.min(next, at);
    }
    for (const id of expired) this.ended.add(id);
    if (expired.length > 0) this.onEnded(expired, 'expired');
    if (next !== Infinity) {
      // setTimeout's limit is 2^31 - 1 ms; a later expiry is looked at again then.
      this.expiryTimer = setTimeout(() => this.scheduleExpiry(), Math.min(next - now + 5, 2 ** 31 - 1));
      this.expiryTimer.unref();
    }
  }

  /** The grant an issued token carries, or why it has none. Only for strings tryTokenId accepts. */
  verify(token: string, now = Date.now()): TokenVerdict {
    const id = tryTokenId(token) ?? '';
    const entry = this.tokens.get(id);
    // The digest is compared in constant time against the entry's, or a stand-in, so an unknown id and
    // a wrong secret take the same time.
    const expected = Buffer.from(entry?.digest ?? '0'.repeat(64), 'hex');
    const matches = crypto.timingSafeEqual(expected, Buffer.from(digestOf(token), 'hex')) && entry !== undefined;
    if (!matches || entry === undefined) return { ok: false, id, reason: 'unknown', message: 'wrong or missing token' };
    if (entry.revoked !== undefined)
      return {
        ok: false,
        id,
        reason: 'revoked',
        message: `token ${id} was revoked on ${entry.revoked}: ask for a new one`,
      };
    const expires = entry.expires !== undefined ? Date.parse(entry.expires) : null;
    if (expires !== null && expires <= now)
      return {
        ok: false,
        id,
        reason: 'expired',
        message: `token ${id} expired on ${entry.expires}: ask for a new one`,
      };
    this.seen.set(id, now);
    this.seenDirty = true;
    return {
      ok: true,
      grant: {
        id,
        account: entry.account,
        expires,
        mayPublish: matcher(entry.publish),
        mayConnect: matcher(entry.connect),
      },
    };
  }

  private flushSeen(): void {
    if (!this.seenDirty) return;
    this.seenDirty = false;
    const record = { ...readSeen(this.dataDir) };
    for (const [id, at] of this.seen) record[id] = new Date(at).toISOString();
    const target = path.join(this.dataDir, SEEN_FILE);
    try {
      fs.writeFileSync(`${target}.tmp`, JSON.stringify(record) + '\n', { mode: 0o600 });
      fs.renameSync(`${target}.tmp`, target);
    } catch {
      // Last use is informational; a full disk must not cost a session.
    }
  }
}
