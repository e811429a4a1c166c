/**
 * Every failure the client reports is an MlxServingError with a stable string `code`, so
 * callers can branch on `err.code` or `instanceof` without parsing messages.
 */
import type { ErrorObject, ValidationIssue } from './types/index.js';
import { RPC_CODE_NAMES } from './types/index.js';

export type { ValidationIssue };

export class MlxServingError extends Error {
  readonly code: string;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details;
  }
}

/**
 * A JSON-RPC error answered by the runtime. `rpcCode` is the wire code; `code` its name
 * (PROTOCOL.md "Errors").
 */
export class RpcError extends MlxServingError {
  readonly rpcCode: number;
  readonly data: unknown;

  constructor(rpcCode: number, message: string, data?: unknown, code = RPC_CODE_NAMES[rpcCode] ?? 'RuntimeError') {
    super(code, message, { details: isRecord(data) ? data : undefined });
    this.rpcCode = rpcCode;
    this.data = data ?? null;
  }

  /** For `Overloaded` (-32006): about how long to wait before sending the request again
   * (`error.data.retry_after_ms`), where the runtime knows. */
  get retryAfterMs(): number | undefined {
    const value = isRecord(this.data) ? this.data['retry_after_ms'] : undefined;
    return typeof value === 'number' ? value : undefined;
  }
}

/**
 * Invalid params, found either by the client before sending (`source: 'client'`, checked
 * against the same schema the runtime validates with) or by the runtime (-32602). `field`
 * is the dotted path of the first offending field, `issues` lists every problem.
 */
export class InvalidParamsError extends RpcError {
  readonly field: string;
  readonly issues: ValidationIssue[];
  readonly source: 'client' | 'runtime';

  constructor(message: string, field: string, issues: ValidationIssue[], source: 'client' | 'runtime') {
    super(-32602, message, { type: 'ValidationError', field, issues });
    this.field = field;
    this.issues = issues;
    this.source = source;
  }
}

/** Names of the wire's error codes (PROTOCOL.md "Errors"), generated from the runtime's. */
export { RPC_CODE_NAMES };

/** Builds the error for an `error` object the runtime answered. */
export function rpcErrorFrom(error: ErrorObject): RpcError {
  const data = error.data;
  if (error.code === -32602 && data && data.type === 'ValidationError') {
    return new InvalidParamsError(error.message, data.field, data.issues, 'runtime');
  }
  return new RpcError(error.code, error.message, data);
}

/**
 * The runtime sent something the protocol does not allow: a line that is not JSON, a
 * frame or result that does not match the schema, an answer to an unknown request.
 */
export class ProtocolError extends MlxServingError {
  readonly issues: ValidationIssue[];
  readonly frame: unknown;

  constructor(message: string, options: { issues?: ValidationIssue[]; frame?: unknown; cause?: unknown } = {}) {
    const issues = options.issues ?? [];
    const listed = issues.length ? ': ' + issues.map((i) => `${i.path || '(root)'} ${i.message}`).join('; ') : '';
    super('ProtocolError', message + listed, { cause: options.cause, details: { issues } });
    this.issues = issues;
    this.frame = options.frame;
  }
}

/** The runtime process ended (crashed, was killed, or failed to start) while work was pending. */
export class RuntimeExitedError extends MlxServingError {
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  /** The last lines the runtime wrote to stderr: usually the reason. */
  readonly stderrTail: string[];

  constructor(exitCode: number | null, signal: NodeJS.Signals | null, stderrTail: string[], cause?: unknown) {
    const how =
      cause instanceof Error && exitCode === null && signal === null
        ? `could not be started: ${cause.message}`
        : signal
          ? `killed by ${signal}`
          : `exited with code ${exitCode}`;
    const tail = stderrTail.length ? `\n--- runtime stderr (last lines) ---\n${stderrTail.join('\n')}` : '';
    super('RuntimeExited', `mlx-serving runtime ${how}${tail}`, { cause, details: { exitCode, signal } });
    this.exitCode = exitCode;
    this.signal = signal;
    this.stderrTail = stderrTail;
  }
}

export class RequestTimeoutError extends MlxServingError {
  constructor(readonly operation: string, readonly timeoutMs: number) {
    super('Timeout', `${operation} timed out after ${timeoutMs} ms`, { details: { operation, timeoutMs } });
  }
}

/** A request whose JSON is longer than the runtime accepts (`limits.max_frame_bytes`); not sent. */
export class RequestTooLargeError extends MlxServingError {
  constructor(readonly method: string, readonly bytes: number, readonly limitBytes: number) {
    super('RequestTooLarge', `${method} request is ${bytes} bytes of JSON, over the runtime's max_frame_bytes (${limitBytes})`, {
      details: { method, bytes, limitBytes },
    });
  }
}

/** The runtime is not reading its input: more than `limitBytes` of requests already wait in
 * the pipe to it. Not sent; retry once it catches up. */
export class RuntimeBackloggedError extends MlxServingError {
  constructor(readonly method: string, readonly bufferedBytes: number, readonly limitBytes: number) {
    super('Backlogged', `${method} not sent: ${bufferedBytes} bytes of requests wait for the runtime to read them (limit ${limitBytes})`, {
      details: { method, bufferedBytes, limitBytes },
    });
  }
}

/** The runtime crashed too often in a row; calls fail fast until `retryAt`. */
export class CircuitOpenError extends MlxServingError {
  constructor(readonly retryAt: number, readonly lastError: Error | undefined) {
    super('CircuitOpen', `mlx-serving runtime keeps crashing; not restarting before ${new Date(retryAt).toISOString()}`, {
      cause: lastError,
      details: { retryAt },
    });
  }
}

export class EngineDisposedError extends MlxServingError {
  constructor() {
    super('Disposed', 'the engine has been disposed');
  }
}

/** A generation stream ended with the runtime's `stream.event` error. */
export class StreamFailedError extends MlxServingError {
  constructor(readonly streamId: string, message: string, readonly rpcCode: number | null) {
    super(rpcCode !== null ? (RPC_CODE_NAMES[rpcCode] ?? 'GenerationError') : 'GenerationError', message, {
      details: { streamId, rpcCode },
    });
  }
}

/**
 * A stream's consumer fell behind: more than `maxUnreadChunks` chunks it had not read were
 * waiting, so the client cancelled the stream on the runtime instead of buffering it
 * without bound. Thrown from the iteration after the chunks that were waiting.
 */
export class SlowConsumerError extends MlxServingError {
  constructor(readonly streamId: string, readonly maxUnreadChunks: number) {
    super(
      'SlowConsumer',
      `stream ${streamId} cancelled: its consumer fell more than ${maxUnreadChunks} chunks behind (maxUnreadChunks)`,
      { details: { streamId, maxUnreadChunks } },
    );
  }
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
