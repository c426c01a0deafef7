/**
 * The directory: which holder serves each publication now, by publication id (`publicationId`,
 * `ACCOUNT/NAME`). In one process the holder is a proxy's session on this server, kept in memory
 * (`MemoryDirectory`, the embedded default). Several servers acting as one service share a directory
 * instead, in an existing engine such as Redis, where the holder names the node: such a directory
 * implements the same interface, and nothing else of the server changes.
 */

export interface PublicationDirectory<Holder> {
  /** The holder serving publication `id` now, if any. */
  holderOf(id: string): Holder | undefined;
  /** `holder` serves `id` from now on; returns the holder it took the publication over from, if another. */
  hold(id: string, holder: Holder): Holder | undefined;
  /** `holder` no longer serves `id` (nothing happens when another holder has taken it over). */
  release(id: string, holder: Holder): void;
  /** How many publications are held. */
  readonly size: number;
  /** Every holder, once per publication it holds. */
  holders(): IterableIterator<Holder>;
}

export class MemoryDirectory<Holder> implements PublicationDirectory<Holder> {
  private readonly byId = new Map<string, Holder>();

  holderOf(id: string): Holder | undefined {
    return this.byId.get(id);
  }

  hold(id: string, holder: Holder): Holder | undefined {
    const previous = this.byId.get(id);
    this.byId.set(id, holder);
    return previous !== undefined && previous !== holder ? previous : undefined;
  }

  release(id: string, holder: Holder): void {
    if (this.byId.get(id) === holder) this.byId.delete(id);
  }

  get size(): number {
    return this.byId.size;
  }

  holders(): IterableIterator<Holder> {
    return this.byId.values();
  }
}
