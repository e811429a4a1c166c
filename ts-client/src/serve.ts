/**
 * `mlx-serving serve`: starts the runtime, loads the models given, and serves the OpenAI-
 * and Anthropic-compatible HTTP API (http/server.ts) until SIGINT or SIGTERM.
 */
import { existsSync, statSync } from 'node:fs';
import { basename, delimiter, resolve } from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { createEngine, type Engine, type EngineOptions } from './engine.js';
import { createHttpServer } from './http/server.js';
import { consoleLogger } from './logger.js';
import type { LoadModelParams } from './types/index.js';

export const SERVE_USAGE = `Usage: mlx-serving serve [options]

Serves the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings)
and Anthropic's (/v1/messages), plus /health and /metrics, over one runtime.

  --host H          address to listen on (default 127.0.0.1: this machine only)
  --port N          (default 8080; 0 picks a free one)
  --model ID=PATH   load the model at PATH (directory or .gguf) and serve it as ID;
                    repeatable; PATH alone serves it under its file name
  --dtype D         float32 | float16 | bfloat16 for the models (float32 is fastest on CPU)
  --config FILE     the runtime's runtime.yaml (limits, scheduler; docs/CONFIG.md)
  --api-key KEY     require this key (Authorization: Bearer KEY, or x-api-key: KEY);
                    default $MLX_SERVING_API_KEY, else none
  --python PATH     python executable of the runtime
  --pythonpath DIRS extra PYTHONPATH entries, '${delimiter}'-separated
  --verbose         log each request and the runtime's log on stderr`;

const OPTIONS = {
  host: { type: 'string', default: '127.0.0.1' },
  port: { type: 'string', default: '8080' },
  model: { type: 'string', multiple: true, default: [] },
  dtype: { type: 'string' },
  config: { type: 'string' },
  'api-key': { type: 'string' },
  python: { type: 'string' },
  pythonpath: { type: 'string' },
  verbose: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

/** Runs the server; resolves with the exit code once it has stopped. */
export async function serveMain(argv: string[]): Promise<number> {
  let values: ReturnType<typeof parseArgs<{ options: typeof OPTIONS }>>['values'];
  try {
    ({ values } = parseArgs({ args: argv, options: OPTIONS }));
  } catch (error) {
    return usage((error as Error).message);
  }
  if (values.help) {
    console.log(SERVE_USAGE);
    return 0;
  }
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) return usage(`--port must be a port number, got ${values.port}`);
  const dtype = values.dtype;
  if (dtype !== undefined && !(DTYPES as readonly string[]).includes(dtype)) return usage(`--dtype must be one of ${DTYPES.join(', ')}`);
  let models: LoadModelParams[];
  try {
    models = values.model.map((spec) => modelOf(spec, dtype as LoadModelParams['dtype']));
  } catch (error) {
    return usage((error as Error).message);
  }
  const apiKey = values['api-key'] ?? process.env['MLX_SERVING_API_KEY'] ?? undefined;
  const logger = consoleLogger(values.verbose ? 'debug' : 'info');

  const options: EngineOptions = {
    logger: consoleLogger(values.verbose ? 'debug' : 'warn'),
    // A server outlives crashes: restart the runtime and load its models again.
    reloadModelsOnRestart: true,
  };
  if (values.python) options.python = values.python;
  if (values.pythonpath) options.extraPythonPath = values.pythonpath.split(delimiter).filter(Boolean);
  if (values.config) options.env = { MLX_SERVING_CONFIG: resolve(values.config) };

  let engine: Engine | undefined;
  try {
    engine = await createEngine(options);
    for (const model of models) {
      await engine.loadModel(model);
      logger.info(`loaded ${model.model_id} from ${model.local_path}`);
    }
    const server = createHttpServer(engine, { apiKey: apiKey || undefined, logger });
    const url = await server.listen(port, values.host);
    if (!apiKey && !LOOPBACK.has(values.host)) logger.warn(`serving on ${values.host} without an API key: anyone who reaches it can use it`);
    // The line tools and tests wait for.
    console.log(`mlx-serving listening on ${url}`);
    const signal = await new Promise<NodeJS.Signals>((done) => {
      process.once('SIGINT', () => done('SIGINT'));
      process.once('SIGTERM', () => done('SIGTERM'));
    });
    logger.info(`${signal}: stopping`);
    await server.close();
    return 0;
  } catch (error) {
    console.error(`mlx-serving: ${(error as Error).message}`);
    return engine ? 1 : 3;
  } finally {
    await engine?.dispose();
  }
}

/** `ID=PATH`, or a PATH served under its name. */
function modelOf(spec: string, dtype: LoadModelParams['dtype']): LoadModelParams {
  const split = spec.indexOf('=');
  const path = resolve(split > 0 ? spec.slice(split + 1) : spec);
  if (!existsSync(path)) throw new Error(`--model ${spec}: ${path} does not exist`);
  const name = statSync(path).isDirectory() ? basename(path) : basename(path).replace(/\.gguf$/i, '');
  const params: LoadModelParams = { model_id: split > 0 ? spec.slice(0, split) : name, local_path: path };
  if (dtype) params.dtype = dtype;
  return params;
}

function usage(message: string): number {
  console.error(`mlx-serving serve: ${message}\n\n${SERVE_USAGE}`);
  return 2;
}
