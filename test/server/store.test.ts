import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { UnderpassError } from '../../protocol/errors';
import { PublicationStore } from '../../server/store';
import { tmpDir } from '../harness';

describe('server/store: durable publications', function () {
  let dir: string;
  beforeEach(function () {
    dir = tmpDir('store');
  });
  afterEach(function () {
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('keeps name, port and service key across a reopen, and writes no key to disk', async function () {
    const store = await PublicationStore.open(dir);
    const a = await store.publish('default', 'redis', 6379);
    const again = await store.publish('default', 'redis', 6379);
    assert.equal(again.key, a.key);
    const reopened = await PublicationStore.open(dir);
    assert.deepEqual(reopened.get('default', 'redis'), a);
    assert.ok(!fs.readFileSync(path.join(dir, 'publications.json'), 'utf8').includes(a.key));
    assert.equal(fs.statSync(path.join(dir, 'secret')).mode & 0o777, 0o600);
  });

  it('gives different publications and different servers different keys', async function () {
    const store = await PublicationStore.open(dir);
    const a = await store.publish('default', 'a', 1);
    const b = await store.publish('default', 'b', 1);
    assert.notEqual(a.key, b.key);
    const other = tmpDir('store2');
    const c = await (await PublicationStore.open(other)).publish('default', 'a', 1);
    assert.notEqual(c.key, a.key);
    fs.rmSync(other, { recursive: true, force: true });
  });

  it('a new port keeps the key', async function () {
    const store = await PublicationStore.open(dir);
    const a = await store.publish('default', 'web', 80);
    const b = await store.publish('default', 'web', 8080);
    assert.equal(b.key, a.key);
    assert.equal((await PublicationStore.open(dir)).get('default', 'web')!.port, 8080);
  });

  it('says what to do with a damaged store instead of starting empty', async function () {
    await (await PublicationStore.open(dir)).publish('default', 'x', 1);
    fs.writeFileSync(path.join(dir, 'publications.json'), '{"version":1,"publications":[{"na');
    await assert.rejects(
      PublicationStore.open(dir),
      (e: unknown) => e instanceof UnderpassError && /not a valid publication store/.test(e.message),
    );
  });

  it('never leaves a torn file: concurrent publishes all land', async function () {
    const store = await PublicationStore.open(dir);
    await Promise.all(Array.from({ length: 50 }, (_, i) => store.publish('default', `svc${i}`, 1000 + i)));
    const reopened = await PublicationStore.open(dir);
    assert.equal(reopened.all().length, 50);
    assert.deepEqual(
      fs.readdirSync(dir).filter((f) => f.endsWith('.tmp')),
      [],
    );
  });
});
