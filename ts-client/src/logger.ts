/** Where the client's own messages and the runtime's stderr go. `console` fits. */
export interface Logger {
  debug(message: string): void;
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';

const ORDER: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3, silent: 4 };

/** A logger writing to stderr from `level` up (default: env MLX_SERVING_LOG or 'warn'). */
export function consoleLogger(level: LogLevel = defaultLevel()): Logger {
  const at = (l: LogLevel) => (message: string) => {
    if (ORDER[l] >= ORDER[level]) console.error(`[mlx-serving] ${message}`);
  };
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

function defaultLevel(): LogLevel {
  const env = process.env['MLX_SERVING_LOG'];
  return env && env in ORDER ? (env as LogLevel) : 'warn';
}

const RUNTIME_LEVEL = /\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\]/;

/**
 * The client's logger plus `runtime(line)`: a runtime stderr line logged at the level its
 * `[LEVEL]` tag names. Untagged lines (tracebacks) continue the previous tagged line.
 */
export class ClientLogger implements Logger {
  private runtimeLevel: keyof Logger = 'info';

  constructor(private readonly target: Logger) {}

  debug(message: string): void {
    this.target.debug(message);
  }
  info(message: string): void {
    this.target.info(message);
  }
  warn(message: string): void {
    this.target.warn(message);
  }
  error(message: string): void {
    this.target.error(message);
  }

  runtime(line: string): void {
    const tag = RUNTIME_LEVEL.exec(line)?.[1];
    if (tag) {
      this.runtimeLevel =
        tag === 'DEBUG' ? 'debug' : tag === 'INFO' ? 'info' : tag === 'WARNING' ? 'warn' : 'error';
    }
    this.target[this.runtimeLevel](`[runtime] ${line}`);
  }
}
