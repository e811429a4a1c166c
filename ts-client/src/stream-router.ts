/**
 * The live streams by id, and the runtime's notifications routed to them: chunks, tool
 * calls, stats and final events to their Generation (restarting its idle timer), progress
 * and runtime events to the engine's events. A notification that breaks its schema fails
 * the streams it names.
 */
import { ProtocolError, RequestTimeoutError, StreamFailedError } from './errors.js';
import { emitCompleted, reportError, type EngineEmitter } from './events.js';
import type { Generation } from './generator.js';
import type { ClientLogger } from './logger.js';
import type { RuntimeEvent } from './metrics.js';
import type {
  RuntimeProgress,
  StreamChunk,
  StreamChunkBatch,
  StreamCompleted,
  StreamFailed,
  StreamStats,
  StreamToolCall,
} from './types/index.js';

export class StreamRouter {
  private readonly streams = new Map<string, Generation>();
  /** Restarts a stream's idle timer, by stream id (only with an idle timeout). */
  private readonly idleTimers = new Map<string, () => void>();

  constructor(
    private readonly events: EngineEmitter,
    private readonly logger: ClientLogger,
    /** Fail a stream that receives nothing for this long (0: no limit). */
    private readonly idleTimeoutMs: number,
  ) {}

  has(streamId: string): boolean {
    return this.streams.has(streamId);
  }

  /** Routes the stream's notifications to it (and watches it for idleness) until it ends. */
  add(generation: Generation): void {
    const { streamId } = generation;
    this.streams.set(streamId, generation);
    const stopIdleWatch = this.watchIdle(generation);
    generation.onEnd(() => {
      stopIdleWatch();
      if (this.streams.get(streamId) === generation) this.streams.delete(streamId);
    });
  }

  /** Fails every live stream with `error` (the runtime died, the engine was disposed). */
  failAll(error: unknown): void {
    for (const generation of [...this.streams.values()]) generation.fail(error);
    this.streams.clear();
  }

  notification(method: string, params: unknown): void {
    switch (method) {
      case 'stream.chunk': {
        const chunk = params as StreamChunk | StreamChunkBatch;
        const chunks = 'tokens' in chunk ? chunk.tokens : [chunk];
        for (const single of chunks) this.stream(single.stream_id)?.pushChunk(single);
        return;
      }
      case 'stream.tool_call': {
        const call = params as StreamToolCall;
        this.stream(call.stream_id)?.pushToolCall(call);
        return;
      }
      case 'stream.stats': {
        const stats = params as StreamStats;
        this.stream(stats.stream_id)?.pushStats(stats);
        return;
      }
      case 'stream.event': {
        const event = params as StreamCompleted | StreamFailed;
        const generation = this.stream(event.stream_id);
        if (!generation) return;
        if (event.event === 'completed') {
          const end = generation.complete(event);
          if (end) emitCompleted(this.events, generation, end);
        } else {
          const error = new StreamFailedError(event.stream_id, event.error, event.error_code ?? null);
          generation.fail(error);
          this.events.emit('generationFailed', { streamId: event.stream_id, modelId: generation.modelId, error });
        }
        return;
      }
      case 'runtime.progress':
        this.events.emit('progress', params as RuntimeProgress);
        return;
      case 'runtime.event': {
        const event = params as RuntimeEvent;
        if (event.event === 'model_unloaded' && (event.reason === 'evicted' || event.reason === 'expired')) {
          this.events.emit('modelUnloaded', { model_id: event.model_id, reason: event.reason, detail: event.detail ?? null });
        }
        this.events.emit('runtimeEvent', event);
        return;
      }
      default:
        this.logger.debug(`unhandled notification ${method}`);
    }
  }

  /** A notification that breaks its schema fails its stream, when it names one. */
  invalidNotification(params: unknown, error: ProtocolError): void {
    const streamIds = new Set<string>();
    if (typeof params === 'object' && params !== null) {
      const record = params as Record<string, unknown>;
      if (typeof record['stream_id'] === 'string') streamIds.add(record['stream_id']);
      if (Array.isArray(record['tokens'])) {
        for (const t of record['tokens'] as unknown[]) {
          const id = (t as Record<string, unknown> | null)?.['stream_id'];
          if (typeof id === 'string') streamIds.add(id);
        }
      }
    }
    const affected = [...streamIds].map((id) => this.streams.get(id)).filter((g): g is Generation => !!g);
    if (!affected.length) {
      reportError(this.events, this.logger, error);
      return;
    }
    // The runtime still runs them; stop them so they do not hold slots.
    for (const generation of affected) generation.fail(error, { cancelOnRuntime: true });
  }

  /** The live stream of an id (its idle timer restarted), or undefined. */
  private stream(streamId: string): Generation | undefined {
    const generation = this.streams.get(streamId);
    if (generation) this.idleTimers.get(streamId)?.();
    else this.logger.debug(`notification for unknown stream ${streamId}`);
    return generation;
  }

  /** Fails the stream when the runtime sends nothing for it for `idleTimeoutMs`. */
  private watchIdle(generation: Generation): () => void {
    const ms = this.idleTimeoutMs;
    if (!ms) return () => {};
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        generation.fail(new RequestTimeoutError(`stream ${generation.streamId} (idle)`, ms), { cancelOnRuntime: true });
      }, ms);
    };
    arm();
    this.idleTimers.set(generation.streamId, arm);
    return () => {
      clearTimeout(timer);
      this.idleTimers.delete(generation.streamId);
    };
  }
}
