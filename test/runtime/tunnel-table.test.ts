/**
 * A session's tunnel table: the grace period of a dropped session, and the deadline after its return for
 * tunnels the peer never re-opens.
 */
import { strict as assert } from 'node:assert';
import { isUnderpassError } from '../../protocol/errors';
import { createLogger } from '../../runtime/log';
import { ResumableStream } from '../../runtime/resumable-stream';
import { TunnelTable } from '../../runtime/tunnel-table';

const logger = createLogger('test', 'text', 'error');
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A leg with no stream under it, as every leg is right after its session dropped. */
function detachedLeg(table: TunnelTable, id: string): { leg: ResumableStream; error: () => unknown } {
  const leg = new ResumableStream('web.default.underpass.internal:80');
  let error: unknown = null;
  leg.on('error', (e) => (error = e));
  table.add(id, leg);
  return { leg, error: () => error };
}

describe("TunnelTable (a session's resumable tunnels)", function () {
  it('resets the tunnels of a session that stays away past the grace period', async function () {
    const table = new TunnelTable({ graceMs: 30, send: () => undefined, logger });
    const { leg, error } = detachedLeg(table, 't1');
    table.suspend();
    await sleep(80);
    assert.equal(leg.destroyed, true);
    assert.ok(isUnderpassError(error()) && (error() as { code: string }).code === 'UP_ERR_RESET');
  });

  it("resets a tunnel the peer does not re-open within a grace period of the session's return", async function () {
    // The peer ended or reset it while the link was failing unnoticed, and that news was lost with the link.
    const table = new TunnelTable({ graceMs: 30, send: () => undefined, logger });
    const { leg, error } = detachedLeg(table, 't1');
    table.suspend();
    assert.deepEqual(table.resume(), []);
    await sleep(80);
    assert.equal(leg.destroyed, true);
    assert.ok(isUnderpassError(error()) && (error() as { code: string }).code === 'UP_ERR_RESET');
    assert.equal(table.size, 0);
  });

  it('leaves a waiting tunnel alone while its session comes and goes within the grace period', async function () {
    const table = new TunnelTable({ graceMs: 1_000, send: () => undefined, logger });
    const { leg } = detachedLeg(table, 't1');
    table.suspend();
    await sleep(500);
    table.resume();
    await sleep(200);
    table.suspend();
    await sleep(500);
    // 1.2 s since the first drop, but each deadline of 1 s was cancelled before it came.
    assert.equal(leg.destroyed, false);
    leg.destroy();
  });
});
