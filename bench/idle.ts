/**
 * Many idle tunneled connections held open at once. Each one is opened, proven end to end with a 1-byte
 * echo (so its tunnel really reached the target), and then left idle; at most `concurrency` are being
 * opened at any time. The caller reads the daemons' RSS while they are all open, then closes them.
 */
import net from 'node:net';

export interface IdleSet {
  opened: number;
  failed: number;
  firstError?: string;
  /** Seconds it took to open and prove all of them. */
  seconds: number;
  close(): Promise<void>;
}

/**
 * `claim`, when given, runs once each connection is up and before its byte is written: the bench claims
 * it over IPC as the hook would, so the redirector admits it without its /proc owner check.
 */
export async function openIdle(
  host: string,
  port: number,
  count: number,
  concurrency: number,
  deadlineMs: number,
  onProgress?: (opened: number) => void,
  claim?: (socket: net.Socket) => Promise<void>,
): Promise<IdleSet> {
  const sockets: net.Socket[] = [];
  let opened = 0;
  let failed = 0;
  let next = 0;
  let firstError: string | undefined;
  const started = Date.now();
  const deadline = started + deadlineMs;

  const openOne = (): Promise<void> =>
    new Promise((resolve) => {
      const socket = net.connect({ host, port, noDelay: true });
      sockets.push(socket);
      const timer = setTimeout(() => fail(new Error('no echo within 20 s')), 20_000);
      const fail = (e: Error): void => {
        clearTimeout(timer);
        failed += 1;
        firstError ??= e.message;
        socket.destroy();
        resolve();
      };
      socket.once('error', fail);
      socket.once('close', () => fail(new Error('closed before its echo')));
      socket.once('connect', () => {
        if (claim === undefined) socket.write('x');
        else claim(socket).then(() => socket.write('x'), fail);
      });
      socket.once('data', () => {
        clearTimeout(timer);
        socket.removeAllListeners('close');
        socket.removeAllListeners('error');
        socket.on('error', () => undefined);
        opened += 1;
        if (onProgress && opened % 1000 === 0) onProgress(opened);
        resolve();
      });
    });

  const worker = async (): Promise<void> => {
    while (next < count && Date.now() < deadline) {
      next += 1;
      await openOne();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = (Date.now() - started) / 1000;

  return {
    opened,
    failed,
    firstError,
    seconds,
    close: async (): Promise<void> => {
      await Promise.all(
        sockets.map(
          (s) =>
            new Promise<void>((resolve) => {
              if (s.destroyed) return resolve();
              s.once('close', () => resolve());
              s.destroy();
            }),
        ),
      );
    },
  };
}
