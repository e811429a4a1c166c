/**
 * What the engine reports besides the results of calls: its typed events, and the two
 * reports that more than one module makes (a finished stream, a failure no call owns).
 */
import type { EventEmitter } from 'node:events';

import type { FinishReason, Generation, StatsChunk } from './generator.js';
import type { ClientLogger } from './logger.js';
import type { RuntimeEvent } from './metrics.js';
import type { RuntimeStatus } from './supervisor.js';
import type { LoadModelResult, RuntimeProgress, StreamStats } from './types/index.js';

export interface EngineEvents {
  modelLoaded: [model: LoadModelResult];
  /** `reason`: `unloaded` (unloadModel), `runtime-exited` (the runtime died and the model
   * is not reloaded), or the runtime's memory budget: `evicted` (another load or a stream
   * needed the room) and `expired` (unused for its keep_alive_s). An evicted or expired
   * model stays known: the runtime loads it again when a request names it (`detail` says
   * why it went, `runtimeState()` lists it with `resident: false`). */
  modelUnloaded: [
    event: { model_id: string; reason: 'unloaded' | 'runtime-exited' | 'evicted' | 'expired'; detail?: string | null },
  ];
  generationStarted: [event: { streamId: string; modelId: string }];
  generationCompleted: [event: { streamId: string; modelId: string; finishReason: FinishReason; stats: StreamStats }];
  generationFailed: [event: { streamId: string; modelId: string; error: unknown }];
  runtimeStatus: [status: RuntimeStatus];
  progress: [progress: RuntimeProgress];
  /** The runtime's own `runtime.event` notifications (model loaded/unloaded, generation
   * started/completed, error, runtime status), as sent; the events above are the client's. */
  runtimeEvent: [event: RuntimeEvent];
  /** Failures that belong to no call: runtime crashes, protocol violations, failed reloads.
   * Without a listener they are logged instead (an unhandled 'error' would throw). */
  error: [error: Error];
}

/** Where the engine's modules send their events: the Engine itself. */
export type EngineEmitter = EventEmitter<EngineEvents>;

export function emitCompleted(events: EngineEmitter, generation: Generation, end: StatsChunk): void {
  events.emit('generationCompleted', {
    streamId: end.streamId,
    modelId: generation.modelId,
    finishReason: end.finishReason,
    stats: end.stats,
  });
}

/** A failure no call owns: to the 'error' listeners, or to the log when there are none. */
export function reportError(events: EngineEmitter, logger: ClientLogger, error: Error): void {
  if (events.listenerCount('error') > 0) events.emit('error', error);
  else logger.warn(error.message);
}
