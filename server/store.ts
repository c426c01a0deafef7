/**
 * Publications, kept durably in `DATA_DIR/publications.json`, so that a proxy that reconnects and a server
 * that restarts keep every pseudo name and service key (a key is issued once, and users keep it).
 *
 * Service keys are not stored at all: each is an HMAC of the publication's identity under the server's
 * secret (`DATA_DIR/secret`, mode 0600), so the same name always gets the same key back, and a leaked
 * publication store gives no key away.
 *
 * Writes are atomic: the new state goes to a temporary file, is fsync'd, and replaces the old one with
 * rename(2), so a crash mid-write leaves either the old store or the new one, never a torn file.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../protocol/errors';
import { publicationId } from '../protocol/names';

export interface Publication {
  account: string;
  name: string;
  /** Port of the published target: clients reach the publication at PSEUDO_NAME:port. */
  port: number;
  /** The secret service key: presenting it grants access to the publication. */
  key: string;
  createdAt: string;
}

const StoreFile = z.object({
  version: z.literal(1),
  publications: z.array(
    z.object({ account: z.string(), name: z.string(), port: z.number().int(), createdAt: z.string() }).strict(),
  ),
});

type Stored = Omit<Publication, 'key'>;

/** The server's secret, created on first start. */
async function loadOrCreateSecret(dataDir: string): Promise<Buffer> {
  const file = path.join(dataDir, 'secret');
  try {
    const text = (await fs.readFile(file, 'utf8')).trim();
    if (/^[0-9a-f]{64}$/.test(text)) return Buffer.from(text, 'hex');
    throw new ConfigError(`${file} is damaged: restore it from a backup (every service key derives from it)`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  const secret = crypto.randomBytes(32);
  await fs.writeFile(file, secret.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}

export class PublicationStore {
  private readonly byId = new Map<string, Publication>();
  private writing: Promise<void> = Promise.resolve();

  private constructor(
    private readonly file: string,
    private readonly secret: Buffer,
  ) {}

  static async open(dataDir: string): Promise<PublicationStore> {
    const store = new PublicationStore(path.join(dataDir, 'publications.json'), await loadOrCreateSecret(dataDir));
    let text: string | null = null;
    try {
      text = await fs.readFile(store.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (text !== null) {
      let parsed: z.infer<typeof StoreFile>;
      try {
        parsed = StoreFile.parse(JSON.parse(text));
      } catch {
        throw new ConfigError(
          `${store.file} is not a valid publication store: restore it from a backup or move it away`,
        );
      }
      for (const p of parsed.publications) store.byId.set(publicationId(p.account, p.name), store.withKey(p));
    }
    return store;
  }

  private withKey(stored: Stored): Publication {
    const key = crypto
      .createHmac('sha256', this.secret)
      .update(`service-key/v1/${stored.account}/${stored.name}`)
      .digest()
      .subarray(0, 24)
      .toString('base64url');
    return { ...stored, key };
  }

  get(account: string, name: string): Publication | undefined {
    return this.byId.get(publicationId(account, name));
  }

  all(): Publication[] {
    return [...this.byId.values()];
  }

  /**
   * Returns the publication for (account, name), creating it with a fresh service key on first publish.
   * A republish keeps name and key; a new port replaces the old one.
   */
  async publish(account: string, name: string, port: number): Promise<Publication> {
    const existing = this.byId.get(publicationId(account, name));
    if (existing && existing.port === port) return existing;
    const publication: Publication = existing
      ? { ...existing, port }
      : this.withKey({ account, name, port, createdAt: new Date().toISOString() });
    this.byId.set(publicationId(account, name), publication);
    await this.save();
    return publication;
  }

  private save(): Promise<void> {
    // Serialise writes; each one writes the whole, current state.
    this.writing = this.writing.then(async () => {
      const tmp = `${this.file}.${process.pid}.tmp`;
      const publications: Stored[] = this.all().map(({ key: _key, ...stored }) => stored);
      const body = JSON.stringify({ version: 1, publications }, null, 2) + '\n';
      const handle = await fs.open(tmp, 'w', 0o600);
      try {
        await handle.writeFile(body);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(tmp, this.file);
    });
    return this.writing;
  }
}
