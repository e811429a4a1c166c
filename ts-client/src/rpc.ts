/**
 * JSON-RPC over a line reader and writer (a runtime process's stdio, or an in-memory pair in
 * tests): request ids, per-request timeouts, answers matched by id (in any order),
 * everything the runtime sends validated against the schemas.
 */
import { onAbort } from './abort.js';
import type { LineReader, LineWriter } from './lines.js';
import type { ClientLogger } from './logger.js';
import type { ErrorFrame, MethodName, MethodParams, MethodResult } from './types/index.js';
import { ProtocolError, RequestTimeoutError, RequestTooLargeError, RuntimeBackloggedError, rpcErrorFrom } from './errors.js';
import type { ProtocolValidator } from './validation.js';

export interface RequestOptions {
  /** Fails the request with RequestTimeoutError after this long (no timeout when 0). */
  timeoutMs?: number;
  /** Rejects the request with the signal's reason when aborted. */
  signal?: AbortSignal | undefined;
  /** Called with the result that arrives after the request timed out or was aborted: what
   * it started on the runtime (a stream) still runs there and nobody else will stop it. */
  onLateResult?: ((result: unknown) => void) | undefined;
}

export interface RpcHandlers {
  /** A notification whose params match its schema. */
  notification(method: string, params: unknown): void;
  /** A notification of a known method whose params do not match. */
  invalidNotification(method: string, params: unknown, error: ProtocolError): void;
  /** A violation that belongs to no request (a line that is not JSON, an unknown id…). */
  protocolError(error: ProtocolError): void;
}

interface Pending {
  method: MethodName;
  resolve(value: unknown): void;
  reject(error: Error): void;
}

/** Remembered so that their late answers are not mistaken for protocol violations (and a
 * late result still reaches its request's onLateResult). */
const ABANDONED_IDS_KEPT = 1024;

/** Twice the runtime's default frame limit: one large request can always wait its turn. */
export const DEFAULT_MAX_BUFFERED_BYTES = 32 * 1024 * 1024;

export class RpcConnection {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  /** Abandoned request ids, each with its late-result callback if it has one. */
  private readonly abandoned = new Map<number, ((result: unknown) => void) | undefined>();
  private closedWith: Error | undefined;
  /**
   * The runtime's `limits.max_frame_bytes`, once its `runtime/info` told it. A longer line
   * is dropped by the runtime with an answer of id null, which names no request: the call
   * would only ever end by its timeout, so it is refused here instead.
   */
  maxFrameBytes: number | undefined;
  /** Requests written but not yet read by the runtime, in bytes, beyond which new ones
   * fail with RuntimeBackloggedError instead of queueing in this process. */
  maxBufferedBytes = DEFAULT_MAX_BUFFERED_BYTES;

  constructor(
    reader: LineReader,
    private readonly writer: LineWriter,
    private readonly validator: ProtocolValidator,
    private readonly logger: ClientLogger,
    private readonly handlers: RpcHandlers,
  ) {
    reader.listen({
      line: (line) => this.onLine(line),
      oversize: (size, head) => this.onOversize(size, head),
    });
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  request<M extends MethodName>(method: M, params?: MethodParams<M>, options: RequestOptions = {}): Promise<MethodResult<M>> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    const { timeoutMs = 0, signal, onLateResult } = options;
    if (signal?.aborted) return Promise.reject(signal.reason);
    const id = this.nextId++;
    const frame: Record<string, unknown> = { jsonrpc: '2.0', method, id };
    if (params !== undefined) frame['params'] = params;
    const line = JSON.stringify(frame);
    // The limit is on UTF-8 bytes, which a string's length (UTF-16 units) undercounts; a
    // unit is at most 3 bytes, so only lines over a third of the limit need counting.
    if (this.maxFrameBytes !== undefined && line.length > this.maxFrameBytes / 3) {
      const bytes = Buffer.byteLength(line);
      if (bytes > this.maxFrameBytes) return Promise.reject(new RequestTooLargeError(method, bytes, this.maxFrameBytes));
    }
    // A runtime that stops reading (stopped, or stuck) must not grow this process without
    // bound: the writer keeps whatever the pipe does not take. `cancel` still goes through,
    // so streams can always be ended.
    const buffered = this.writer.bufferedBytes;
    if (buffered > this.maxBufferedBytes && method !== 'cancel') {
      return Promise.reject(new RuntimeBackloggedError(method, buffered, this.maxBufferedBytes));
    }
    return new Promise<MethodResult<M>>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const unsubscribe = signal
        ? onAbort(signal, () => {
            this.abandon(id, onLateResult);
            settle();
            reject(signal.reason);
          })
        : undefined;
      const settle = () => {
        clearTimeout(timer);
        unsubscribe?.();
      };
      this.pending.set(id, {
        method,
        resolve: (value) => {
          settle();
          resolve(value as MethodResult<M>);
        },
        reject: (error) => {
          settle();
          reject(error);
        },
      });
      if (timeoutMs > 0) {
        timer = setTimeout(() => {
          this.abandon(id, onLateResult);
          settle();
          reject(new RequestTimeoutError(method, timeoutMs));
        }, timeoutMs);
      }
      // A dead peer is reported through close() by its owner (the supervisor), at once.
      this.writer.write(line);
    });
  }

  /** Rejects every pending request with `error`, and every later one. */
  close(error: Error): void {
    if (this.closedWith) return;
    this.closedWith = error;
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const p of pending) p.reject(error);
  }

  private abandon(id: number, onLateResult: ((result: unknown) => void) | undefined): void {
    this.pending.delete(id);
    this.abandoned.set(id, onLateResult);
    if (this.abandoned.size > ABANDONED_IDS_KEPT) {
      this.abandoned.delete(this.abandoned.keys().next().value!);
    }
  }

  private onLine(line: string): void {
    if (!line.trim()) return;
    let frame: unknown;
    try {
      frame = JSON.parse(line);
    } catch (cause) {
      this.handlers.protocolError(
        new ProtocolError(`runtime wrote a stdout line that is not JSON: ${excerpt(line)}`, { frame: line, cause }),
      );
      return;
    }
    if (typeof frame !== 'object' || frame === null || Array.isArray(frame)) {
      // This client never sends batches, so an array is as wrong as a scalar.
      this.handlers.protocolError(new ProtocolError(`runtime wrote a frame that is not an object: ${excerpt(line)}`, { frame }));
      return;
    }
    const record = frame as Record<string, unknown>;
    if ('id' in record) this.onAnswer(record);
    else if ('method' in record) this.onNotification(record);
    else this.handlers.protocolError(new ProtocolError(`runtime wrote a frame with neither id nor method: ${excerpt(line)}`, { frame }));
  }

  private onNotification(frame: Record<string, unknown>): void {
    const envelope = this.validator.frame('notification', frame);
    if (envelope.length) {
      this.handlers.protocolError(new ProtocolError('invalid notification frame', { issues: envelope, frame }));
      return;
    }
    const method = frame['method'] as string;
    const issues = this.validator.notification(method, frame['params']);
    if (issues === null) {
      this.logger.debug(`ignoring notification ${method}, which this client does not know`);
    } else if (issues.length) {
      this.handlers.invalidNotification(
        method,
        frame['params'],
        new ProtocolError(`invalid ${method} notification`, { issues, frame }),
      );
    } else {
      this.handlers.notification(method, frame['params']);
    }
  }

  private onAnswer(frame: Record<string, unknown>): void {
    const id = frame['id'];
    const pending = typeof id === 'number' ? this.pending.get(id) : undefined;
    const isError = 'error' in frame;
    const envelope = this.validator.frame(isError ? 'error' : 'result', frame);
    if (!pending) {
      if (typeof id === 'number' && this.abandoned.has(id)) {
        const onLateResult = this.abandoned.get(id);
        this.abandoned.delete(id);
        this.logger.debug(`late answer to request ${id}, which timed out or was aborted`);
        if (!isError && !envelope.length) onLateResult?.(frame['result']);
      } else if (isError && !envelope.length) {
        const error = (frame as unknown as ErrorFrame).error;
        this.handlers.protocolError(
          new ProtocolError(`runtime rejected a frame (id ${JSON.stringify(id)}): ${error.code} ${error.message}`, { frame }),
        );
      } else {
        this.handlers.protocolError(new ProtocolError(`answer to unknown request id ${JSON.stringify(id)}`, { frame }));
      }
      return;
    }
    this.pending.delete(id as number);
    if (envelope.length) {
      pending.reject(new ProtocolError(`invalid answer to ${pending.method}`, { issues: envelope, frame }));
      return;
    }
    if (isError) {
      pending.reject(rpcErrorFrom((frame as unknown as ErrorFrame).error));
      return;
    }
    const result = frame['result'];
    const issues = this.validator.result(pending.method, result);
    if (issues.length) {
      pending.reject(new ProtocolError(`invalid ${pending.method} result`, { issues, frame }));
      return;
    }
    pending.resolve(result);
  }

  /** A line over the size limit: its head still names the request it answers, if any. */
  private onOversize(size: number, head: string): void {
    const match = /^\s*\{\s*"jsonrpc"\s*:\s*"2\.0"\s*,\s*"id"\s*:\s*(\d+)\s*,/.exec(head);
    const id = match ? Number(match[1]) : undefined;
    const pending = id !== undefined ? this.pending.get(id) : undefined;
    const error = new ProtocolError(
      `runtime wrote a stdout line of ${size} bytes, over the client's maxLineBytes; raise it to accept such answers`,
      { frame: head },
    );
    if (pending && id !== undefined) {
      this.pending.delete(id);
      pending.reject(error);
    } else {
      this.handlers.protocolError(error);
    }
  }
}

function excerpt(text: string, max = 200): string {
  return text.length > max ? JSON.stringify(text.slice(0, max)) + '…' : JSON.stringify(text);
}
