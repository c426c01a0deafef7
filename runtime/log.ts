/**
 * Logs go to stderr through winston: readable lines by default, one JSON object per line with
 * `--log-format json`. stdout stays free for a program's own output (the proxy's `--json` events).
 */
import winston from 'winston';

export type LogFormat = 'text' | 'json';
export type Logger = winston.Logger;

export function createLogger(
  component: string,
  format: LogFormat = 'text',
  level = process.env.UNDERPASS_LOG_LEVEL ?? 'info',
): Logger {
  const text = winston.format.printf((info) => {
    const {
      level: lvl,
      message,
      timestamp,
      component: comp,
      ...rest
    } = info as Record<string, unknown> & { level: string; message: unknown };
    const extra =
      Object.keys(rest).length > 0
        ? ' ' +
          Object.entries(rest)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ')
        : '';
    return `${String(timestamp)} ${String(comp)} ${lvl}: ${String(message)}${extra}`;
  });
  const logger = winston.createLogger({
    level,
    defaultMeta: { component },
    format:
      format === 'json'
        ? winston.format.combine(winston.format.timestamp(), winston.format.json())
        : winston.format.combine(winston.format.timestamp({ format: 'HH:mm:ss.SSS' }), text),
    transports: [
      new winston.transports.Console({ stderrLevels: ['error', 'warn', 'info', 'http', 'verbose', 'debug', 'silly'] }),
    ],
  });
  // winston builds and formats a record before its transport drops it for its level: ~0.1 ms per call,
  // paid on every tunnel by the per-tunnel debug lines. The level is fixed for a program's life, so
  // the methods of the levels it leaves out become no-ops.
  for (const name of Object.keys(winston.config.npm.levels)) {
    if (!logger.isLevelEnabled(name)) Object.assign(logger, { [name]: (): Logger => logger });
  }
  return logger;
}
