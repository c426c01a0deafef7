/**
 * Issued tokens (`underpass token create|revoke`, DATA_DIR/tokens.json) across a cluster: each node
 * mirrors its file into Redis when it changes there, and writes the cluster's into its own DATA_DIR when
 * another node's changed, so that a token issued or revoked on one node's data dir works, or stops
 * working, on every node. The server's TokenStore goes on reading the file as it does without a
 * cluster: a revocation that arrives this way ends the token's sessions on this node too.
 *
 * The whole file is the unit, and the last node to write it wins: two nodes issuing tokens at the same
 * moment can lose one of them (PROTOCOL.md §1.7); issuing on one node's data dir avoids that.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../../runtime/log';
import { TOKENS_FILE } from '../tokens';
import { Keys } from './keys';
import type { RedisLink } from './redis-link';

const PUT = `redis.call('SET', KEYS[1], ARGV[1]) redis.call('PUBLISH', KEYS[2], '{"type":"tokens"}')`;
const GET = `return redis.call('GET', KEYS[1])`;

export class TokenMirror {
  private readonly file: string;
  /** The text both sides have now: a change to anything else is news to pass on. */
  private known: string | null = null;
  /** A local change Redis did not take (it was away): offered again when it is back. */
  private unshared = false;
  private watcher: fs.FSWatcher | null = null;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly link: RedisLink,
    private readonly dataDir: string,
    private readonly log: Logger,
  ) {
    this.file = path.join(dataDir, TOKENS_FILE);
  }

  /** Takes the cluster's tokens (or offers this node's), then follows the file. Before TokenStore starts. */
  async start(): Promise<void> {
    const local = this.readLocal();
    const remote = await this.remote();
    if (remote !== null) this.writeLocal(remote);
    else if (local !== null) await this.put(local);
    this.known = remote ?? local;
    // The directory, not the file: `underpass token` replaces the file by a rename.
    this.watcher = fs.watch(this.dataDir, { persistent: false }, (_event, name) => {
      if (name !== TOKENS_FILE) return;
      if (this.timer !== null) clearTimeout(this.timer);
      this.timer = setTimeout(() => void this.localChanged(), 20);
      this.timer.unref();
    });
  }

  stop(): void {
    this.watcher?.close();
    if (this.timer !== null) clearTimeout(this.timer);
  }

  /** Another node changed the tokens (the events channel), or Redis is back and it may have. */
  async remoteChanged(): Promise<void> {
    try {
      if (this.unshared && this.known !== null) {
        await this.put(this.known);
        this.unshared = false;
        return;
      }
      const remote = await this.remote();
      if (remote === null) {
        // A Redis that lost its data: this node's tokens become the cluster's again.
        if (this.known !== null) await this.put(this.known);
        return;
      }
      if (remote === this.known) return;
      this.known = remote;
      this.writeLocal(remote);
      this.log.info("took the cluster's issued tokens", { file: this.file });
    } catch (e) {
      this.log.warn(`cannot read the cluster's issued tokens: ${String(e)}`);
    }
  }

  private async localChanged(): Promise<void> {
    const local = this.readLocal();
    if (local === null || local === this.known) return;
    this.known = local;
    try {
      await this.put(local);
      this.unshared = false;
    } catch (e) {
      this.unshared = true;
      // Offered again when Redis is back (remoteChanged sees the difference the other way round).
      this.log.warn(`cannot share the issued tokens now: ${String(e)}`);
    }
  }

  private async remote(): Promise<string | null> {
    const reply = await this.link.eval(GET, [Keys.tokens], []);
    return typeof reply === 'string' ? reply : null;
  }

  private async put(text: string): Promise<void> {
    await this.link.eval(PUT, [Keys.tokens, Keys.events], [text]);
  }

  private readLocal(): string | null {
    try {
      return fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  private writeLocal(text: string): void {
    const temporary = `${this.file}.${process.pid}.cluster.tmp`;
    fs.writeFileSync(temporary, text, { mode: 0o600 });
    fs.renameSync(temporary, this.file);
  }
}
