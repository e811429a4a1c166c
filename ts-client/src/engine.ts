/**
 * The engine: the typed API over one supervised runtime process. Params and results are
 * the wire's generated types (snake_case, exactly what the runtime reads and writes);
 * stream items are the client's own shape (see generator.ts).
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';

import { onAbort } from './abort.js';
import {
  EngineDisposedError,
  InvalidParamsError,
  MlxServingError,
  ProtocolError,
  RequestTimeoutError,
  StreamFailedError,
  type RuntimeExitedError,
} from './errors.js';
import {
  DEFAULT_MAX_UNREAD_CHUNKS,
  Generation,
  type FinishReason,
  type GenerationChunk,
  type StatsChunk,
  type StreamControl,
  type ToolCallChunk,
} from './generator.js';
import { runtimeProcessSpec, type LaunchOptions } from './launch.js';
import { ClientLogger, consoleLogger, type Logger } from './logger.js';
import type { RuntimeEvent } from './metrics.js';
import type { RequestOptions } from './rpc.js';
import { DEFAULT_RESTART_POLICY, Supervisor, type RestartPolicy, type RuntimeLink, type RuntimeStatus } from './supervisor.js';
import { DEFAULT_MAX_LINE_BYTES } from './transport.js';
import type {
  ChatMessage,
  DetokenizeParams,
  DetokenizeResult,
  EmbedParams,
  EmbedResult,
  GenerateParams,
  GenerateWithImageParams,
  LoadModelParams,
  LoadModelResult,
  LoadVisionModelResult,
  MethodName,
  MethodParams,
  MethodResult,
  RuntimeInfo,
  RuntimeMetrics,
  RuntimeProgress,
  RuntimeState,
  StreamChunk,
  StreamChunkBatch,
  StreamCompleted,
  StreamFailed,
  StreamStats,
  StreamToolCall,
  TokenizeParams,
  TokenizeResult,
} from './types/index.js';
import { protocolValidator, type ProtocolValidator } from './validation.js';

/** `embed` params with `input` as any string list (the wire type says non-empty: an empty
 * list is refused at `input` before sending). */
export type EmbedRequest = Omit<EmbedParams, 'input'> & { input: string | readonly string[] };

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

/** Structured output in the seeds' shape; sent as `guidance: {mode: "json_schema", schema}`. */
export interface StructuredOutput {
  schema: Record<string, unknown>;
  format?: 'json';
}

/**
 * Exactly one prompt form, as the runtime requires (the wire's types cannot say so): a
 * `prompt`, `prompt_tokens`, or chat `messages`. An empty `prompt` beside another form is
 * allowed, since compat clients sent one.
 */
export type PromptForm =
  | { prompt: string; prompt_tokens?: null; messages?: null }
  | { prompt_tokens: number[]; prompt?: ''; messages?: null }
  | { messages: ChatMessage[]; prompt?: ''; prompt_tokens?: null };

type WithOnePrompt<P extends GenerateParams> = Omit<P, keyof PromptForm> & PromptForm;

/** `generate` params; `stream_id` is chosen by the client when left out. */
export type GeneratorParams = WithOnePrompt<GenerateParams> & { structured?: StructuredOutput };

/** `generate_with_image` params: generate's plus `image` / `images` (base64 or data URIs,
 * see `imageDataUri`) and `raw_prompt`. */
export type VisionGeneratorParams = WithOnePrompt<GenerateWithImageParams>;

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

export interface GenerationResult {
  streamId: string;
  /** The answer, without reasoning sent apart (`reasoning: "separate"`) or tool calls. */
  text: string;
  /** Every token's id, reasoning included. */
  tokenIds: number[];
  /** The reasoning sent apart; empty when none was. */
  reasoning: string;
  toolCalls: ToolCallChunk[];
  finishReason: FinishReason;
  stats: StreamStats;
}

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
  private readonly streams = new Map<string, Generation>();
  /** Load params of the models this engine loaded, in load order, for reloads. */
  private readonly models = new Map<string, LoadModelParams>();
  /** Which of them were loaded with load_vision_model. */
  private readonly visionModels = new Set<string>();
  private readonly requestTimeoutMs: number;
  private readonly loadTimeoutMs: number;
  private readonly streamIdleTimeoutMs: number;
  private readonly maxUnreadChunks: number;
  private readonly reloadModels: boolean;
  /** Restarts a stream's idle timer, by stream id (only with streamIdleTimeoutMs). */
  private readonly idleTimers = new Map<string, () => void>();
  private readonly control: StreamControl = { cancel: (streamId) => this.sendCancel(streamId) };

  constructor(options: EngineOptions = {}) {
    super();
    this.logger = new ClientLogger(options.logger ?? consoleLogger());
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.loadTimeoutMs = options.loadTimeoutMs ?? 600_000;
    this.streamIdleTimeoutMs = options.streamIdleTimeoutMs ?? 0;
    this.maxUnreadChunks = options.maxUnreadChunks ?? DEFAULT_MAX_UNREAD_CHUNKS;
    this.reloadModels = options.reloadModelsOnRestart ?? false;
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
        notification: (method, params) => this.onNotification(method, params),
        invalidNotification: (method, params, error) => this.onInvalidNotification(params, error),
        protocolError: (error) => this.reportError(error),
        exited: (error) => this.onRuntimeExit(error),
        restore: (link) => this.restore(link),
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
    return [...this.models.keys()];
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
    this.models.delete(params.model_id); // a reload moves it to the end of the load order
    this.models.set(params.model_id, params);
    this.visionModels.delete(params.model_id);
    this.emit('modelLoaded', result);
    return result;
  }

  /** Loads a vision-language model through mlx-vlm (the runtime's `vision` extra). */
  async loadVisionModel(params: LoadModelParams, options: CallOptions = {}): Promise<LoadVisionModelResult> {
    this.checkParams('load_vision_model', params);
    const result = await this.request('load_vision_model', params, { timeoutMs: this.loadTimeoutMs, ...options });
    this.models.delete(params.model_id);
    this.models.set(params.model_id, params);
    this.visionModels.add(params.model_id);
    this.emit('modelLoaded', result);
    return result;
  }

  async unloadModel(modelId: string, options?: CallOptions): Promise<void> {
    const params = { model_id: modelId };
    this.checkParams('unload_model', params);
    await this.request('unload_model', params, options);
    this.models.delete(modelId);
    this.visionModels.delete(modelId);
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
    this.streams.set(streamId, generation);
    const stopAbortWatch = signal ? onAbort(signal, () => generation.cancel()) : () => {};
    const stopIdleWatch = this.watchIdle(generation);
    let started = false;
    generation.onEnd((final) => {
      stopAbortWatch();
      stopIdleWatch();
      if (this.streams.get(streamId) === generation) this.streams.delete(streamId);
      // A stream cancelled here ends before the runtime's completed event, which is dropped.
      if (final && generation.cancelled && started) this.emitCompleted(generation, final);
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
    let text = '';
    let reasoning = '';
    const tokenIds: number[] = [];
    const toolCalls: ToolCallChunk[] = [];
    let end: StatsChunk | undefined;
    const generation = this.createGenerator(params, options);
    for await (const chunk of generation) {
      if (chunk.type === 'token') {
        text += chunk.text;
        tokenIds.push(chunk.tokenId);
      } else if (chunk.type === 'reasoning') {
        reasoning += chunk.text;
        tokenIds.push(chunk.tokenId);
      } else if (chunk.type === 'tool_call') {
        toolCalls.push(chunk);
      } else {
        end = chunk;
      }
    }
    if (!end) throw new ProtocolError(`stream ${generation.streamId} ended without its stats`);
    const { streamId } = generation;
    return { streamId, text, tokenIds, reasoning, toolCalls, finishReason: end.finishReason, stats: end.stats };
  }

  /** Shuts the runtime down (`shutdown`, SIGKILL after `shutdownTimeoutMs`). Idempotent. */
  async dispose(): Promise<void> {
    await this.supervisor.dispose();
    const disposed = new EngineDisposedError();
    for (const generation of [...this.streams.values()]) generation.fail(disposed);
    this.streams.clear();
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

  /** Fails the stream when the runtime sends nothing for it for `streamIdleTimeoutMs`. */
  private watchIdle(generation: Generation): () => void {
    const ms = this.streamIdleTimeoutMs;
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

  private onNotification(method: string, params: unknown): void {
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
          if (end) this.emitCompleted(generation, end);
        } else {
          const error = new StreamFailedError(event.stream_id, event.error, event.error_code ?? null);
          generation.fail(error);
          this.emit('generationFailed', { streamId: event.stream_id, modelId: generation.modelId, error });
        }
        return;
      }
      case 'runtime.progress':
        this.emit('progress', params as RuntimeProgress);
        return;
      case 'runtime.event': {
        const event = params as RuntimeEvent;
        if (event.event === 'model_unloaded' && (event.reason === 'evicted' || event.reason === 'expired')) {
          this.emit('modelUnloaded', { model_id: event.model_id, reason: event.reason, detail: event.detail ?? null });
        }
        this.emit('runtimeEvent', event);
        return;
      }
      default:
        this.logger.debug(`unhandled notification ${method}`);
    }
  }

  /** The live stream of an id (its idle timer restarted), or undefined. */
  private stream(streamId: string): Generation | undefined {
    const generation = this.streams.get(streamId);
    if (generation) this.idleTimers.get(streamId)?.();
    else this.logger.debug(`notification for unknown stream ${streamId}`);
    return generation;
  }

  /** A notification that breaks its schema fails its stream, when it names one. */
  private onInvalidNotification(params: unknown, error: ProtocolError): void {
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
      this.reportError(error);
      return;
    }
    // The runtime still runs them; stop them so they do not hold slots.
    for (const generation of affected) generation.fail(error, { cancelOnRuntime: true });
  }

  private onRuntimeExit(error: RuntimeExitedError): void {
    for (const generation of [...this.streams.values()]) generation.fail(error);
    this.streams.clear();
    this.reportError(error);
    if (!this.reloadModels) this.forgetModels();
  }

  /** The runtime that held the models is gone. */
  private forgetModels(): void {
    const lost = [...this.models.keys()];
    this.models.clear();
    this.visionModels.clear();
    for (const modelId of lost) this.emit('modelUnloaded', { model_id: modelId, reason: 'runtime-exited' });
  }

  /** Brings a restarted runtime back to the models this engine had loaded. */
  private async restore({ connection, process }: RuntimeLink): Promise<void> {
    if (!this.reloadModels) return; // forgotten when the old runtime exited
    for (const [modelId, params] of [...this.models]) {
      try {
        const options = { timeoutMs: this.loadTimeoutMs };
        const result = this.visionModels.has(modelId)
          ? await connection.request('load_vision_model', params, options)
          : await connection.request('load_model', params, options);
        this.emit('modelLoaded', result);
      } catch (error) {
        if (process.hasExited) throw error;
        this.models.delete(modelId);
        this.reportError(
          new MlxServingError('ModelReloadFailed', `could not reload model ${modelId} after a restart: ${(error as Error).message}`, {
            cause: error,
            details: { model_id: modelId },
          }),
        );
      }
    }
  }

  private emitCompleted(generation: Generation, end: StatsChunk): void {
    this.emit('generationCompleted', {
      streamId: end.streamId,
      modelId: generation.modelId,
      finishReason: end.finishReason,
      stats: end.stats,
    });
  }

  private reportError(error: Error): void {
    if (this.listenerCount('error') > 0) this.emit('error', error);
    else this.logger.warn(error.message);
  }
}

/** The seeds' `structured` option becomes the wire's `guidance`. */
function toWireParams(params: GeneratorParams): GenerateParams {
  const { structured, ...wire } = params;
  if (structured === undefined) return wire;
  const issue = (path: string, message: string) =>
    new InvalidParamsError(`generate: ${path} ${message}`, path, [{ path, message, code: 'invalid' }], 'client');
  if (wire.guidance) throw issue('structured', 'cannot be combined with guidance');
  if (structured.format !== undefined && structured.format !== 'json') {
    throw issue('structured.format', "must be 'json' (the runtime constrains to a JSON schema)");
  }
  if (typeof structured.schema !== 'object' || structured.schema === null) throw issue('structured.schema', 'must be an object');
  return { ...wire, guidance: { mode: 'json_schema', schema: structured.schema } };
}

export type { GenerationChunk };
