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
 *
 * A cluster node keeps the same store in Redis instead (server/cluster/shared-state.ts), behind
 * `StoreBacking`: the secret and the publications are then the cluster's, so a publication keeps its
 * name and key on whichever node its proxy lands.
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

/** A publication as stored: everything but its key, which derives from the secret. */
export type StoredPublication = Omit<Publication, 'key'>;
type Stored = StoredPublication;

/** Where the publications and the secret live: DATA_DIR (`FileBacking`), or a cluster's Redis. */
export interface StoreBacking {
  readonly secret: Buffer;
  load(): Promise<StoredPublication[]>;
  /** Keeps `changed`; `all` is the whole state with it. */
  save(changed: StoredPublication, all: StoredPublication[]): Promise<void>;
}

const SECRET_FORM = /^[0-9a-f]{64}$/;

/** DATA_DIR/secret if it exists (a server joining a cluster offers it as the cluster's first secret). */
export async function readSecret(dataDir: string): Promise<Buffer | null> {
  const file = path.join(dataDir, 'secret');
  try {
    const text = (await fs.readFile(file, 'utf8')).trim();
    if (SECRET_FORM.test(text)) return Buffer.from(text, 'hex');
    throw new ConfigError(`${file} is damaged: restore it from a backup (every service key derives from it)`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    return null;
  }
}

/** The server's secret, created on first start. */
async function loadOrCreateSecret(dataDir: string): Promise<Buffer> {
  const existing = await readSecret(dataDir);
  if (existing !== null) return existing;
  const secret = crypto.randomBytes(32);
  await fs.writeFile(path.join(dataDir, 'secret'), secret.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
  return secret;
}

/** Reads DATA_DIR/publications.json, if there is one. */
export async function readStoreFile(dataDir: string): Promise<StoredPublication[]> {
  const file = path.join(dataDir, 'publications.json');
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    return [];
  }
  try {
    return StoreFile.parse(JSON.parse(text)).publications;
  } catch {
    throw new ConfigError(`${file} is not a valid publication store: restore it from a backup or move it away`);
  }
}

/** The embedded server's backing: DATA_DIR/secret and DATA_DIR/publications.json. */
class FileBacking implements StoreBacking {
  private writing: Promise<void> = Promise.resolve();
  private readonly file: string;

  constructor(
    private readonly dataDir: string,
    readonly secret: Buffer,
  ) {
    this.file = path.join(dataDir, 'publications.json');
  }

  load(): Promise<StoredPublication[]> {
    return readStoreFile(this.dataDir);
  }

  save(_changed: StoredPublication, all: StoredPublication[]): Promise<void> {
    // Serialise writes; each one writes the whole, current state.
    this.writing = this.writing.then(async () => {
      const tmp = `${this.file}.${process.pid}.tmp`;
      const body = JSON.stringify({ version: 1, publications: all }, null, 2) + '\n';
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

export class PublicationStore {
  private readonly byId = new Map<string, Publication>();

  private constructor(private readonly backing: StoreBacking) {}

  static async open(dataDir: string): Promise<PublicationStore> {
    return PublicationStore.over(new FileBacking(dataDir, await loadOrCreateSecret(dataDir)));
  }

  /** The store kept in `backing` (a cluster's Redis). */
  static async over(backing: StoreBacking): Promise<PublicationStore> {
    const store = new PublicationStore(backing);
    for (const p of await backing.load()) store.apply(p);
    return store;
  }

  /** Takes in a publication another node stored (the cluster's events). */
  apply(stored: StoredPublication): void {
    this.byId.set(publicationId(stored.account, stored.name), this.withKey(stored));
  }

  private withKey(stored: Stored): Publication {
    const key = crypto
      .createHmac('sha256', this.backing.secret)
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
    const id = publicationId(account, name);
    this.byId.set(id, publication);
    const { key: _key, ...stored } = publication;
    try {
      await this.backing.save(
        stored,
        this.all().map(({ key: _k, ...rest }) => rest),
      );
    } catch (e) {
      // A backing that cannot keep it (a cluster's Redis away) leaves the store as it was.
      if (this.byId.get(id) === publication) {
        if (existing) this.byId.set(id, existing);
        else this.byId.delete(id);
      }
      throw e;
    }
    return publication;
  }
}
