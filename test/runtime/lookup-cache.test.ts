import assert from 'node:assert/strict';
import type dns from 'node:dns';
import net from 'node:net';
import { dialTarget } from '../../runtime/dial';
import { LOOKUP_TTL_MS, LookupCache, MAX_CACHED_NAMES } from '../../runtime/lookup-cache';

type Answer = { error: NodeJS.ErrnoException | null; address: string | dns.LookupAddress[]; family?: number };

/** A lookup that answers from `answers` and counts the names it was asked. */
function countingLookup(answer: (name: string) => Answer): { lookup: net.LookupFunction; asked: string[] } {
  const asked: string[] = [];
  const lookup: net.LookupFunction = (hostname, _options, callback) => {
    asked.push(hostname);
    const a = answer(hostname);
    setImmediate(() => callback(a.error, a.address, a.family));
  };
  return { lookup, asked };
}

function ask(
  cache: LookupCache,
  name: string,
  options: dns.LookupOptions = {},
): Promise<{ error: NodeJS.ErrnoException | null; address: unknown; family?: number }> {
  return new Promise((resolve) => {
    let sync = true;
    cache.lookup(name, options, (error, address, family) => {
      assert.equal(sync, false, 'a lookup answers asynchronously');
      resolve({ error, address, family });
    });
    sync = false;
  });
}

describe('runtime: target name lookups kept a few seconds', function () {
  it('answers a name again from the cache within its lifetime, and asks again after it', async function () {
    let now = 0;
    const { lookup, asked } = countingLookup(() => ({ error: null, address: '127.0.0.1', family: 4 }));
    const cache = new LookupCache(lookup, LOOKUP_TTL_MS, () => now);
    assert.deepEqual(await ask(cache, 'localhost'), { error: null, address: '127.0.0.1', family: 4 });
    now += LOOKUP_TTL_MS - 1;
    assert.deepEqual(await ask(cache, 'localhost'), { error: null, address: '127.0.0.1', family: 4 });
    assert.deepEqual(asked, ['localhost']);
    now += 1;
    await ask(cache, 'localhost');
    assert.deepEqual(asked, ['localhost', 'localhost']);
  });

  it('keeps each set of options apart, and hands out a copy of a list of addresses', async function () {
    const all: dns.LookupAddress[] = [
      { address: '::1', family: 6 },
      { address: '127.0.0.1', family: 4 },
    ];
    const { lookup, asked } = countingLookup(() => ({ error: null, address: all }));
    const cache = new LookupCache(lookup);
    const first = await ask(cache, 'localhost', { all: true });
    (first.address as dns.LookupAddress[]).pop();
    assert.deepEqual((await ask(cache, 'localhost', { all: true })).address, all);
    await ask(cache, 'localhost', { all: true, family: 4 });
    assert.deepEqual(asked, ['localhost', 'localhost']);
  });

  it('keeps no failure: a name that starts resolving works at once', async function () {
    let resolves = false;
    const { lookup, asked } = countingLookup(() =>
      resolves
        ? { error: null, address: '127.0.0.1', family: 4 }
        : { error: Object.assign(new Error('ENOTFOUND'), { code: 'ENOTFOUND' }), address: '' },
    );
    const cache = new LookupCache(lookup);
    assert.equal((await ask(cache, 'later.example')).error?.code, 'ENOTFOUND');
    resolves = true;
    assert.equal((await ask(cache, 'later.example')).address, '127.0.0.1');
    assert.equal(asked.length, 2);
  });

  it(`holds at most ${MAX_CACHED_NAMES} names, the oldest going first`, async function () {
    const { lookup, asked } = countingLookup(() => ({ error: null, address: '127.0.0.1', family: 4 }));
    const cache = new LookupCache(lookup);
    for (let i = 0; i <= MAX_CACHED_NAMES; i++) await ask(cache, `n${i}.example`);
    await ask(cache, `n${MAX_CACHED_NAMES}.example`);
    assert.equal(asked.length, MAX_CACHED_NAMES + 1);
    await ask(cache, 'n0.example');
    assert.equal(asked.length, MAX_CACHED_NAMES + 2);
  });

  it('dials a real server by name through it, twice, with one lookup', async function () {
    const server = net.createServer((s) => s.end('hi')).listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    const port = (server.address() as net.AddressInfo).port;
    const { lookup, asked } = countingLookup(() => ({ error: null, address: [{ address: '127.0.0.1', family: 4 }] }));
    const cache = new LookupCache(lookup);
    try {
      for (let i = 0; i < 2; i++) {
        const got = await new Promise<string>((resolve, reject) =>
          dialTarget(
            'target.example',
            port,
            5_000,
            {
              connected: (socket) => {
                let data = '';
                socket.on('data', (d: Buffer) => (data += d.toString()));
                socket.on('end', () => {
                  socket.destroy();
                  resolve(data);
                });
              },
              failed: (reason) => reject(new Error(reason)),
            },
            cache.lookup,
          ),
        );
        assert.equal(got, 'hi');
      }
      assert.deepEqual(asked, ['target.example']);
    } finally {
      server.close();
    }
  });
});
