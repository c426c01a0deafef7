import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  encodeIpcMessage,
  formatIPv4,
  inPseudoNet,
  IpcEvent,
  tryDecodeIpcMessage,
  tryParseIPv4,
  trySockaddrIPv4,
  type ClaimRequest,
} from '../../protocol/ipc';

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
});
