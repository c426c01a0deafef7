/**
 * What the agent tells its controller, parsed rather than cast (an RPC result and a script message are
 * untyped JSON): `init`'s answer, and the messages it sends — a warning line for the user, or a
 * publication made for the command (`hook-run --publish`). hook/hooker.py reads the same shapes.
 */
import { z } from 'zod';

export const AgentInitResult = z.object({
  hooked: z.boolean(),
  hooks: z.array(z.string()),
  notice: z.string().optional(),
});
export type AgentInitResult = z.infer<typeof AgentInitResult>;

export const AgentMessage = z.discriminatedUnion('type', [
  z.object({ type: z.literal('warning'), message: z.string() }),
  z.object({
    type: z.literal('published'),
    event: z.literal('published'),
    name: z.string(),
    host: z.string(),
    port: z.number().int(),
  }),
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

/** The line (or, with `json`, the JSON object) a publication gets on stderr; as hook/hooker.py writes it. */
export function publicationLine(
  message: Extract<AgentMessage, { type: 'published' }>,
  pid: number,
  json: boolean,
): string {
  if (json)
    return JSON.stringify({ event: message.event, name: message.name, host: message.host, port: message.port, pid });
  return `hook-run: published ${message.name}: ${message.host}:${message.port} (process ${pid})`;
}
