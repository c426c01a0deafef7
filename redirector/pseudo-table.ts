/**
 * The machine's one table of pseudo addresses: pseudo name ↔ address in a loopback sub-range. It lives in
 * the redirector, not in the hook, so every hooked process — forked, exec'd or unrelated — gets the same
 * answer for the same name, and an address found in one process (a log, a config) means the same service
 * in another. Loopback means a connect the hook ever misses stays on this machine: it meets the
 * redirector's own listener, or nothing.
 *
 * The table is kept in a file beside the IPC socket, so that a restarted redirector gives every name the
 * address it had: an app that still holds an old answer must never reach another service by it.
 */
import fs from 'node:fs';
import { ConfigError } from '../protocol/errors';
import { DEFAULT_PSEUDO_NET } from '../protocol/defaults';
import { formatIPv4, inPseudoNet, tryParseIPv4 } from '../protocol/ipc';

export class PseudoAddressTable {
  readonly base: number;
  readonly prefix: number;
  private readonly byName = new Map<string, string>();
  private readonly byAddress = new Map<string, string>();
  private next = 1;

  /** `file`: where the table is kept across restarts (entries outside the range are dropped). */
  constructor(
    cidr: string = DEFAULT_PSEUDO_NET,
    private readonly file?: string,
  ) {
    const [addr, bits] = cidr.split('/');
    const base = tryParseIPv4(addr ?? '');
    const prefix = Number(bits);
    if (base === null || !Number.isInteger(prefix) || prefix < 8 || prefix > 30 || !inPseudoNet(base, 0x7f000000, 8)) {
      throw new ConfigError(`--pseudo-net '${cidr}' must be a loopback range such as 127.77.0.0/16`);
    }
    this.base = base;
    this.prefix = prefix;
    if (file !== undefined) this.load(file);
  }

  private load(file: string): void {
    let entries: unknown;
    try {
      entries = JSON.parse(fs.readFileSync(file, 'utf8'));
    } catch {
      return; // first start, or an unreadable file: start empty (it is rewritten on the next entry)
    }
    if (!Array.isArray(entries)) return;
    for (const entry of entries) {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || typeof entry[1] !== 'string') continue;
      const [name, address] = entry as [string, string];
      const value = tryParseIPv4(address);
      if (value === null || !inPseudoNet(value, this.base, this.prefix) || this.byAddress.has(address)) continue;
      this.byName.set(name, address);
      this.byAddress.set(address, name);
      this.next = Math.max(this.next, ((value - this.base) >>> 0) + 1);
    }
  }

  private save(): void {
    if (this.file === undefined) return;
    const tmp = `${this.file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify([...this.byName]), { mode: 0o600 });
    fs.renameSync(tmp, this.file);
  }

  get baseAddress(): string {
    return formatIPv4(this.base);
  }

  /** The pseudo address of `name`, allocating the next free one on first use. */
  addressOf(name: string): string {
    const known = this.byName.get(name);
    if (known !== undefined) return known;
    const size = 2 ** (32 - this.prefix);
    if (this.next >= size - 1)
      throw new ConfigError(`the pseudo address range ${this.baseAddress}/${this.prefix} is full`);
    const address = formatIPv4((this.base + this.next) >>> 0);
    this.next += 1;
    this.byName.set(name, address);
    this.byAddress.set(address, name);
    this.save();
    return address;
  }

  tryNameOf(address: string): string | null {
    return this.byAddress.get(address) ?? null;
  }
}
