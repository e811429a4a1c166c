/**
 * The engine: the typed API over one supervised runtime process. Params and results are
 * the wire's generated types (snake_case, exactly what the runtime reads and writes);
 * stream items are the client's own shape (see generator.ts).
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import { onAbort } from './abort.js';
import { toWireParams, type EmbedRequest, type GeneratorParams, type VisionGeneratorParams } from './call-params.js';
import { EngineDisposedError, InvalidParamsError, type RuntimeExitedError } from './errors.js';
import { emitCompleted, reportError, type EngineEvents } from './events.js';
import {
  collect,
  DEFAULT_MAX_UNREAD_CHUNKS,
  Generation,
  type GenerationChunk,
  type GenerationResult,
  type StreamControl,
} from './generator.js';
import { runtimeProcessSpec, type LaunchOptions } from './launch.js';
import { ClientLogger, consoleLogger, type Logger } from './logger.js';
import type { RequestOptions } from './rpc.js';
import { LoadedModels } from './reload.js';
import { StreamRouter } from './stream-router.js';
import { DEFAULT_RESTART_POLICY, Supervisor, type RestartPolicy } from './supervisor.js';
import { DEFAULT_MAX_LINE_BYTES } from './transport.js';
import type {
  DetokenizeParams,
  DetokenizeResult,
  EmbedParams,
  EmbedResult,
  GenerateParams,
  LoadModelParams,
  LoadModelResult,
  LoadVisionModelResult,
  MethodName,
  MethodParams,
  MethodResult,
  RuntimeInfo,
  RuntimeMetrics,
  RuntimeState,
  TokenizeParams,
  TokenizeResult,
} from './types/index.js';
import { protocolValidator, type ProtocolValidator } from './validation.js';

export type { EmbedRequest, GeneratorParams, PromptForm, StructuredOutput, VisionGeneratorParams } from './call-params.js';
export type { EngineEvents } from './events.js';
export type { GenerationResult } from './generator.js';

export interface EngineOptions extends LaunchOptions {
  /** Default per-request timeout (default 30 s; 0 disables). */
  requestTimeoutMs?: number;
  /** Timeout of `load_model` (default 10 min: first loads read the whole model). */
  loadTimeoutMs?: number;
  /** How long the runtime may take to answer its readiness probe (default 60 s). */
  startupTimeoutMs?: number;
  /** `dispose()` sends `shutdown`, then SIGKILL after this long (default 5 s). */
  shutdownTimeoutMs?: number;
  /** Longest stdout line accepted from the runtime (default 16 MiB). */
  maxLineBytes?: number;
  /** Restart policy when the runtime dies; `false` turns restarts off. */
  restart?: RestartPolicy | false;
  /** Load the models the engine had loaded again after a restart (default false: a reload
   * can take minutes and the memory of the model, so it is opted into). Without it the
   * models are forgotten when the runtime dies, each with a `modelUnloaded` event. */
  reloadModelsOnRestart?: boolean;
  /** Fail a stream that receives nothing for this long (default 0: no limit). */
  streamIdleTimeoutMs?: number;
  /** Default of GeneratorOptions.maxUnreadChunks for every stream (8192; 0: no bound). */
  maxUnreadChunks?: number;
  /** Client messages and the runtime's stderr (default: warnings and errors to stderr). */
  logger?: Logger;
}

/** Per-call options of the request methods. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface GeneratorOptions {
  /** Aborting ends the stream at once with finish reason `cancelled` (see
   * `Generation.cancel`) and cancels it on the runtime in the background. An already aborted
   * signal fails the call at once with the signal's reason. */
  signal?: AbortSignal;
  /** Timeout of the `generate` request itself (the acknowledgement, not the stream). */
  timeoutMs?: number;
  /** Chunks received but not yet read that the stream may hold (default the engine's,
   * 8192; 0: no bound). One more cancels the stream on the runtime and fails the iteration
   * with SlowConsumerError after the chunks that were waiting. */
  maxUnreadChunks?: number;
}

/** Starts the runtime and resolves once it answered `runtime/info`. */
export async function createEngine(options: EngineOptions = {}): Promise<Engine> {
  const engine = new Engine(options);
  await engine.start();
  return engine;
}

export class Engine extends EventEmitter<EngineEvents> {
  private readonly logger: ClientLogger;
  private readonly validator: ProtocolValidator = protocolValidator();
  private readonly supervisor: Supervisor;
  private readonly streams: StreamRouter;
  private readonly models: LoadedModels;
  private readonly requestTimeoutMs: number;
  private readonly loadTimeoutMs: number;
  private readonly maxUnreadChunks: number;
  private readonly control: StreamControl = { cancel: (streamId) => this.sendCancel(streamId) };

  constructor(options: EngineOptions = {}) {
    super();
    this.logger = new ClientLogger(options.logger ?? consoleLogger());
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.loadTimeoutMs = options.loadTimeoutMs ?? 600_000;
    this.maxUnreadChunks = options.maxUnreadChunks ?? DEFAULT_MAX_UNREAD_CHUNKS;
    this.streams = new StreamRouter(this, this.logger, options.streamIdleTimeoutMs ?? 0);
    this.models = new LoadedModels(this, this.logger, {
      reload: options.reloadModelsOnRestart ?? false,
      loadTimeoutMs: this.loadTimeoutMs,
    });
    const restart =
      options.restart === false
        ? { ...DEFAULT_RESTART_POLICY, enabled: false }
        : { ...DEFAULT_RESTART_POLICY, ...options.restart };
    this.supervisor = new Supervisor(
      {
        spec: runtimeProcessSpec(options),
        restart,
        startupTimeoutMs: options.startupTimeoutMs ?? 60_000,
        shutdownTimeoutMs: options.shutdownTimeoutMs ?? 5_000,
        maxLineBytes: options.maxLineBytes ?? DEFAULT_MAX_LINE_BYTES,
      },
      this.validator,
      this.logger,
      {
        notification: (method, params) => this.streams.notification(method, params),
        invalidNotification: (_method, params, error) => this.streams.invalidNotification(params, error),
        protocolError: (error) => reportError(this, this.logger, error),
        exited: (error) => this.onRuntimeExit(error),
        restore: (link) => this.models.restore(link),
        status: (status) => this.emit('runtimeStatus', status),
      },
    );
  }

  /** Starts the runtime (createEngine does this). */
  async start(): Promise<RuntimeInfo> {
    return this.supervisor.start();
  }

  /** Process id of the current runtime process. */
  get pid(): number | undefined {
    return this.supervisor.pid;
  }

  get restartCount(): number {
    return this.supervisor.restartCount;
  }

  /** Ids of the models this engine has loaded. */
  get loadedModels(): string[] {
    return this.models.ids;
  }

  // -- requests --------------------------------------------------------------------------

  /** Any method of the protocol, typed by the generated method table. */
  async request<M extends MethodName>(method: M, params?: MethodParams<M>, options: CallOptions = {}): Promise<MethodResult<M>> {
    const timeoutMs = options.timeoutMs ?? this.requestTimeoutMs;
    const started = Date.now();
    const connection = await this.supervisor.connection(timeoutMs, options.signal);
    const remaining = timeoutMs ? Math.max(timeoutMs - (Date.now() - started), 1) : 0;
    const requestOptions: RequestOptions = { timeoutMs: remaining, signal: options.signal };
    return connection.request(method, params, requestOptions);
  }

  /** A fresh `runtime/info` (the probe's answer is `engine.info`). */
  runtimeInfo(options?: CallOptions): Promise<RuntimeInfo> {
    return this.request('runtime/info', undefined, options);
  }

  /** The `runtime/info` answer of the runtime's readiness probe. */
  get info(): RuntimeInfo | undefined {
    return this.supervisor.info;
  }

  runtimeState(options?: CallOptions): Promise<RuntimeState> {
    return this.request('runtime/state', undefined, options);
  }

  /** Counters, gauges and latency histograms of the runtime; `toPrometheus` renders them. */
  metrics(options?: CallOptions): Promise<RuntimeMetrics> {
    return this.request('runtime/metrics', undefined, options);
  }

  async loadModel(params: LoadModelParams, options: CallOptions = {}): Promise<LoadModelResult> {
    this.checkParams('load_model', params);
    const result = await this.request('load_model', params, { timeoutMs: this.loadTimeoutMs, ...options });
    this.models.loaded(params, 'text');
    this.emit('modelLoaded', result);
    return result;
  }

  /** Loads a vision-language model through mlx-vlm (the runtime's `vision` extra). */
  async loadVisionModel(params: LoadModelParams, options: CallOptions = {}): Promise<LoadVisionModelResult> {
    this.checkParams('load_vision_model', params);
    const result = await this.request('load_vision_model', params, { timeoutMs: this.loadTimeoutMs, ...options });
    this.models.loaded(params, 'vision');
    this.emit('modelLoaded', result);
    return result;
  }

  async unloadModel(modelId: string, options?: CallOptions): Promise<void> {
    const params = { model_id: modelId };
    this.checkParams('unload_model', params);
    await this.request('unload_model', params, options);
    this.models.unloaded(modelId);
    this.emit('modelUnloaded', { model_id: modelId, reason: 'unloaded' });
  }

  async tokenize(params: TokenizeParams, options?: CallOptions): Promise<TokenizeResult> {
    this.checkParams('tokenize', params);
    return this.request('tokenize', params, options);
  }

  /** Vectors for texts from a loaded text model: one per text, in order, unit length
   * unless `normalize: false`. A large list goes in one request: the runtime batches it. */
  async embed(params: EmbedRequest, options?: CallOptions): Promise<EmbedResult> {
    this.checkParams('embed', params);
    return this.request('embed', params as EmbedParams, options);
  }

  async detokenize(params: DetokenizeParams, options?: CallOptions): Promise<DetokenizeResult> {
    this.checkParams('detokenize', params);
    return this.request('detokenize', params, options);
  }

  // -- generation ------------------------------------------------------------------------

  /**
   * Starts a generation stream. Iterate the result for token chunks and a final stats
   * chunk; every failure (invalid params included) is thrown from the iteration.
   */
  createGenerator(params: GeneratorParams, options: GeneratorOptions = {}): Generation {
    return this.openStream('generate', params, options);
  }

  /**
   * Starts a generation on a vision model with images beside the prompt; iterate it like
   * createGenerator's. (Images inside `messages` go through createGenerator as well.)
   */
  createVisionGenerator(params: VisionGeneratorParams, options: GeneratorOptions = {}): Generation {
    return this.openStream('generate_with_image', params, options);
  }

  private openStream(
    method: 'generate' | 'generate_with_image',
    params: GeneratorParams | VisionGeneratorParams,
    options: GeneratorOptions,
  ): Generation {
    const streamId = params.stream_id ?? `ts-${randomUUID()}`;
    const maxUnreadChunks = options.maxUnreadChunks ?? this.maxUnreadChunks;
    const generation = new Generation(streamId, params.model_id, this.control, maxUnreadChunks);
    let wire: GenerateParams;
    try {
      wire = toWireParams({ ...params, stream_id: streamId });
      this.checkParams(method, wire);
      if (this.streams.has(streamId)) {
        throw new InvalidParamsError(
          `stream_id: stream '${streamId}' is already active`,
          'stream_id',
          [{ path: 'stream_id', message: 'already active', code: 'duplicate' }],
          'client',
        );
      }
    } catch (error) {
      generation.fail(error);
      return generation;
    }
    const { signal } = options;
    if (signal?.aborted) {
      generation.fail(signal.reason);
      return generation;
    }
    this.streams.add(generation);
    const stopAbortWatch = signal ? onAbort(signal, () => generation.cancel()) : () => {};
    let started = false;
    generation.onEnd((final) => {
      stopAbortWatch();
      // A stream cancelled here ends before the runtime's completed event, which is dropped.
      if (final && generation.cancelled && started) emitCompleted(this, generation, final);
    });
    void this.sendGenerate(method, wire, generation, options.timeoutMs ?? this.requestTimeoutMs).then((acknowledged) => {
      if (!acknowledged || generation.cancelled) return;
      started = true;
      this.emit('generationStarted', { streamId, modelId: params.model_id });
    });
    return generation;
  }

  /**
   * Sends the stream's `generate` unless it ended first: a stream cancelled while waiting
   * for a (re)starting runtime, or in the tick it was created, never reaches the runtime.
   * Resolves true once the runtime acknowledged it.
   */
  private async sendGenerate(
    method: 'generate' | 'generate_with_image',
    wire: GenerateParams,
    generation: Generation,
    timeoutMs: number,
  ): Promise<boolean> {
    const unsent = new AbortController();
    generation.onEnd(() => unsent.abort());
    try {
      const started = Date.now();
      const connection = await this.supervisor.connection(timeoutMs, unsent.signal);
      if (generation.done) return false;
      const remaining = timeoutMs ? Math.max(timeoutMs - (Date.now() - started), 1) : 0;
      // An acknowledgement after the timeout still means a running stream: cancel it then.
      await connection.request(method, wire, { timeoutMs: remaining, onLateResult: () => generation.acknowledge() });
      generation.acknowledge();
      return true;
    } catch (error) {
      generation.fail(error, { cancelOnRuntime: true });
      return false;
    }
  }

  /** Runs a generation to its end and returns the whole text. */
  async generate(params: GeneratorParams, options: GeneratorOptions = {}): Promise<GenerationResult> {
    return collect(this.createGenerator(params, options));
  }

  /** Shuts the runtime down (`shutdown`, SIGKILL after `shutdownTimeoutMs`). Idempotent. */
  async dispose(): Promise<void> {
    await this.supervisor.dispose();
    this.streams.failAll(new EngineDisposedError());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }

  // -- internals -------------------------------------------------------------------------

  private checkParams(method: MethodName, params: unknown): void {
    const issues = this.validator.params(method, params);
    if (issues.length) {
      const first = issues[0]!;
      throw new InvalidParamsError(`${method}: ${first.path || 'params'} ${first.message}`, first.path, issues, 'client');
    }
  }

  private sendCancel(streamId: string): void {
    this.request('cancel', { stream_id: streamId }).catch((error: Error) =>
      this.logger.debug(`cancel ${streamId}: ${error.message}`),
    );
  }

  private onRuntimeExit(error: RuntimeExitedError): void {
    this.streams.failAll(error);
    reportError(this, this.logger, error);
    this.models.runtimeExited();
  }
}

export type { GenerationChunk };
