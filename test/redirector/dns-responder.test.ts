/**
 * The DNS responder's answers (redirector/dns-responder.ts, answerQuery), from literal query bytes and
 * from queries dns-packet builds: what each kind of question gets, and that garbage gets nothing worse
 * than FORMERR or silence. The resolver stands in for the redirector's resolve (an IPC handler), which
 * the end-to-end tests drive for real.
 */
import assert from 'node:assert/strict';
import dnsPacket from 'dns-packet';
import fc from 'fast-check';
import type { ErrorReply, ResolveReply } from '../../protocol/ipc';
import { answerQuery, defaultResponderAddress } from '../../redirector/dns-responder';

const ZONE = 'underpass.internal';
const NAME = 'echo.default.underpass.internal';

async function resolve(name: string): Promise<ResolveReply | ErrorReply> {
  if (name === NAME) return { ok: true, name, address: '127.77.0.1' };
  if (name === 'down.default.underpass.internal') return { ok: false, code: 'UNAVAILABLE', message: 'no session' };
  if (name === 'moved.default.underpass.internal')
    return { ok: true, name, address: '127.77.0.2', moved: { port: 5432, listenPort: 40123 } };
  return { ok: false, code: 'NOT_FOUND', message: `${name} is not a publication` };
}

function query(name: string, type: dnsPacket.RecordType = 'A', flags = dnsPacket.RECURSION_DESIRED): Buffer {
  return dnsPacket.encode({ type: 'query', id: 0x1234, flags, questions: [{ type, name, class: 'IN' }] });
}

async function answer(
  message: Buffer,
  zone: string | null = ZONE,
): Promise<dnsPacket.DecodedPacket & { rcode?: string }> {
  const reply = await answerQuery(message, zone, resolve);
  assert.ok(reply !== null, 'an answer');
  return dnsPacket.decode(reply) as dnsPacket.DecodedPacket & { rcode?: string };
}

describe('redirector/dns-responder: answers for the zone', function () {
  it('answers A for a publication from literal query bytes, authoritative, with the question echoed', async function () {
    // id 0xabcd, RD, one question: echo.default.underpass.internal A IN (as dig sends it, without EDNS).
    const literal = Buffer.from(
      'abcd01000001000000000000' +
        '04' +
        Buffer.from('echo').toString('hex') +
        '07' +
        Buffer.from('default').toString('hex') +
        '09' +
        Buffer.from('underpass').toString('hex') +
        '08' +
        Buffer.from('internal').toString('hex') +
        '00' +
        '0001' +
        '0001',
      'hex',
    );
    const reply = await answerQuery(literal, ZONE, resolve);
    assert.ok(reply !== null);
    // Header: same id; QR, AA, RD set; NOERROR; one question, one answer.
    assert.equal(reply.subarray(0, 12).toString('hex'), 'abcd' + '8500' + '0001' + '0001' + '0000' + '0000');
    // The answer ends with TTL 10, RDLENGTH 4 and 127.77.0.1.
    assert.equal(reply.subarray(-10).toString('hex'), '0000000a' + '0004' + '7f4d0001');
  });

  it('gives AAAA and other types of a publication no data, and an unknown name in the zone NXDOMAIN', async function () {
    for (const type of ['AAAA', 'MX', 'TXT'] as const) {
      const reply = await answer(query(NAME, type));
      assert.equal(reply.rcode, 'NOERROR');
      assert.equal(reply.answers?.length, 0);
      assert.equal(reply.flag_aa, true);
    }
    const unknown = await answer(query('nothing.default.underpass.internal'));
    assert.equal(unknown.rcode, 'NXDOMAIN');
    assert.equal((await answer(query('down.default.underpass.internal'))).rcode, 'SERVFAIL');
  });

  it('answers SERVFAIL, with no address, for a publication whose listener moved off its published port', async function () {
    // A program without the hook would connect to the published port and meet the local program there.
    for (const type of ['A', 'AAAA'] as const) {
      const reply = await answer(query('moved.default.underpass.internal', type));
      assert.equal(reply.rcode, 'SERVFAIL', type);
      assert.equal(reply.answers?.length, 0);
    }
  });

  it('refuses names outside the zone, other classes and a missing session at once; NOTIMP for other opcodes', async function () {
    for (const name of ['example.com', 'underpass.internal.example.com', 'xunderpass.internal']) {
      assert.equal((await answer(query(name))).rcode, 'REFUSED', name);
    }
    assert.equal((await answer(query(NAME), null)).rcode, 'REFUSED');
    const chaos = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'TXT', name: NAME, class: 'CH' }] });
    assert.equal((await answer(chaos)).rcode, 'REFUSED');
    const notify = query(NAME);
    notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2); // opcode NOTIFY
    assert.equal((await answer(notify)).rcode, 'NOTIMP');
  });

  it('ignores responses and answers undecodable bytes with FORMERR when their header is there', async function () {
    const response = dnsPacket.encode({ type: 'response', id: 7, questions: [{ type: 'A', name: NAME }] });
    assert.equal(await answerQuery(response, ZONE, resolve), null);
    assert.equal(await answerQuery(Buffer.from('abcd', 'hex'), ZONE, resolve), null);
    const truncated = query(NAME).subarray(0, 20);
    const reply = await answerQuery(truncated, ZONE, resolve);
    assert.ok(reply !== null);
    assert.equal(reply.readUInt16BE(0), 0x1234);
    assert.equal(reply.readUInt16BE(2) & 0xf, 1); // FORMERR
  });

  it('never throws on random bytes (fast-check)', async function () {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 600 }), async (bytes) => {
        const reply = await answerQuery(Buffer.from(bytes), ZONE, resolve);
        assert.ok(reply === null || reply.length >= 12);
      }),
      { numRuns: 300 },
    );
  });

  it('takes the last address of the pseudo range, which the table never hands out', function () {
    assert.equal(defaultResponderAddress(0x7f4d0000, 16), '127.77.255.255');
    assert.equal(defaultResponderAddress(0x7f4d0000, 30), '127.77.0.3');
  });
});
