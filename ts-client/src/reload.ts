/**
 * The models this engine loaded, in load order, with the params that loaded them: loaded
 * again when the runtime restarts (reloadModelsOnRestart), else reported lost with its
 * exit.
 */
import { MlxServingError } from './errors.js';
import { reportError, type EngineEmitter } from './events.js';
import type { ClientLogger } from './logger.js';
import type { RuntimeLink } from './supervisor.js';
import type { LoadModelParams } from './types/index.js';

export interface ReloadOptions {
  /** Load the models again after a restart, instead of forgetting them. */
  reload: boolean;
  loadTimeoutMs: number;
}

export class LoadedModels {
  private readonly params = new Map<string, LoadModelParams>();
  /** Which of them were loaded with load_vision_model. */
  private readonly vision = new Set<string>();

  constructor(
    private readonly events: EngineEmitter,
    private readonly logger: ClientLogger,
    private readonly options: ReloadOptions,
  ) {}

  /** Their ids, in load order. */
  get ids(): string[] {
    return [...this.params.keys()];
  }

  loaded(params: LoadModelParams, kind: 'text' | 'vision'): void {
    this.params.delete(params.model_id); // a reload moves it to the end of the load order
    this.params.set(params.model_id, params);
    if (kind === 'vision') this.vision.add(params.model_id);
    else this.vision.delete(params.model_id);
  }

  unloaded(modelId: string): void {
    this.params.delete(modelId);
    this.vision.delete(modelId);
  }

  /** The runtime that held them is gone: unless they are to be reloaded, forget them. */
  runtimeExited(): void {
    if (this.options.reload) return;
    const lost = this.ids;
    this.params.clear();
    this.vision.clear();
    for (const modelId of lost) this.events.emit('modelUnloaded', { model_id: modelId, reason: 'runtime-exited' });
  }

  /** Brings a restarted runtime back to the models this engine had loaded. */
  async restore({ connection, process }: RuntimeLink): Promise<void> {
    if (!this.options.reload) return; // forgotten when the old runtime exited
    for (const [modelId, params] of [...this.params]) {
      try {
        const options = { timeoutMs: this.options.loadTimeoutMs };
        const result = this.vision.has(modelId)
          ? await connection.request('load_vision_model', params, options)
          : await connection.request('load_model', params, options);
        this.events.emit('modelLoaded', result);
      } catch (error) {
        if (process.hasExited) throw error;
        this.params.delete(modelId);
        reportError(
          this.events,
          this.logger,
          new MlxServingError('ModelReloadFailed', `could not reload model ${modelId} after a restart: ${(error as Error).message}`, {
            cause: error,
            details: { model_id: modelId },
          }),
        );
      }
    }
  }
}
