/**
 * Reading a control stream (protocol/control.ts), the same on both ends: every chunk goes through one
 * push-style decoder, each complete message to `onMessage`; the first bytes that do not decode stop the
 * reading and go to `onMalformed` (the caller ends the stream or the session), and nothing after them is
 * read.
 */
import type { Readable } from 'node:stream';
import type { z } from 'zod';
import { ControlDecoder } from '../protocol/control';
import { isUnderpassError } from '../protocol/errors';

export function readControl<T>(
  stream: Readable,
  schema: z.ZodType<T>,
  onMessage: (message: T) => void,
  onMalformed: (why: string) => void,
): void {
  const decoder = new ControlDecoder(schema);
  let broken = false;
  stream.on('data', (chunk: Buffer) => {
    if (broken) return;
    let messages: T[];
    try {
      messages = decoder.push(chunk);
    } catch (e) {
      broken = true;
      onMalformed(isUnderpassError(e) ? e.message : String(e));
      return;
    }
    for (const message of messages) onMessage(message);
  });
}
