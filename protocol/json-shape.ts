/**
 * A small subset of JSON Schema, and a checker for it, for the one reader of peer data that cannot load
 * zod: the hook's agent, which runs inside every hooked process. zod there was measured: the smallest
 * build (`zod/mini`) added 32 KB to the 22 KB bundle and 10–15 ms to loading the agent into each process.
 * So the agent checks the redirector's replies against JSON Schemas that zod writes, at build time, from
 * the very schemas the redirector and the tests use (ipc.ts `agentIpcTable`); a test runs the
 * table's vectors through both.
 *
 * Only the keywords zod emits for those schemas are understood; `assertShape` refuses any other, so a
 * schema the checker cannot judge fails the build instead of passing every value. Unknown properties of
 * an object are allowed, as zod's default objects allow them.
 *
 * Pure: shared by the agent and the Node side; it imports nothing.
 */

/** A schema node, as zod's `toJSONSchema` writes it. */
export interface JsonSchemaNode {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean' | 'null';
  properties?: Record<string, JsonSchemaNode>;
  required?: string[];
  additionalProperties?: boolean | JsonSchemaNode;
  items?: JsonSchemaNode;
  anyOf?: JsonSchemaNode[];
  oneOf?: JsonSchemaNode[];
  const?: unknown;
  enum?: unknown[];
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
}

declare const described: unique symbol;

/** A schema node that describes values of type `T` (a type-level mark only). */
export type JsonShape<T> = JsonSchemaNode & { readonly [described]?: T };

/** Keywords that say nothing about validity and are skipped. */
const ANNOTATIONS = new Set(['$schema', 'description', 'default', 'title', 'additionalProperties']);
const KEYWORDS = new Set([
  'type',
  'properties',
  'required',
  'items',
  'anyOf',
  'oneOf',
  'const',
  'enum',
  'minLength',
  'maxLength',
  'minimum',
  'maximum',
  'exclusiveMinimum',
  'exclusiveMaximum',
]);

/** Throws when `node` uses a keyword `fitsShape` does not understand (at build time, not in the agent). */
export function assertShape(node: unknown, at = 'schema'): asserts node is JsonSchemaNode {
  if (typeof node !== 'object' || node === null) throw new Error(`${at} is not a schema object`);
  for (const [key, value] of Object.entries(node)) {
    if (ANNOTATIONS.has(key)) continue;
    if (!KEYWORDS.has(key)) throw new Error(`${at} uses '${key}', which json-shape.ts does not check`);
    if (key === 'properties')
      for (const [name, child] of Object.entries(value as object)) assertShape(child, `${at}.${name}`);
    if (key === 'items') assertShape(value, `${at}[]`);
    if (key === 'anyOf' || key === 'oneOf')
      (value as unknown[]).forEach((child, i) => assertShape(child, `${at}|${i}`));
  }
}

/** Whether `value` fits `shape` (for the keywords above). */
export function fitsShape<T>(shape: JsonShape<T>, value: unknown): value is T {
  return fits(shape, value);
}

function fits(node: JsonSchemaNode, value: unknown): boolean {
  if (node.type !== undefined && !hasType(node.type, value)) return false;
  if ('const' in node && value !== node.const) return false;
  if (node.enum !== undefined && !node.enum.includes(value)) return false;
  if (typeof value === 'string') {
    if (node.minLength !== undefined && value.length < node.minLength) return false;
    if (node.maxLength !== undefined && value.length > node.maxLength) return false;
  }
  if (typeof value === 'number') {
    if (node.minimum !== undefined && value < node.minimum) return false;
    if (node.maximum !== undefined && value > node.maximum) return false;
    if (node.exclusiveMinimum !== undefined && value <= node.exclusiveMinimum) return false;
    if (node.exclusiveMaximum !== undefined && value >= node.exclusiveMaximum) return false;
  }
  if (Array.isArray(value) && node.items !== undefined) {
    const items = node.items;
    if (!value.every((item) => fits(items, item))) return false;
  }
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    for (const name of node.required ?? []) if (!hasOwn(value, name)) return false;
    for (const [name, child] of Object.entries(node.properties ?? {})) {
      if (hasOwn(value, name) && !fits(child, Reflect.get(value, name))) return false;
    }
  }
  if (node.anyOf !== undefined && !node.anyOf.some((child) => fits(child, value))) return false;
  if (node.oneOf !== undefined && node.oneOf.filter((child) => fits(child, value)).length !== 1) return false;
  return true;
}

function hasOwn(value: object, name: string): boolean {
  return Object.prototype.hasOwnProperty.call(value, name);
}

function hasType(type: NonNullable<JsonSchemaNode['type']>, value: unknown): boolean {
  switch (type) {
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    case 'array':
      return Array.isArray(value);
    case 'integer':
      return typeof value === 'number' && Number.isInteger(value);
    case 'number':
      return typeof value === 'number' && Number.isFinite(value);
    case 'null':
      return value === null;
    default:
      return typeof value === type;
  }
}
