import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeIpcMessage, formatIPv4, inPseudoNet, tryDecodeIpcMessage, tryParseIPv4 } from '../../protocol/ipc';

describe('protocol/ipc: hook ↔ redirector messages', function () {
  it("speaks node-ipc's wire form: JSON then a form feed", function () {
    assert.equal(encodeIpcMessage('resolve', { name: 'x' }), '{"type":"resolve","data":{"name":"x"}}\f');
    assert.deepEqual(tryDecodeIpcMessage('{"type":"reply","data":{"ok":true}}'), { type: 'reply', data: { ok: true } });
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
    for (const bad of ['', 'nope', '[]', '{"data":1}', '{"type":3}', 'null']) assert.equal(tryDecodeIpcMessage(bad), null, bad);
  });

  it('parses and formats IPv4 and checks the pseudo range', function () {
    assert.equal(tryParseIPv4('127.77.0.1'), 0x7f4d0001);
    assert.equal(formatIPv4(0x7f4d0001), '127.77.0.1');
    for (const bad of ['1.2.3', '1.2.3.256', 'a.b.c.d', '1..2.3', '01234.1.1.1']) assert.equal(tryParseIPv4(bad), null, bad);
    assert.ok(inPseudoNet(0x7f4d1234, 0x7f4d0000, 16));
    assert.ok(!inPseudoNet(0x7f000001, 0x7f4d0000, 16));
    fc.assert(fc.property(fc.nat({ max: 0xffffffff }), (n) => tryParseIPv4(formatIPv4(n)) === n));
  });
});
