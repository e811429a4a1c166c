/**
 * Failures of the HTTP server as one type, and how each failure of the engine becomes one:
 * the status, a kind that each API names in its own words (openai.ts, anthropic.ts), the
 * request field it is about, and when to retry.
 */
import { CircuitOpenError, InvalidParamsError, MlxServingError, RequestTooLargeError, RpcError, StreamFailedError } from '../errors.js';

export type ErrorKind =
  | 'invalid_request'
  | 'authentication'
  | 'not_found'
  | 'too_large'
  | 'rate_limit'
  | 'unavailable'
  | 'server';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly kind: ErrorKind,
    message: string,
    /** The request field at fault, in the API's own path syntax (`messages[1].content`). */
    readonly param: string | null = null,
    /** Sent with the answer: Retry-After, Allow. */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

export function invalidParam(param: string, message: string): HttpError {
  return new HttpError(400, 'invalid_request', `${param}: ${message}`, param);
}

/**
 * Maps a runtime field path (`stop_sequences[2]`, `messages[0].content`) to the request's;
 * each API builds one from how it laid the request out.
 */
export type FieldNames = (wirePath: string) => string;

/** The runtime's -32006 answers without a hint; one second is what clients then wait. */
const DEFAULT_RETRY_SECONDS = 1;

/** What the client is told about a failure of the engine, the runtime or the server. */
export function httpErrorOf(error: unknown, fieldNames: FieldNames): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof InvalidParamsError) {
    const param = fieldNames(error.field);
    const detail = error.issues[0]?.message ?? error.message;
    return new HttpError(400, 'invalid_request', param ? `${param}: ${stripField(detail, error.field)}` : detail, param || null);
  }
  if (error instanceof RequestTooLargeError) return new HttpError(413, 'too_large', error.message);
  if (error instanceof CircuitOpenError) {
    return new HttpError(503, 'unavailable', error.message, null, retryAfter((error.retryAt - Date.now()) / 1000));
  }
  if (error instanceof RpcError || error instanceof StreamFailedError) {
    switch (error.code) {
      case 'ModelNotLoaded':
        return new HttpError(404, 'not_found', error.message, fieldNames('model_id'));
      case 'Overloaded':
        return new HttpError(429, 'rate_limit', error.message, null, retryAfter(retryAfterSeconds(error)));
      case 'GuidanceError':
        return new HttpError(400, 'invalid_request', error.message, fieldNames('guidance'));
      case 'TokenizerError':
        return new HttpError(400, 'invalid_request', error.message, fieldNames('messages'));
      default:
        return new HttpError(500, 'server', error.message);
    }
  }
  if (error instanceof MlxServingError) {
    // The runtime died, is restarting, timed out or the engine is shutting down.
    const unavailable = ['RuntimeExited', 'Timeout', 'Disposed'].includes(error.code);
    if (unavailable) return new HttpError(503, 'unavailable', error.message, null, retryAfter(DEFAULT_RETRY_SECONDS));
    return new HttpError(500, 'server', error.message);
  }
  return new HttpError(500, 'server', error instanceof Error ? error.message : String(error));
}

/** The Retry-After header: whole seconds, at least one. */
export function retryAfter(seconds: number): Record<string, string> {
  return { 'retry-after': String(Math.max(1, Math.ceil(seconds))) };
}

function retryAfterSeconds(error: RpcError | StreamFailedError): number {
  const ms = error.details?.['retry_after_ms'];
  return typeof ms === 'number' && ms > 0 ? ms / 1000 : DEFAULT_RETRY_SECONDS;
}

/** The runtime's messages often start with the field; the API's name replaces it. */
function stripField(message: string, field: string): string {
  return message.startsWith(`${field}: `) ? message.slice(field.length + 2) : message;
}

/** How one API shapes its errors: as a response body, and as an event inside a stream. */
export interface ErrorDialect {
  body(error: HttpError): unknown;
  streamEvent(error: HttpError): { event?: string; data: unknown };
}
