export { createEngine, Engine } from './engine.js';
export type {
  CallOptions,
  EmbedRequest,
  EngineEvents,
  EngineOptions,
  GenerationResult,
  GeneratorOptions,
  GeneratorParams,
  PromptForm,
  StructuredOutput,
  VisionGeneratorParams,
} from './engine.js';
export { Generation } from './generator.js';
export { createHttpServer, HttpServer } from './http/server.js';
export type { HttpServerOptions } from './http/server.js';
export { PROMETHEUS_CONTENT_TYPE, toPrometheus } from './metrics.js';
export type { PrometheusOptions, RuntimeEvent } from './metrics.js';
export type { FinishReason, GenerationChunk, ReasoningChunk, StatsChunk, TokenChunk, ToolCallChunk } from './generator.js';
export {
  CircuitOpenError,
  EngineDisposedError,
  InvalidParamsError,
  MlxServingError,
  ProtocolError,
  RequestTimeoutError,
  RequestTooLargeError,
  RuntimeBackloggedError,
  RPC_CODE_NAMES,
  RpcError,
  RuntimeExitedError,
  SlowConsumerError,
  StreamFailedError,
} from './errors.js';
export type { LaunchOptions } from './launch.js';
export { resolvePython, runtimeProcessSpec } from './launch.js';
export { consoleLogger, silentLogger } from './logger.js';
export type { Logger, LogLevel } from './logger.js';
export type { RestartPolicy, RuntimeStatus } from './supervisor.js';
export { ProtocolValidator, protocolValidator } from './validation.js';
export { imageDataUri, imagePart } from './vision.js';
export type * from './types/index.js';
