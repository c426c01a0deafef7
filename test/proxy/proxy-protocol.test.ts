/** The PROXY protocol header, from literal bytes and read back with proxy-protocol-js's own parser. */
import assert from 'node:assert/strict';
import { V1ProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js';
import { PP2_TYPE_AUTHORITY, PP2_TYPE_UNDERPASS_ACCOUNT, proxyHeader } from '../../proxy/proxy-protocol';

const client = { address: '192.0.2.7', port: 40000, account: 'alice', host: 'web.alice.underpass.internal' };
const target = { address: '127.0.0.1', port: 8080 };

/** The TLVs after a v2 header's addresses. */
function tlvs(bytes: Buffer, addressLength: number): Map<number, string> {
  const found = new Map<number, string>();
  let at = 16 + addressLength;
  const end = 16 + bytes.readUInt16BE(14);
  while (at < end) {
    const type = bytes[at]!;
    const length = bytes.readUInt16BE(at + 1);
    found.set(type, bytes.subarray(at + 3, at + 3 + length).toString('utf8'));
    at += 3 + length;
  }
  assert.equal(at, end, 'the TLVs fill the length exactly');
  return found;
}

describe('proxy/proxy-protocol: the header a target reads first', function () {
  it('v1: the client and the target as text', function () {
    const header = proxyHeader('v1', client, target).toString('latin1');
    assert.equal(header, 'PROXY TCP4 192.0.2.7 127.0.0.1 40000 8080\r\n');
    const parsed = V1ProxyProtocol.parse(header);
    assert.equal(parsed.source.ipAddress, '192.0.2.7');
  });

  it('v1: UNKNOWN for a client of unknown address (a session carried over a WebSocket)', function () {
    assert.equal(proxyHeader('v1', { ...client, address: undefined }, target).toString(), 'PROXY UNKNOWN\r\n');
  });

  it('v2: the signature, PROXY over TCP/IPv4, the addresses, and TLVs with the pseudo name and account', function () {
    const header = proxyHeader('v2', client, target);
    assert.equal(header.subarray(0, 12).toString('hex'), '0d0a0d0a000d0a515549540a');
    assert.equal(header[12], 0x21, 'version 2, PROXY');
    assert.equal(header[13], 0x11, 'AF_INET, STREAM');
    assert.equal(header.subarray(16, 28).toString('hex'), 'c0000207' + '7f000001' + '9c40' + '1f90');
    const found = tlvs(header, 12);
    assert.equal(found.get(PP2_TYPE_AUTHORITY), 'web.alice.underpass.internal');
    assert.equal(found.get(PP2_TYPE_UNDERPASS_ACCOUNT), 'alice');
    const parsed = V2ProxyProtocol.parse(header);
    assert.equal(parsed.proxyAddress.getLength(), 12);
  });

  it('v2: IPv6 addresses expanded to 16 bytes', function () {
    const header = proxyHeader('v2', { ...client, address: '2001:db8::7' }, { address: '::1', port: 80 });
    assert.equal(header[13], 0x21, 'AF_INET6, STREAM');
    assert.equal(header.subarray(16, 32).toString('hex'), '20010db8000000000000000000000007');
    assert.equal(header.subarray(32, 48).toString('hex'), '00000000000000000000000000000001');
    tlvs(header, 36);
  });

  it('v2: LOCAL with no addresses for a client of unknown address', function () {
    const header = proxyHeader('v2', { ...client, address: undefined }, target);
    assert.equal(header[12], 0x20, 'version 2, LOCAL');
    assert.equal(header[13], 0x00, 'AF_UNSPEC');
    assert.equal(tlvs(header, 0).get(PP2_TYPE_AUTHORITY), client.host);
  });
});
