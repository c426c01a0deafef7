/**
 * `--config FILE`: a TOML file with the same keys as a program's flags (`listen = "0.0.0.0:7443"`,
 * `data-dir = "/var/lib/underpass"`, `publish = ["redis=127.0.0.1:6379"]`), read with smol-toml.
 * A flag given on the command line wins, then the environment, then the file, then the default: the
 * file's values enter commander as values of source `config` before the command line is parsed, and
 * commander ranks sources that way itself. A key that is no flag of the program, or a value of the
 * wrong type, is refused in one line naming the file, the line and the key.
 *
 * The proxy's publications may also be tables, with options of their own:
 *
 *     [publish.redis]
 *     target = "127.0.0.1:6379"
 *     connect-timeout = 5        # seconds, for this publication's target only
 *     proxy-protocol = "v2"      # tell the target who the client is
 */
import fs from 'node:fs';
import type { Command, Option } from 'commander';
// smol-toml is an ES module only: loaded with import(), and only when a file is given.
import { ConfigError } from '../protocol/errors';

/** Lists a file filled in: a command-line flag of the same kind replaces them, never adds to them. */
const fromFile = new WeakSet<string[]>();

/** What a config file carries beyond plain flags: per-publication options of the proxy. */
export interface FileExtras {
  /** Publication name → connect timeout (ms). */
  connectTimeouts: Map<string, number>;
  /** Publication name → the PROXY protocol version its target gets. */
  proxyProtocols: Map<string, 'v1' | 'v2'>;
}

/** The value of `--config FILE` (or `--config=FILE`) in `argv`, without parsing the rest. */
export function tryConfigPath(argv: readonly string[]): string | null {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') return null;
    if (arg === '--config') return argv[i + 1] ?? null;
    if (arg.startsWith('--config=')) return arg.slice('--config='.length);
  }
  return null;
}

/** A repeatable flag's parser: a command-line value after file values replaces them. */
export function collect(value: string, previous: string[]): string[] {
  return fromFile.has(previous) ? [value] : [...previous, value];
}

/** The line a key stands on in `text` (inside `table`, a dotted path, '' for the top), or 0. */
export function lineOfKey(text: string, table: string, key: string): number {
  let current = '';
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?/.exec(line);
    if (header) {
      current = header[1]!.replace(/\s*\.\s*/g, '.').replace(/"/g, '');
      if (`${current}` === (table === '' ? key : `${table}.${key}`)) return i + 1;
      continue;
    }
    const assigned = /^("?)([A-Za-z0-9_.-]+)\1\s*=/.exec(line);
    if (assigned && current === table && assigned[2] === key) return i + 1;
  }
  return 0;
}

function where(file: string, text: string, table: string, key: string): string {
  const line = lineOfKey(text, table, key);
  return line > 0 ? `${file}:${line}` : file;
}

/** Reads and parses the file; throws ConfigError with the file, the line and what is wrong. */
async function readToml(file: string): Promise<{ text: string; data: Record<string, unknown> }> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read --config ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  const { parse, TomlError } = await import('smol-toml');
  try {
    return { text, data: parse(text) };
  } catch (e) {
    if (e instanceof TomlError)
      throw new ConfigError(
        `${file}:${e.line}: not TOML: ${e.message.split('\n')[0]!.replace(/^Invalid TOML document: /, '')}`,
      );
    throw e;
  }
}

function optionFor(command: Command, key: string): Option | undefined {
  return command.options.find((o) => o.long === `--${key}`);
}

/**
 * Applies FILE to `command` as values of source `config`. Call before the command line is parsed.
 * Returns what the file holds beyond flags.
 */
export async function applyConfigFile(command: Command, file: string): Promise<FileExtras> {
  const { text, data } = await readToml(file);
  const extras: FileExtras = { connectTimeouts: new Map(), proxyProtocols: new Map() };
  const name = command.name();
  for (const [key, raw] of Object.entries(data)) {
    const at = where(file, text, '', key);
    if (key === 'config') throw new ConfigError(`${at}: 'config' cannot name another file`);
    if (name === 'proxy' && key === 'publish' && raw !== null && typeof raw === 'object' && !Array.isArray(raw)) {
      setValue(command, 'publish', publicationTables(raw as Record<string, unknown>, file, text, extras), at);
      continue;
    }
    const option = optionFor(command, key);
    if (option === undefined)
      throw new ConfigError(`${at}: unknown key '${key}': 'underpass ${name}' has no flag --${key} (see --help)`);
    setValue(command, key, valueOf(option, raw, at, key), at);
  }
  return extras;
}

/** `[publish.NAME]` tables → `NAME=HOST:PORT` values, and their own options into `extras`. */
function publicationTables(tables: Record<string, unknown>, file: string, text: string, extras: FileExtras): string[] {
  const specs: string[] = [];
  for (const [publication, table] of Object.entries(tables)) {
    const at = where(file, text, 'publish', publication);
    if (table === null || typeof table !== 'object' || Array.isArray(table))
      throw new ConfigError(`${at}: publish.${publication} must be a table with target = "HOST:PORT"`);
    for (const [key, value] of Object.entries(table as Record<string, unknown>)) {
      const keyAt = where(file, text, `publish.${publication}`, key);
      if (key === 'target') {
        if (typeof value !== 'string') throw new ConfigError(`${keyAt}: target must be a string "HOST:PORT"`);
        specs.push(`${publication}=${value}`);
      } else if (key === 'connect-timeout') {
        if (typeof value !== 'number' || !(value > 0 && value <= 3600))
          throw new ConfigError(`${keyAt}: connect-timeout must be a number of seconds between 0 and 3600`);
        extras.connectTimeouts.set(publication, value * 1000);
      } else if (key === 'proxy-protocol') {
        if (value !== 'v1' && value !== 'v2') throw new ConfigError(`${keyAt}: proxy-protocol must be "v1" or "v2"`);
        extras.proxyProtocols.set(publication, value);
      } else {
        throw new ConfigError(
          `${keyAt}: unknown key '${key}' in publish.${publication} (a publication takes target, connect-timeout and proxy-protocol)`,
        );
      }
    }
    if (!specs.some((s) => s.startsWith(`${publication}=`)))
      throw new ConfigError(`${at}: publish.${publication} has no target = "HOST:PORT"`);
  }
  return specs;
}

/** A TOML value as the option takes it, run through the option's own parser so checks stay in one place. */
function valueOf(option: Option, raw: unknown, at: string, key: string): unknown {
  const takesValue = option.required || option.optional;
  if (!takesValue) {
    if (typeof raw !== 'boolean') throw new ConfigError(`${at}: ${key} is a switch: write ${key} = true or false`);
    return raw;
  }
  const parse = (value: unknown, previous: unknown): unknown => {
    if (typeof value !== 'string' && typeof value !== 'number')
      throw new ConfigError(`${at}: ${key} takes a string or a number, not ${JSON.stringify(value)}`);
    const text = String(value);
    if (option.argChoices !== undefined && !option.argChoices.includes(text))
      throw new ConfigError(`${at}: ${key} = '${text}' is not one of ${option.argChoices.join(', ')}`);
    try {
      return option.parseArg !== undefined ? option.parseArg(text, previous) : text;
    } catch (e) {
      // The option's own check, with the file's place in front of it.
      throw new ConfigError(`${at}: ${e instanceof Error ? e.message : String(e)}`);
    }
  };
  if (Array.isArray(raw)) {
    if (!Array.isArray(option.defaultValue)) throw new ConfigError(`${at}: ${key} takes one value, not a list`);
    let list: unknown = [];
    for (const item of raw) list = parse(item, list);
    return list;
  }
  return parse(raw, Array.isArray(option.defaultValue) ? [] : undefined);
}

function setValue(command: Command, key: string, value: unknown, at: string): void {
  const option = optionFor(command, key);
  if (option === undefined) throw new ConfigError(`${at}: unknown key '${key}'`);
  if (Array.isArray(value)) fromFile.add(value as string[]);
  command.setOptionValueWithSource(option.attributeName(), value, 'config');
}
