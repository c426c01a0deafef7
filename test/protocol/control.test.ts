import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  ControlDecoder,
  encodeControl,
  MAX_CONTROL_LINE,
  EndpointMessage,
  ServerMessage,
} from '../../protocol/control';
import { ProtocolError } from '../../protocol/errors';

/** Splits `bytes` at the given cut points and feeds the pieces one by one. */
function feed<T>(decoder: ControlDecoder<T>, bytes: Buffer, cuts: number[]): T[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: T[] = [];
  let last = 0;
  for (const p of [...points, bytes.length]) {
    out.push(...decoder.push(bytes.subarray(last, p)));
    last = p;
  }
  return out;
}

describe('protocol/control: the control stream codec', function () {
  it('decodes the literal test vectors of PROTOCOL.md', function () {
    const vector = Buffer.from(
      '7b2274797065223a227075626c697368222c226e616d65223a227265646973222c22706f7274223a363337397d0a', // {"type":"publish","name":"redis","port":6379}\n
      'hex',
    );
    assert.deepEqual(new ControlDecoder(EndpointMessage).push(vector), [
      { type: 'publish', name: 'redis', port: 6379 },
    ]);
    const tunnel = Buffer.from('{"type":"tunnel","id":"abc","key":"0123456789abcdef0123"}\n');
    assert.deepEqual(new ControlDecoder(ServerMessage).push(tunnel), [
      { type: 'tunnel', id: 'abc', key: '0123456789abcdef0123' },
    ]);
    // {"type":"tunnel-ready","id":"abc"}\n
    const ready = Buffer.from('7b2274797065223a2274756e6e656c2d7265616479222c226964223a22616263227d0a', 'hex');
    assert.deepEqual(new ControlDecoder(EndpointMessage).push(ready), [{ type: 'tunnel-ready', id: 'abc' }]);
    // Only a proxy sends it: a server's line with it is malformed.
    assert.throws(() => new ControlDecoder(ServerMessage).push(ready), /malformed/);
    const ack = Buffer.from('7b2274797065223a2261636b222c226964223a227431222c226e223a357d0a', 'hex'); // {"type":"ack","id":"t1","n":5}\n
    assert.deepEqual(new ControlDecoder(EndpointMessage).push(ack), [{ type: 'ack', id: 't1', n: 5 }]);
    assert.deepEqual(new ControlDecoder(ServerMessage).push(ack), [{ type: 'ack', id: 't1', n: 5 }]);
    assert.throws(
      () => new ControlDecoder(ServerMessage).push(Buffer.from('{"type":"ack","id":"t1","n":-1}\n')),
      /malformed/,
    );
  });

  it('encodes what it decodes, at any split of the bytes', function () {
    const message = fc.oneof(
      fc.record({
        type: fc.constant('publish' as const),
        name: fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/),
        port: fc.integer({ min: 1, max: 65535 }),
      }),
      fc.record({
        type: fc.constant('tunnel-failed' as const),
        id: fc.string({ minLength: 1, maxLength: 64 }),
        code: fc.constantFrom('UP_ERR_TARGET_REFUSED', 'UP_ERR_NOT_FOUND'),
        message: fc.string({ maxLength: 200 }),
      }),
      fc.record({ type: fc.constant('tunnel-ready' as const), id: fc.string({ minLength: 1, maxLength: 64 }) }),
    );
    fc.assert(
      fc.property(
        fc.array(message, { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (messages, cuts) => {
          const bytes = Buffer.concat(messages.map((m) => encodeControl(m)));
          // fast-check builds records without a prototype; compare as plain objects.
          assert.deepEqual(
            feed(new ControlDecoder(EndpointMessage), bytes, cuts),
            messages.map((m) => ({ ...m })),
          );
        },
      ),
    );
  });

  it('rejects malformed lines with a ProtocolError code, never anything else', function () {
    const cases: Array<[string, string]> = [
      ['not json\n', 'UP_ERR_BAD_MESSAGE'],
      ['{"type":"publish","name":"redis"}\n', 'UP_ERR_BAD_MESSAGE'],
      ['{"type":"publish","name":"redis","port":70000}\n', 'UP_ERR_BAD_MESSAGE'],
      ['{"type":"publish","name":"redis","port":1,"extra":true}\n', 'UP_ERR_BAD_MESSAGE'],
      ['{"type":"launch-missiles"}\n', 'UP_ERR_BAD_MESSAGE'],
      ['[]\n', 'UP_ERR_BAD_MESSAGE'],
    ];
    for (const [text, code] of cases) {
      assert.throws(
        () => new ControlDecoder(EndpointMessage).push(Buffer.from(text)),
        (e: unknown) => e instanceof ProtocolError && e.code === code,
        text,
      );
    }
  });

  it('refuses a line longer than the cap, even when it never ends', function () {
    const decoder = new ControlDecoder(EndpointMessage);
    const chunk = Buffer.alloc(16 * 1024, 0x61);
    assert.throws(
      () => {
        for (let i = 0; i < 10; i++) decoder.push(chunk);
      },
      (e: unknown) => e instanceof ProtocolError && e.code === 'UP_ERR_FRAME_TOO_LARGE',
    );
    assert.ok(decoder.buffered <= MAX_CONTROL_LINE);
  });

  it('fuzz: random and truncated input never throws anything but ProtocolError', function () {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 512 }), { maxLength: 20 }), (chunks) => {
        const decoder = new ControlDecoder(ServerMessage, 1024);
        try {
          for (const c of chunks) decoder.push(Buffer.from(c));
        } catch (e) {
          assert.ok(e instanceof ProtocolError, String(e));
        }
      }),
      { numRuns: 2000 },
    );
  });
});
