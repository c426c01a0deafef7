/**
 * How every program takes its options: one options object, completed once from the program's
 * `defaultConfig` and verified once, at construction, before anything starts (as yamux's
 * `verifyConfig`, and frp's `Complete()` then validation, do). The CLI, the environment and a config
 * file only fill the options object; no default is applied where a value is used.
 */
import { ConfigError } from '../protocol/errors';

/** Options as a caller gives them: the `Required` fields of `Config`, and any of the rest. */
export type OptionsOf<Config, Required extends keyof Config> = Pick<Config, Required> & Partial<Omit<Config, Required>>;

/**
 * The whole Complete-then-verify step: `options` completed from `defaults`, then passed to `verify`,
 * which throws ConfigError naming what is wrong.
 */
export function configure<Defaults extends object, Options extends object>(
  defaults: Defaults,
  options: Options,
  verify: (config: Defaults & Options) => void,
): Defaults & Options {
  const config = complete(defaults, options);
  verify(config);
  return config;
}

/**
 * `defaults` overlaid with every field `options` sets: the Complete() step. A field given as `undefined`
 * counts as absent, so its default applies (a flag or variable that is not set gives `undefined`).
 */
export function complete<Defaults extends object, Options extends object>(
  defaults: Defaults,
  options: Options,
): Defaults & Options {
  const config: Record<string, unknown> = Object.fromEntries(Object.entries(defaults));
  for (const [key, value] of Object.entries(options)) if (value !== undefined) config[key] = value;
  return config as Defaults & Options;
}

/**
 * Throws ConfigError unless `ms` is a duration of at most `max` milliseconds, and above zero unless
 * `zero` allows it; `what` names its flag (whose unit is seconds).
 */
export function verifyMs(what: string, ms: number, max: number, zero: 'zero allowed' | 'above zero'): void {
  const low = zero === 'zero allowed' ? ms >= 0 : ms > 0;
  if (!(Number.isFinite(ms) && low && ms <= max)) {
    throw new ConfigError(`${what} '${ms / 1000}' must be a number of seconds between 0 and ${max / 1000}`);
  }
}

/** Throws ConfigError unless `n` is a whole number of at least 1; `what` names the setting. */
export function verifyCount(what: string, n: number): void {
  if (!(Number.isSafeInteger(n) && n >= 1))
    throw new ConfigError(`${what} must be a whole number of at least 1, not ${n}`);
}
