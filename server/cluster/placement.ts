/**
 * The placement table (`--placement FILE`, seed 000 figure 5: a static mapping over names): which node
 * an endpoint belongs on, by an operator's glob patterns. One rule a line, `PATTERN NODE`; `#` starts a
 * comment. A pattern (picomatch, case-insensitive) is matched against what the endpoint says it is: each
 * publication a proxy announces, as `NAME.ACCOUNT` (the form of a token's scopes), and the account alone
 * for any endpoint. The first line that matches wins; no line: least load decides (assignment.ts).
 */
import fs from 'node:fs';
import picomatch from 'picomatch';
import { ConfigError } from '../../protocol/errors';

export interface PlacementRule {
  pattern: string;
  node: string;
  /** 1-based, for the log line that says why an endpoint went where it went. */
  line: number;
  test: (subject: string) => boolean;
}

/** Parses the table's text; throws ConfigError naming the file, the line and what is wrong. */
export function parsePlacement(text: string, file: string): PlacementRule[] {
  const rules: PlacementRule[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.replace(/#.*/, '').trim();
    if (line === '') return;
    const where = `${file} line ${index + 1}`;
    const fields = line.split(/\s+/);
    if (fields.length !== 2)
      throw new ConfigError(`${where}: '${line}' is not 'PATTERN NODE' (for example 'db*.alice node-a')`);
    const [pattern, node] = fields as [string, string];
    let test: (subject: string) => boolean;
    try {
      test = picomatch(pattern, { dot: true, nocase: true });
    } catch (e) {
      throw new ConfigError(`${where}: '${pattern}' is not a glob (${e instanceof Error ? e.message : String(e)})`);
    }
    rules.push({ pattern, node, line: index + 1, test });
  });
  return rules;
}

/** Reads `--placement FILE`; a file that cannot be read is one line with the fix. */
export function loadPlacement(file: string): PlacementRule[] {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ConfigError(
      `cannot read --placement ${file} (${(e as NodeJS.ErrnoException).code ?? 'error'}): give a file of 'PATTERN NODE' lines`,
    );
  }
  return parsePlacement(text, file);
}

/** The first rule that places an endpoint of `account` announcing publications `names`, if any. */
export function place(
  rules: readonly PlacementRule[],
  account: string,
  names: readonly string[],
): { rule: PlacementRule; subject: string } | null {
  const subjects = [...names.map((name) => `${name}.${account}`), account];
  for (const rule of rules) {
    const subject = subjects.find((s) => rule.test(s));
    if (subject !== undefined) return { rule, subject };
  }
  return null;
}
