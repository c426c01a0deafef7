/**
 * A tunnel leg over real HTTP/2 sessions on loopback: bytes cross a session that is destroyed mid-transfer
 * and re-attached on a new one, without loss or repetition, in both directions at once.
 */
import { strict as assert } from 'node:assert';
import crypto from 'node:crypto';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { isUnderpassError } from '../../protocol/errors';
import { REPLAY_LIMIT, ReplayBudget, ResumableStream, type AckSink } from '../../runtime/resumable-stream';

/** Delivers acknowledgements straight to the peer leg, as the control stream would. */
function ackTo(peer: () => ResumableStream): AckSink {
  return {
    ackDue(leg: ResumableStream): void {
      setImmediate(() => {
        leg.acknowledged = leg.received;
        peer().handleAck(leg.received, leg.peerEnded);
      });
    },
  };
}

/** Reads everything a leg delivers until its end. */
function collect(leg: ResumableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  leg.on('data', (c: Buffer) => chunks.push(c));
  return new Promise((resolve, reject) => {
    leg.once('end', () => resolve(Buffer.concat(chunks)));
    leg.once('error', reject);
  });
}

/** Writes `data` in random pieces, respecting backpressure, then ends. */
async function feed(leg: ResumableStream, data: Buffer, onProgress?: (sent: number) => void): Promise<void> {
  let at = 0;
  while (at < data.length) {
    const n = Math.min(data.length - at, 1 + crypto.randomInt(64 * 1024));
    const more = leg.write(data.subarray(at, at + n));
    at += n;
    onProgress?.(at);
    if (!more) await new Promise((r) => leg.once('drain', r));
    else if (at % 7 === 0) await new Promise((r) => setImmediate(r));
  }
  leg.end();
}

describe('ResumableStream (a tunnel leg that outlives its session)', function () {
  let server: http2.Http2Server;
  let port = 0;
  /** The server side's leg; a new stream either opens it or re-attaches it. */
  let serverLeg: ResumableStream | null = null;
  const sessions = new Set<http2.Http2Session>();

  beforeEach(async function () {
    serverLeg = null;
    server = http2.createServer();
    server.on('session', (s) => sessions.add(s));
    server.on('stream', (stream, headers) => {
      const peerReceived = Number(headers['x-received'] ?? 0);
      stream.respond({ ':status': 200, 'x-received': String(serverLeg?.received ?? 0) });
      if (!serverLeg) {
        serverLeg = new ResumableStream('test');
        // Aborts are what some tests cause; the assertions look at the legs themselves.
        serverLeg.on('error', () => undefined);
      }
      serverLeg.attach(stream, peerReceived);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterEach(async function () {
    for (const s of sessions) s.destroy();
    sessions.clear();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  /** Opens a stream on a new session; with `leg`, re-attaches it from the counts both sides have. */
  async function open(leg: ResumableStream, resume: boolean): Promise<http2.ClientHttp2Session> {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    sessions.add(session);
    session.on('error', () => undefined);
    const stream = session.request({
      ':method': 'CONNECT',
      ':authority': 'test:1',
      'x-received': String(leg.received),
    });
    if (!resume) {
      leg.attach(stream, 0);
      return session;
    }
    const headers = await new Promise<http2.IncomingHttpHeaders>((resolve) => stream.once('response', resolve));
    assert.equal(leg.attach(stream, Number(headers['x-received'])), true);
    return session;
  }

  async function waitForServerLeg(): Promise<ResumableStream> {
    while (!serverLeg) await new Promise((r) => setTimeout(r, 5));
    return serverLeg;
  }

  it('carries bytes both ways and finishes once each end is acknowledged', async function () {
    const client = new ResumableStream('test');
    await open(client, false);
    const far = await waitForServerLeg();
    client.sink = ackTo(() => far);
    far.sink = ackTo(() => client);
    const closed = Promise.all([new Promise((r) => client.once('close', r)), new Promise((r) => far.once('close', r))]);
    const up = crypto.randomBytes(300_000);
    const down = crypto.randomBytes(200_000);
    const [gotUp, gotDown] = await Promise.all([collect(far), collect(client), feed(client, up), feed(far, down)]);
    assert.ok(gotUp.equals(up));
    assert.ok(gotDown.equals(down));
    await closed;
    assert.equal(client.failed, false);
    assert.equal(far.failed, false);
  });

  it('loses and repeats nothing when the session dies mid-transfer and the leg is re-attached', async function () {
    const client = new ResumableStream('test');
    const first = await open(client, false);
    const far = await waitForServerLeg();
    client.sink = ackTo(() => far);
    far.sink = ackTo(() => client);
    const up = crypto.randomBytes(8 * 1024 * 1024);
    const down = crypto.randomBytes(6 * 1024 * 1024);
    let cut = false;
    const received = Promise.all([collect(far), collect(client)]);
    const fed = Promise.all([
      feed(client, up, (sent) => {
        if (!cut && sent > 2 * 1024 * 1024) {
          cut = true;
          // A link that dies: both ends' sessions go, whatever was in flight with them.
          for (const s of sessions) s.destroy();
          setTimeout(() => void open(client, true), 100);
        }
      }),
      feed(far, down),
    ]);
    const [[gotUp, gotDown]] = await Promise.all([received, fed]);
    assert.equal(cut, true);
    assert.equal(gotUp.length, up.length);
    assert.ok(gotUp.equals(up), 'upstream bytes differ');
    assert.ok(gotDown.equals(down), 'downstream bytes differ');
    assert.equal(first.destroyed, true);
  });

  it('holds writes once REPLAY_LIMIT bytes wait for an acknowledgement', async function () {
    const leg = new ResumableStream('test');
    let written = 0;
    const chunk = Buffer.alloc(8 * 1024);
    // Detached (never attached): every write goes to the replay buffer only, and is done at once below the limit.
    for (;;) {
      written += chunk.length;
      if (!leg.write(chunk)) break;
    }
    assert.ok(written >= REPLAY_LIMIT, `writes were held after ${written} bytes`);
    assert.ok(
      written <= REPLAY_LIMIT + leg.writableHighWaterMark + chunk.length,
      `${written} bytes were taken past the limit`,
    );
    const drained = new Promise((r) => leg.once('drain', r));
    leg.handleAck(REPLAY_LIMIT, false);
    await drained;
    leg.destroy();
  });

  it("holds every leg of a session once their unacknowledged bytes together reach the session's budget", async function () {
    const budget = new ReplayBudget(64 * 1024);
    const [a, b] = [new ResumableStream('a'), new ResumableStream('b')];
    a.useBudget(budget);
    b.useBudget(budget);
    const chunk = Buffer.alloc(16 * 1024);
    // Detached legs: writes only fill the replay buffers, each far below its own REPLAY_LIMIT. The write
    // that reaches the budget is taken, and its leg then holds (its callback waits, as for REPLAY_LIMIT).
    for (const leg of [a, b, a, b]) leg.write(chunk);
    assert.equal(budget.used, 64 * 1024);
    assert.equal(a.writableLength, 0, 'a wrote below the budget');
    assert.equal(b.writableLength, chunk.length, 'b reached it and holds');
    a.write(chunk);
    assert.equal(a.writableLength, chunk.length, 'a holds too, past the budget');
    const drained = Promise.all([a, b].map((leg) => new Promise((r) => leg.once('drain', r))));
    // Acknowledging some of a's bytes frees room for both.
    a.handleAck(32 * 1024, false);
    await drained;
    assert.equal(budget.used, 5 * chunk.length - 32 * 1024);
    // A leg that goes returns what it held.
    a.destroy();
    b.destroy();
    await new Promise((r) => setImmediate(r));
    assert.equal(budget.used, 0);
  });

  it('refuses a resume that claims bytes never sent, as a protocol error', async function () {
    const client = new ResumableStream('test');
    await open(client, false);
    const errors: unknown[] = [];
    client.on('error', (e) => errors.push(e));
    const session = http2.connect(`http://127.0.0.1:${port}`);
    sessions.add(session);
    session.on('error', () => undefined);
    const stream = session.request({ ':method': 'CONNECT', ':authority': 'test:1' });
    stream.on('error', () => undefined);
    assert.equal(client.attach(stream, 1000), false);
    await new Promise((r) => setImmediate(r));
    assert.equal(client.destroyed, true);
    assert.ok(isUnderpassError(errors[0]) && errors[0].code === 'UP_ERR_PROTOCOL');
  });
});
