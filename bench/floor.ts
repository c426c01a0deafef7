/**
 * The floor: the chain's shape — three Node processes in a row, TLS on the two hops that cross the
 * network — with nothing of Underpass in them but its relay (floor-relay.ts). Measured in the same run as
 * Underpass, it shows how much of a figure is Node, TLS and loopback on this machine, and so what no
 * protocol written for Node can improve on.
 *
 * With `tls`, it is the throughput floor: one TCP connection per hop per app connection, so opening one
 * costs two TLS handshakes, and its latency is not a floor. Without `tls`, it is the latency floor:
 * each relay accepts, dials on and carries one byte each way, the least any three Node hops can do.
 */
import path from 'node:path';
import { freePort } from '../cli/chain';
import { Proc } from './proc';

const RELAY = path.join(__dirname, 'floor-relay.js');

export interface FloorOptions {
  /** Where the last relay connects. */
  targetPort: number;
  /** The bench server's certificate and key (the first relays trust the certificate); null for plain TCP. */
  tls: { cert: string; key: string } | null;
}

export class FloorChain {
  /** Where the app connects. */
  port = 0;
  private relays: Proc[] = [];

  constructor(private readonly options: FloorOptions) {}

  async start(): Promise<this> {
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const t = this.options.tls;
    const tlsIn = t ? ['--tls-in', t.cert, t.key] : [];
    const tlsOut = t ? ['--tls-out', t.cert] : [];
    // Started from the far end, so that each relay's next hop already listens.
    const specs: Array<[string, string[]]> = [
      ['floor relay 3', ['--listen', String(p3), '--to', String(this.options.targetPort), ...tlsIn]],
      ['floor relay 2', ['--listen', String(p2), '--to', String(p3), ...tlsIn, ...tlsOut]],
      ['floor relay 1', ['--listen', String(p1), '--to', String(p2), ...tlsOut]],
    ];
    for (const [label, args] of specs) {
      const relay = new Proc(label, process.execPath, [RELAY, ...args], { keepOutput: false });
      this.relays.push(relay);
      await relay.waitFor(/relay listening/);
    }
    this.port = p1;
    return this;
  }

  /** The relays' pids, named from where the app connects. */
  pids(): Record<'relay1' | 'relay2' | 'relay3', number> {
    // Started from the far end: relays[0] is relay 3.
    const [r3, r2, r1] = this.relays;
    return { relay1: r1?.pid ?? -1, relay2: r2?.pid ?? -1, relay3: r3?.pid ?? -1 };
  }

  async stop(): Promise<void> {
    await Promise.all(this.relays.map((r) => r.stop(5000)));
  }
}
