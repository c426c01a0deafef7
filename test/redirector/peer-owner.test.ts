import assert from 'node:assert/strict';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import {
  findRows,
  PeerOwners,
  tryClientRowKey,
  tryParseProcTcpRow,
  tryProcEndpointText,
  type ProcTcpRow,
} from '../../redirector/peer-owner';
import { tmpDir } from '../harness';

// Literal rows from this machine (little-endian): a listener on 127.77.0.2:35063 (0x88F7), a client of
// uid 65534 at 127.0.0.1:33222 (0x81C6) as AF_INET and at 127.0.0.1:33226 (0x81CA) as AF_INET6 (mapped),
// the redirector's own accepted socket, and a client that closed (a time-wait entry: uid 0, inode 0).
const TCP = [
  '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode                                                     ',
  '   0: 02004D7F:88F7 00000000:0000 0A 00000000:00000001 00:00000000 00000000     0        0 1709071 2 000000008a9f7306 100 0 0 10 0                   ',
  '   5: 02004D7F:88F7 0100007F:81C6 01 00000000:00000000 00:00000000 00000000     0        0 1709073 1 00000000490eefb0 20 0 0 10 -1                   ',
  '  12: 0100007F:81C6 02004D7F:88F7 01 00000000:00000000 00:00000000 00000000 65534        0 1709072 2 00000000b9d44851 20 0 0 10 -1                   ',
  '2162: 0100007F:8508 02004D7F:88F7 05 00000000:00000000 03:00001765 00000000     0        0 0 3 0000000025751178                                      ',
  '12351: 0100007F:84F4 02004D7F:88F7 01 00000000:00000000 00:00000000 00000000  1000        0 1708635 1 0000000096a3bfb7 20 0 0 10 -1                  ',
  '',
].join('\n');
const TCP6 = [
  '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
  '   1: 00000000000000000000000001000000:9043 00000000000000000000000001000000:D3E6 01 00000000:00000000 00:00000000 00000000     0        0 1707732 1 0000000059dd3cd2 20 0 0 10 -1',
  '   2: 0000000000000000FFFF00000100007F:81CA 0000000000000000FFFF000002004D7F:88F7 01 00000000:00000000 00:00000000 00000000 65534        0 1708724 2 00000000a8bf003f 20 0 0 10 -1',
  '',
].join('\n');

const LISTENER = { localAddress: '127.77.0.2', localPort: 0x88f7 };

describe('redirector/peer-owner: who owns the client end of a connection', function () {
  it('parses /proc/net/tcp rows: addresses little-endian per 32-bit word, ports, state, uid, inode', function () {
    const lines = TCP.split('\n');
    assert.equal(tryParseProcTcpRow(lines[0]!, 'LE'), null, 'the header is no row');
    assert.deepEqual(tryParseProcTcpRow(lines[3]!, 'LE'), {
      local: { address: '127.0.0.1', port: 33222 },
      remote: { address: '127.77.0.2', port: 35063 },
      state: 1,
      uid: 65534,
      inode: 1709072,
    });
    assert.deepEqual(tryParseProcTcpRow(lines[1]!, 'LE')?.remote, { address: '0.0.0.0', port: 0 });
    assert.equal(tryParseProcTcpRow(lines[1]!, 'LE')?.state, 10);
    assert.deepEqual(tryParseProcTcpRow(lines[4]!, 'LE'), {
      local: { address: '127.0.0.1', port: 0x8508 },
      remote: { address: '127.77.0.2', port: 35063 },
      state: 5,
      uid: 0,
      inode: 0,
    });
    assert.equal(tryParseProcTcpRow(lines[5]!, 'LE')?.uid, 1000, 'a row number wider than its 4 columns');
  });

  it('parses /proc/net/tcp6 rows: four words, IPv4-mapped and plain IPv6', function () {
    const lines = TCP6.split('\n');
    assert.equal(tryParseProcTcpRow(lines[0]!, 'LE'), null);
    assert.deepEqual(tryParseProcTcpRow(lines[1]!, 'LE')?.local, { address: '::1', port: 0x9043 });
    assert.deepEqual(tryParseProcTcpRow(lines[2]!, 'LE'), {
      local: { address: '::ffff:127.0.0.1', port: 33226 },
      remote: { address: '::ffff:127.77.0.2', port: 35063 },
      state: 1,
      uid: 65534,
      inode: 1708724,
    });
  });

  it('reads words in host byte order: a big-endian machine prints 127.0.0.1 as 7F000001', function () {
    const row = tryParseProcTcpRow(
      '   3: 7F000001:81C6 7F4D0002:88F7 01 00000000:00000000 00:00000000 00000000  1000        0 42 1 0 20 0 0 10 -1',
      'BE',
    );
    assert.deepEqual(row?.local, { address: '127.0.0.1', port: 33222 });
    assert.deepEqual(row?.remote, { address: '127.77.0.2', port: 35063 });
    assert.equal(tryProcEndpointText('127.77.0.2', 35063, 4, 'BE'), '7F4D0002:88F7');
    assert.equal(tryProcEndpointText('127.77.0.2', 35063, 6, 'BE'), '00000000000000000000FFFF7F4D0002:88F7');
  });

  it('refuses malformed rows', function () {
    for (const bad of [
      '',
      'garbage',
      '   0: 0100007F 02004D7F:88F7 01 0:0 0:0 0 0 0 1',
      '   0: 0100007G:81C6 02004D7F:88F7 01 0:0 0:0 0 0 0 1',
      '   0: 0100007F:81C6 02004D7F:88F7 01 0:0 0:0 0 x 0 1',
      '   0: 0100007F:81C6 02004D7F:88F7',
    ]) {
      assert.equal(tryParseProcTcpRow(bad, 'LE'), null, bad);
    }
  });

  it('encodes an accepted connection as the text its client row starts with, in either file', function () {
    const ends = { peerAddress: '127.0.0.1', peerPort: 33222, ...LISTENER };
    assert.equal(tryClientRowKey(ends, 4, 'LE'), '0100007F:81C6 02004D7F:88F7');
    assert.ok(TCP.includes(`: ${tryClientRowKey(ends, 4, 'LE')!} `));
    const mapped = { peerAddress: '::ffff:127.0.0.1', peerPort: 33226, ...LISTENER };
    assert.equal(
      tryClientRowKey(mapped, 6, 'LE'),
      '0000000000000000FFFF00000100007F:81CA 0000000000000000FFFF000002004D7F:88F7',
    );
    assert.ok(TCP6.includes(`: ${tryClientRowKey(mapped, 6, 'LE')!} `));
    assert.equal(
      tryClientRowKey({ ...ends, peerAddress: '::1' }, 4, 'LE'),
      null,
      'pseudo addresses are IPv4: nothing else is looked up',
    );
    assert.equal(tryClientRowKey({ ...ends, peerPort: 70000 }, 4, 'LE'), null);
  });

  it("finds the client's row, not the redirector's own accepted socket with the ends swapped", function () {
    const key = tryClientRowKey({ peerAddress: '127.0.0.1', peerPort: 33222, ...LISTENER }, 4, 'LE')!;
    const absent = tryClientRowKey({ peerAddress: '127.0.0.1', peerPort: 1, ...LISTENER }, 4, 'LE')!;
    const found = new Map<string, ProcTcpRow>();
    findRows(TCP, new Set([key, absent]), found, 'LE');
    assert.deepEqual([...found.keys()], [key]);
    assert.equal(found.get(key)!.uid, 65534);
    assert.equal(found.get(key)!.inode, 1709072);
  });

  describe('lookups from files', function () {
    let dir: string;
    let owners: PeerOwners;
    before(function () {
      dir = tmpDir('peer-owner');
      fs.writeFileSync(path.join(dir, 'tcp'), TCP);
      fs.writeFileSync(path.join(dir, 'tcp6'), TCP6);
    });
    after(function () {
      fs.rmSync(dir, { recursive: true, force: true });
    });
    beforeEach(function () {
      if (os.endianness() !== 'LE') this.skip(); // the literal rows are a little-endian machine's
      owners = new PeerOwners({ tcpPath: path.join(dir, 'tcp'), tcp6Path: path.join(dir, 'tcp6') });
    });

    it('serves every lookup queued in one turn with one pass over the file', async function () {
      const uids = await Promise.all([
        owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 33222, ...LISTENER }),
        owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 0x84f4, ...LISTENER }),
        owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 33222, ...LISTENER }),
      ]);
      assert.deepEqual(uids, [65534, 1000, 65534]);
      assert.equal(owners.passes, 1);
    });

    it('looks in tcp6 only for the clients tcp did not show', async function () {
      assert.equal(await owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 33226, ...LISTENER }), 65534);
      assert.equal(owners.passes, 2);
    });

    it('gives no owner for a client that closed (time-wait: uid 0 whoever owned it) or is not there', async function () {
      assert.equal(await owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 0x8508, ...LISTENER }), null);
      assert.equal(await owners.ownerOf({ peerAddress: '127.0.0.1', peerPort: 1, ...LISTENER }), null);
    });

    it('rejects in one line when /proc cannot be read', async function () {
      const blind = new PeerOwners({ tcpPath: path.join(dir, 'missing') });
      await assert.rejects(
        blind.ownerOf({ peerAddress: '127.0.0.1', peerPort: 33222, ...LISTENER }),
        /^Error: cannot read .*missing \(ENOENT\)$/,
      );
    });
  });

  describe('lookups from the kernel', function () {
    let server: net.Server;
    let port: number;
    const accepted: net.Socket[] = [];
    before(async function () {
      if (process.platform !== 'linux') this.skip();
      server = net.createServer({ pauseOnConnect: true }, (s) => accepted.push(s));
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
      port = (server.address() as net.AddressInfo).port;
    });
    after(function () {
      for (const s of accepted) s.destroy();
      server?.close();
    });

    async function acceptFrom(host: string): Promise<{ client: net.Socket; socket: net.Socket }> {
      const count = accepted.length;
      const client = await new Promise<net.Socket>((resolve, reject) => {
        const c = net.connect(port, host, () => resolve(c)).once('error', reject);
      });
      while (accepted.length === count) await new Promise((r) => setTimeout(r, 5));
      return { client, socket: accepted[accepted.length - 1]! };
    }
    const endsOf = (
      s: net.Socket,
    ): { peerAddress: string; peerPort: number; localAddress: string; localPort: number } => ({
      peerAddress: s.remoteAddress!,
      peerPort: s.remotePort!,
      localAddress: s.localAddress!,
      localPort: s.localPort!,
    });

    it('finds this process as the owner of an AF_INET and an AF_INET6 (mapped) client', async function () {
      const owners = new PeerOwners();
      const v4 = await acceptFrom('127.0.0.1');
      const v6 = await acceptFrom('::ffff:127.0.0.1');
      assert.equal(await owners.ownerOf(endsOf(v4.socket)), process.getuid!());
      assert.equal(await owners.ownerOf(endsOf(v6.socket)), process.getuid!());
      v4.client.destroy();
      v6.client.destroy();
    });

    it("admits its own user's paused connection, and its first bytes are all still there", async function () {
      const { client, socket } = await acceptFrom('127.0.0.1');
      client.write('first bytes');
      const lines: string[] = [];
      const log = {
        warn: (m: string) => lines.push(m),
        info: (m: string) => lines.push(m),
        error: (m: string) => lines.push(m),
      };
      await new Promise<void>((resolve) => new PeerOwners().admit(socket, log, resolve));
      socket.resume();
      const [data] = (await once(socket, 'data')) as [Buffer];
      assert.equal(data.toString(), 'first bytes');
      assert.deepEqual(lines, []);
      client.destroy();
    });

    it('does nothing, neither admitting nor resetting, once something else decided meanwhile', async function () {
      const { client, socket } = await acceptFrom('127.0.0.1');
      const owners = new PeerOwners({ uid: process.getuid!() + 1 }); // it would refuse this client
      let admitted = false;
      owners.admit(
        socket,
        { warn: assert.fail, info: assert.fail, error: assert.fail },
        () => (admitted = true),
        () => false,
      );
      await owners.ownerOf(endsOf(socket)); // the pass admit queued is over
      assert.equal(admitted, false);
      assert.equal(socket.destroyed, false);
      client.destroy();
    });

    it('finds no owner once the client closed', async function () {
      const owners = new PeerOwners();
      const { client, socket } = await acceptFrom('127.0.0.1');
      client.destroy();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(await owners.ownerOf(endsOf(socket)), null);
    });
  });
});
