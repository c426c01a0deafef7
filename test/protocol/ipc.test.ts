import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  agentIpcTable,
  encodeIpcMessage,
  formatIPv4,
  inPseudoNet,
  IpcEvent,
  IpcMessages,
  tryDecodeIpcMessage,
  tryParseIpcReply,
  tryParseIpcRequest,
  tryParseIPv4,
  trySockaddrIPv4,
  type ClaimRequest,
  type IpcKind,
  type IpcRequestKind,
} from '../../protocol/ipc';
import { fitsShape, type JsonShape } from '../../protocol/json-shape';

describe('protocol/ipc: hook ↔ redirector messages', function () {
  it("speaks node-ipc's wire form: JSON then a form feed", function () {
    assert.equal(encodeIpcMessage('resolve', { name: 'x' }), '{"type":"resolve","data":{"name":"x"}}\f');
    assert.deepEqual(tryDecodeIpcMessage('{"type":"reply","data":{"ok":true}}'), { type: 'reply', data: { ok: true } });
    const claim: ClaimRequest = { address: '127.77.0.1', port: 6379, localAddress: '127.0.0.1', localPort: 40000 };
    assert.equal(
      encodeIpcMessage(IpcEvent.claim, claim),
      '{"type":"claim","data":{"address":"127.77.0.1","port":6379,"localAddress":"127.0.0.1","localPort":40000}}\f',
    );
  });

  it('never lets a form feed inside data end a message early', function () {
    fc.assert(
      fc.property(fc.string(), (s) => {
        const wire = encodeIpcMessage('resolve', { name: s });
        assert.equal(wire.indexOf('\f'), wire.length - 1);
        assert.deepEqual(tryDecodeIpcMessage(wire.slice(0, -1)), { type: 'resolve', data: { name: s } });
      }),
    );
  });

  it('answers null, not an exception, for malformed messages', function () {
    for (const bad of ['', 'nope', '[]', '{"data":1}', '{"type":3}', 'null'])
      assert.equal(tryDecodeIpcMessage(bad), null, bad);
  });

  it('parses and formats IPv4 and checks the pseudo range', function () {
    assert.equal(tryParseIPv4('127.77.0.1'), 0x7f4d0001);
    assert.equal(formatIPv4(0x7f4d0001), '127.77.0.1');
    for (const bad of ['1.2.3', '1.2.3.256', 'a.b.c.d', '1..2.3', '01234.1.1.1'])
      assert.equal(tryParseIPv4(bad), null, bad);
    assert.ok(inPseudoNet(0x7f4d1234, 0x7f4d0000, 16));
    assert.ok(!inPseudoNet(0x7f000001, 0x7f4d0000, 16));
    fc.assert(fc.property(fc.nat({ max: 0xffffffff }), (n) => tryParseIPv4(formatIPv4(n)) === n));
  });

  it("reads a socket's IPv4 end from getsockname()'s bytes, a v4-mapped AF_INET6 one as plain IPv4", function () {
    // sockaddr_in 127.0.0.1:40000 (0x9C40); family in host order, read apart by the agent.
    const v4 = Uint8Array.from([0x02, 0x00, 0x9c, 0x40, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(trySockaddrIPv4(2, v4), { address: '127.0.0.1', port: 40000 });
    // sockaddr_in6 [::ffff:127.0.0.1]:40000: family, port, flowinfo, 16 address bytes, scope id.
    const mapped = Uint8Array.from([
      0x0a, 0x00, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1, 0, 0, 0, 0,
    ]);
    assert.deepEqual(trySockaddrIPv4(10, mapped), { address: '127.0.0.1', port: 40000 });
    const loopback6 = Uint8Array.from([
      0x0a, 0x00, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0,
    ]);
    assert.equal(trySockaddrIPv4(10, loopback6), null, '::1 is not IPv4');
    assert.equal(trySockaddrIPv4(10, mapped.slice(0, 20)), null, 'truncated');
    assert.equal(trySockaddrIPv4(1, v4), null, 'AF_UNIX');
  });

  describe('the message table', function () {
    const requests: Array<[IpcKind, unknown, boolean]> = [
      ['hello', { v: 1, pid: 42 }, true],
      ['hello', { v: 1 }, false],
      ['hello', { v: 1.5, pid: 42 }, false],
      ['resolve', { name: 'redis.default.underpass.internal' }, true],
      ['resolve', { name: '' }, false],
      ['resolve', { name: 42 }, false],
      ['resolve', { name: 'x'.repeat(1025) }, false],
      ['connect', { address: '127.77.0.1', port: 6379 }, true],
      ['connect', { address: '127.77.0.1', port: 0 }, false],
      ['connect', { address: '127.77.0.1', port: 65536 }, false],
      ['connect', { address: '1.2.3', port: 80 }, false],
      ['reverse', { address: '127.77.0.1' }, true],
      ['reverse', { address: '127.77.0.1.12345' }, false],
      ['claim', { address: '127.77.0.1', port: 6379, localAddress: '127.0.0.1', localPort: 40000 }, true],
      ['claim', { address: 'localhost', port: 6379, localAddress: '127.0.0.1', localPort: 40000 }, false],
      ['claim', { address: '127.77.0.1', port: 6379, localAddress: '127.0.0.1' }, false],
      ['resolve', null, false],
      ['resolve', 'redis', false],
    ];
    for (const [kind, data, fits] of requests) {
      it(`${fits ? 'takes' : 'refuses'} the ${kind} request ${JSON.stringify(data)?.slice(0, 60)}`, function () {
        assert.equal(tryParseIpcRequest(kind, data) !== null, fits);
      });
    }

    const replies: Array<[IpcRequestKind, unknown, boolean]> = [
      [
        'hello',
        {
          ok: true,
          v: 1,
          zones: ['underpass.internal'],
          pseudoNet: { base: '127.77.0.0', prefix: 16 },
          features: ['claim'],
        },
        true,
      ],
      ['hello', { ok: true, v: 1, zones: ['underpass.internal'], pseudoNet: { base: '127.77.0.0', prefix: 16 } }, true],
      [
        'hello',
        {
          ok: true,
          v: 1,
          zones: ['underpass.internal'],
          pseudoNet: { base: '127.77.0.0', prefix: 16 },
          features: ['claim', 'later'],
        },
        true,
      ],
      ['hello', { ok: true, v: 1, zones: 'underpass.internal', pseudoNet: { base: '127.77.0.0', prefix: 16 } }, false],
      ['resolve', { ok: true, name: 'redis.default.underpass.internal', address: '127.77.0.1' }, true],
      ['resolve', { ok: true, name: 'redis.default.underpass.internal' }, false],
      ['resolve', { ok: false, code: 'NOT_FOUND', message: 'no such publication' }, true],
      ['resolve', { ok: false, code: 'NOT_FOUND' }, false],
      ['connect', { ok: false, code: 'LATER', message: 'a code this side does not know' }, false],
      ['connect', { ok: true }, true],
      ['connect', { ok: true, moved: { port: 5432, listenPort: 40123 } }, true],
      ['connect', { ok: true, moved: { port: 5432 } }, false],
      ['connect', { ok: true, moved: { port: 5432, listenPort: 70000 } }, false],
      ['connect', { ok: 'yes' }, false],
      ['connect', {}, false],
      ['reverse', { ok: true, name: 'redis.default.underpass.internal' }, true],
      ['reverse', { ok: true, name: 'pg.default.underpass.internal', moved: { port: 5432, listenPort: 40123 } }, true],
      [
        'resolve',
        {
          ok: true,
          name: 'pg.default.underpass.internal',
          address: '127.77.0.3',
          moved: { port: 5432, listenPort: 40123 },
        },
        true,
      ],
      ['resolve', { ok: true, name: 'pg.default.underpass.internal', address: '127.77.0.3', moved: 5432 }, false],
      ['reverse', { ok: true, name: 7 }, false],
      // Forwarding mode for hooked apps (issue 15).
      [
        'hello',
        {
          ok: true,
          v: 1,
          zones: ['underpass.internal'],
          pseudoNet: { base: '127.77.0.0', prefix: 16 },
          forward: {
            names: [{ name: 'corp.example', suffix: true }],
            nets: [
              { address: '10.0.0.0', prefix: 8, ports: { low: 80, high: 443 } },
              { address: '192.0.2.7', prefix: 32 },
            ],
          },
        },
        true,
      ],
      [
        'hello',
        {
          ok: true,
          v: 1,
          zones: ['underpass.internal'],
          pseudoNet: { base: '127.77.0.0', prefix: 16 },
          forward: { names: [], nets: [{ address: '10.0.0.0', prefix: 33 }] },
        },
        false,
      ],
      ['resolve', { ok: true, name: 'intranet.corp.example', address: '127.77.0.4', forward: true }, true],
      ['resolve', { ok: true, name: 'intranet.corp.example', address: '127.77.0.4', forward: 'yes' }, false],
      ['reverse', { ok: true, name: 'intranet.corp.example', forward: true }, true],
      ['connect', { ok: true, via: '127.77.0.5' }, true],
      ['connect', { ok: true, via: 5 }, false],
      ['connect', { ok: false, code: 'REFUSED', message: 'not allowed', fix: 'ask its operator' }, true],
      ['connect', { ok: false, code: 'REFUSED', message: 'not allowed', fix: 7 }, false],
    ];
    const table = agentIpcTable();
    for (const [kind, data, fits] of replies) {
      it(`${fits ? 'takes' : 'refuses'} the ${kind} reply ${JSON.stringify(data).slice(0, 60)}, in zod and in the agent`, function () {
        assert.equal(tryParseIpcReply(kind, data) !== null, fits, "the redirector's zod schema");
        // Widened: each kind's shape describes its own reply type, and a union of them fits no single one.
        const shape: JsonShape<unknown> = table.replies[kind];
        assert.equal(fitsShape(shape, data), fits, "the agent's check of the JSON Schema");
      });
    }

    it('judges fuzzed replies the same in zod and in the agent', function () {
      const kinds: IpcRequestKind[] = ['hello', 'resolve', 'connect', 'reverse'];
      const reply = fc.oneof(
        fc.record(
          { ok: fc.boolean(), name: fc.oneof(fc.string(), fc.integer()), address: fc.string() },
          { requiredKeys: [] },
        ),
        fc.record(
          { ok: fc.constant(false), code: fc.constantFrom('NOT_FOUND', 'REFUSED', 'LATER'), message: fc.string() },
          { requiredKeys: ['ok'] },
        ),
        fc.record(
          {
            ok: fc.constant(true),
            v: fc.oneof(fc.integer(), fc.double()),
            zones: fc.array(fc.string()),
            pseudoNet: fc.record({ base: fc.string(), prefix: fc.integer() }, { requiredKeys: [] }),
            features: fc.array(fc.oneof(fc.string(), fc.integer())),
          },
          { requiredKeys: ['ok', 'zones'] },
        ),
        fc.anything(),
      );
      fc.assert(
        fc.property(fc.constantFrom(...kinds), reply, (kind, data) => {
          const shape: JsonShape<unknown> = table.replies[kind];
          assert.equal(fitsShape(shape, data), tryParseIpcReply(kind, data) !== null);
        }),
        { numRuns: 2000 },
      );
    });

    it("names each request by the event node-ipc carries it as, none of them node-ipc's own", function () {
      const reserved = new Set(['connect', 'data', 'error', 'close', 'start', 'socket.disconnected']);
      for (const kind of Object.keys(IpcMessages) as IpcKind[]) {
        assert.equal(IpcEvent[kind], IpcMessages[kind].event);
        assert.ok(!reserved.has(IpcMessages[kind].event), kind);
      }
      assert.equal(IpcMessages.connect.event, 'open-tunnel');
      assert.equal(IpcMessages.claim.reply, null, 'a claim is a notification');
      assert.deepEqual(table.events, IpcEvent);
    });
  });
});
