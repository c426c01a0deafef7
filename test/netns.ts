/**
 * Test hosts of our own: a network namespace joined to this one by a veth pair, with an nftables
 * firewall on its way out. Only the addresses made here (10.77.N.1 on our side, 10.77.N.2 inside, and
 * 10.77.25N.1/.2 for a link between two hosts) are ever used; nothing is routed anywhere else.
 */
import { execFileSync } from 'node:child_process';

let counter = 0;

/**
 * The next subnet index no other test process holds now: 10.77.N.1 on this side is how a running
 * ClientHost shows, and two test runs at once (engineers sharing a machine, CI's parallel jobs) must not
 * give two veths the same subnet, or each one's packets go to the other's namespace. Starts where this
 * process's pid points, so that two processes rarely even try the same index.
 */
function freeIndex(): number {
  for (let tries = 0; tries < 150; tries++) {
    const index = 100 + ((process.pid + counter++) % 150);
    const held = execFileSync('ip', ['-4', '-o', 'addr', 'show', 'to', `10.77.${index}.1/32`], { encoding: 'utf8' });
    if (held.trim() === '') return index;
  }
  throw new Error('no free 10.77.N.0/24 subnet for a test host: remove stale ones (ip -4 addr show to 10.77.0.0/16)');
}

function sh(args: string[], input?: string): void {
  execFileSync(args[0]!, args.slice(1), {
    stdio: ['pipe', 'ignore', 'pipe'],
    ...(input !== undefined ? { input } : {}),
  });
}

export class ClientHost {
  readonly name: string;
  readonly outer: string;
  readonly inner: string;
  private readonly hostVeth: string;

  private constructor(readonly index: number) {
    this.name = `up-${process.pid}-${index}`;
    this.hostVeth = `upv${process.pid % 10000}x${index}`;
    this.outer = `10.77.${index}.1`;
    this.inner = `10.77.${index}.2`;
  }

  /**
   * Creates the namespace; everything but loopback and `allowed` TCP ports on our side is refused. With
   * `server`, another of our side's addresses (another host's `outer`), those ports are allowed to it
   * instead, through our side.
   */
  static create(allowedPorts: number[], options: { server?: string } = {}): ClientHost {
    const host = new ClientHost(freeIndex());
    const peer = `${host.hostVeth}p`;
    try {
      sh(['ip', 'netns', 'add', host.name]);
      sh(['ip', 'link', 'add', host.hostVeth, 'type', 'veth', 'peer', 'name', peer]);
      sh(['ip', 'link', 'set', peer, 'netns', host.name]);
      sh(['ip', 'addr', 'add', `${host.outer}/24`, 'dev', host.hostVeth]);
      sh(['ip', 'link', 'set', host.hostVeth, 'up']);
      sh(['ip', 'netns', 'exec', host.name, 'ip', 'addr', 'add', `${host.inner}/24`, 'dev', peer]);
      sh(['ip', 'netns', 'exec', host.name, 'ip', 'link', 'set', peer, 'up']);
      sh(['ip', 'netns', 'exec', host.name, 'ip', 'link', 'set', 'lo', 'up']);
      const server = options.server ?? host.outer;
      if (server !== host.outer)
        sh(['ip', 'netns', 'exec', host.name, 'ip', 'route', 'add', `${server}/32`, 'via', host.outer]);
      const allow = allowedPorts.length > 0 ? `ip daddr ${server} tcp dport { ${allowedPorts.join(', ')} } accept` : '';
      sh(
        ['ip', 'netns', 'exec', host.name, 'nft', '-f', '-'],
        `table inet underpass_test {
  chain out {
    type filter hook output priority 0; policy accept;
    oif "lo" accept
    ct state established,related accept
    ${allow}
    meta l4proto tcp reject with tcp reset
    reject
  }
}
`,
      );
    } catch (e) {
      host.destroy();
      throw e;
    }
    return host;
  }

  /** Lets this host's firewall pass TCP to `address:port` as well. */
  allowTo(address: string, port: number): void {
    this.nft(`insert rule inet underpass_test out ip daddr ${address} tcp dport ${port} accept\n`);
  }

  /** Drops every packet this host sends to `address:port` from now on, open connections' too. */
  block(address: string, port: number): void {
    this.nft(`table inet underpass_block {
  chain out {
    type filter hook output priority -10; policy accept;
    ip daddr ${address} tcp dport ${port} drop
  }
}
`);
  }

  /** Lifts what block() did. */
  unblock(): void {
    this.nft('delete table inet underpass_block\n');
  }

  private nft(script: string): void {
    sh(['ip', 'netns', 'exec', this.name, 'nft', '-f', '-'], script);
  }

  destroy(): void {
    for (const args of [
      ['ip', 'netns', 'del', this.name],
      ['ip', 'link', 'del', this.hostVeth],
    ]) {
      try {
        sh(args);
      } catch {
        // already gone
      }
    }
  }
}

let links = 0;

/** A veth pair straight between two hosts: `a` holds 10.77.25N.1, `b` 10.77.25N.2. */
export class HostLink {
  readonly aAddress: string;
  readonly bAddress: string;

  constructor(a: ClientHost, b: ClientHost) {
    // Above the range freeIndex() hands out: these subnets exist only inside the two namespaces.
    const n = 250 + (links++ % 5);
    this.aAddress = `10.77.${n}.1`;
    this.bAddress = `10.77.${n}.2`;
    const aEnd = `upl${process.pid % 10000}x${n}a`;
    const bEnd = `upl${process.pid % 10000}x${n}b`;
    sh(['ip', 'link', 'add', aEnd, 'netns', a.name, 'type', 'veth', 'peer', 'name', bEnd, 'netns', b.name]);
    for (const [host, end, address] of [
      [a, aEnd, this.aAddress],
      [b, bEnd, this.bAddress],
    ] as const) {
      sh(['ip', 'netns', 'exec', host.name, 'ip', 'addr', 'add', `${address}/24`, 'dev', end]);
      sh(['ip', 'netns', 'exec', host.name, 'ip', 'link', 'set', end, 'up']);
    }
  }
}
