/**
 * Where the time to open a tunneled connection goes, as the redirector sees it: one debug line per
 * connection, with the accept as zero, when it was admitted (its claim arrived), when the server
 * answered the tunnel request (the proxy had reached the target) and when the first byte came back.
 * bench/README.md's connect-latency accounting reads these; at other levels nothing is measured.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../runtime/log';

export class OpenTiming {
  private readonly accepted = performance.now();
  private admitted = Number.NaN;
  private answered = Number.NaN;

  private constructor(
    private readonly log: Logger,
    private readonly name: string,
  ) {}

  /** A timing for a connection just accepted, or null when debug lines are off. */
  static start(log: Logger, name: string): OpenTiming | null {
    return log.isDebugEnabled() ? new OpenTiming(log, name) : null;
  }

  markAdmitted(): void {
    this.admitted = performance.now() - this.accepted;
  }

  markAnswered(): void {
    this.answered = performance.now() - this.accepted;
  }

  /** Logs the spans once the tunnel's first byte arrives on `leg`. */
  logAtFirstByte(leg: Duplex): void {
    leg.once('data', () => {
      this.log.debug('tunnel opening', {
        name: this.name,
        admittedMs: +this.admitted.toFixed(3),
        answeredMs: +this.answered.toFixed(3),
        firstByteMs: +(performance.now() - this.accepted).toFixed(3),
      });
    });
  }
}
