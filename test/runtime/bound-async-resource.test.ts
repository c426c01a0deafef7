/**
 * dropBoundAsyncResource(): AsyncResource.prototype.bind() without the deprecated accessor, doing
 * what Node's own bind() does otherwise, and Node's HTTP/2 client (its main user here) still working.
 */
import { strict as assert } from 'node:assert';
import { AsyncResource, executionAsyncId } from 'node:async_hooks';
import { once } from 'node:events';
import http2 from 'node:http2';
import type net from 'node:net';
import { bindAddsAsyncResource, dropBoundAsyncResource } from '../../runtime/bound-async-resource';

describe('dropBoundAsyncResource', function () {
  before(function () {
    dropBoundAsyncResource();
  });

  it('leaves out the asyncResource accessor', function () {
    assert.equal(bindAddsAsyncResource(), false);
    const bound = new AsyncResource('test').bind(() => 1);
    assert.equal(Object.prototype.hasOwnProperty.call(bound, 'asyncResource'), false);
  });

  it("runs the function in the resource's async scope, with the caller's this and arguments", function () {
    const resource = new AsyncResource('test');
    const seen: Array<{ id: number; self: unknown; args: unknown[] }> = [];
    const bound = resource.bind(function (this: unknown, ...args: unknown[]) {
      seen.push({ id: executionAsyncId(), self: this, args });
      return args.length;
    });
    const self = { name: 'caller' };
    assert.equal(bound.call(self, 1, 'two'), 2);
    assert.deepEqual(seen, [{ id: resource.asyncId(), self, args: [1, 'two'] }]);
    assert.notEqual(executionAsyncId(), resource.asyncId());
  });

  it('binds this when given one, and keeps the length', function () {
    const self = { name: 'bound' };
    const bound = AsyncResource.bind(
      function (this: unknown, a: number, b: number) {
        return [this, a + b];
      },
      'test',
      self,
    );
    assert.deepEqual(bound.call({ name: 'other' }, 2, 3), [self, 5]);
    assert.equal(bound.length, 2);
    assert.throws(() => new AsyncResource('test').bind(42 as unknown as () => void), TypeError);
  });

  it("leaves Node's HTTP/2 requests working", async function () {
    const server = http2.createServer();
    server.on('stream', (stream) => stream.respond({ ':status': 204 }, { endStream: true }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const session = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    try {
      const statuses = await Promise.all(
        [1, 2, 3].map(async () => {
          const request = session.request({ ':path': '/' });
          const [headers] = (await once(request, 'response')) as [http2.IncomingHttpHeaders];
          request.resume();
          await once(request, 'close');
          return headers[':status'];
        }),
      );
      assert.deepEqual(statuses, [204, 204, 204]);
    } finally {
      session.close();
      server.close();
    }
  });
});
