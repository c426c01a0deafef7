/**
 * How a server becomes a node of a cluster at start: it connects to Redis, takes (or seeds) the
 * cluster's secret, publications, default token, accounts and issued tokens, and starts beating. What it returns
 * replaces what DATA_DIR gives an embedded server.
 */
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../../protocol/errors';
import type { Logger } from '../../runtime/log';
import type { ClusterConfig } from '../config';
import { PublicationStore, readSecret, readStoreFile } from '../store';
import { Keys } from './keys';
import type { LocalState } from './local-cluster';
import { RedisCluster } from './redis-cluster';
import { RedisLink } from './redis-link';
import { RedisBacking, seeded, sharedAccounts, sharedSecret } from './shared-state';
import { TokenMirror } from './shared-tokens';

export interface Joined {
  cluster: RedisCluster;
  store: PublicationStore;
  /** The cluster's token of account `default`, and the DATA_DIR file it was written to (null: --token). */
  token: string;
  tokenFile: string | null;
  /** The cluster's `--accounts` text, if any node gave one. */
  accounts: string | null;
}

export interface JoinOptions {
  dataDir: string;
  token: string | undefined;
  accountsFile: string | undefined;
  state: LocalState;
  log: Logger;
  /** The cluster's accounts changed (another node started with --accounts). */
  onAccounts: (text: string | null) => void;
}

async function readIfThere(file: string): Promise<string | undefined> {
  try {
    return (await fs.readFile(file, 'utf8')).trim() || undefined;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export async function joinCluster(config: ClusterConfig, options: JoinOptions): Promise<Joined> {
  const { dataDir } = options;
  const link = new RedisLink(config.url);
  await link.connect();
  const secret = await sharedSecret(link, await readSecret(dataDir));
  const backing = new RedisBacking(link, secret, await readStoreFile(dataDir));
  const store = await PublicationStore.over(backing);

  const tokenPath = path.join(dataDir, 'token');
  const offer = options.token ?? (await readIfThere(tokenPath)) ?? crypto.randomBytes(24).toString('base64url');
  const token = await seeded(link, Keys.token, offer);
  if (options.token !== undefined && options.token !== token)
    throw new ConfigError(
      "--token differs from the cluster's token of account default (in Redis): drop --token, or give that one",
    );
  // Where an embedded server keeps its token, so that the operator (and `underpass token`) finds it.
  if (options.token === undefined) await fs.writeFile(tokenPath, token + '\n', { mode: 0o600 });

  const localAccounts =
    options.accountsFile !== undefined ? await fs.readFile(options.accountsFile, 'utf8') : undefined;
  const accounts = await sharedAccounts(link, localAccounts);

  const tokens = new TokenMirror(link, dataDir, options.log);
  await tokens.start();

  const cluster = new RedisCluster(link, config, secret, options.state, options.log);
  cluster.on('publication', (stored) => store.apply(stored));
  cluster.on('tokens', () => void tokens.remoteChanged());
  cluster.on('resync', () => {
    void resync(link, backing, store, secret, token, options.log);
    void tokens.remoteChanged();
  });
  cluster.once('stop', () => tokens.stop());
  // Another node started with its own --accounts: they are the cluster's from now on.
  cluster.on('accounts', () =>
    sharedAccounts(link, undefined).then(
      (text) => options.onAccounts(text),
      (e: unknown) => options.log.warn(`cannot read the cluster's accounts: ${String(e)}`),
    ),
  );
  await cluster.start();
  return { cluster, store, token, tokenFile: options.token === undefined ? tokenPath : null, accounts };
}

/**
 * Redis is back: it may have lost everything (restarted without persistence) and this node may have
 * missed events. Seeds again what Redis lacks from what this node has, then takes in what others added.
 */
async function resync(
  link: RedisLink,
  backing: RedisBacking,
  store: PublicationStore,
  secret: Buffer,
  token: string,
  log: Logger,
): Promise<void> {
  try {
    await sharedSecret(link, secret);
    await seeded(link, Keys.token, token);
    await new RedisBacking(
      link,
      secret,
      store.all().map(({ key: _key, ...stored }) => stored),
    ).load();
    for (const stored of await backing.all()) store.apply(stored);
  } catch (e) {
    log.warn(`re-reading the cluster's publications failed: ${String(e)}`);
  }
}
