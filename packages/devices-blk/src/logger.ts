/**
 * A tiny levelled logger writing one line per message to a stream (stderr by default).
 * @module
 */

/** Log levels, most severe first. */
export const LOG_LEVELS = ['error', 'warn', 'info', 'debug'] as const;
/** One of {@link LOG_LEVELS}. */
export type LogLevel = (typeof LOG_LEVELS)[number];

/** What the device and the CLI log through. */
export interface Logger {
  error(msg: string): void;
  warn(msg: string): void;
  info(msg: string): void;
  debug(msg: string): void;
}

/** A logger that drops everything (the default of the library parts). */
export const silentLogger: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/** True when `s` names a level. */
export function isLogLevel(s: string): s is LogLevel {
  return (LOG_LEVELS as readonly string[]).includes(s);
}

/** Logger printing `<iso time> <level> <prefix>: msg` lines at `level` and more severe. */
export function createLogger(level: LogLevel, prefix: string, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const max = LOG_LEVELS.indexOf(level);
  const make = (l: LogLevel) => (LOG_LEVELS.indexOf(l) <= max
    ? (msg: string) => write(`${new Date().toISOString()} ${l} ${prefix}: ${msg}\n`)
    : () => {});
  return { error: make('error'), warn: make('warn'), info: make('info'), debug: make('debug') };
}
