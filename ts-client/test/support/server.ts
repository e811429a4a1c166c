/**
 * The HTTP server for tests: over the real runtime with a generated model, or over a
 * scripted engine that answers what a test tells it to (for shapes a random-weight model
 * cannot produce on cue: tool calls, reasoning, overload).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';

import type { Engine } from '../../src/engine.js';
import { runtimeProcessSpec } from '../../src/launch.js';
import { Generation, type GenerationChunk } from '../../src/generator.js';
import type { ServedEngine } from '../../src/http/generation.js';
import { createHttpServer, type HttpServer, type HttpServerOptions } from '../../src/http/server.js';
import type { EmbedResult, GenerateParams, RuntimeMetrics, RuntimeState, StreamStats } from '../../src/types/index.js';
import { makeModel, startEngine, tempDir } from './runtime.js';

export const MODEL = 'tiny';

export interface Served {
  engine: Engine;
  server: HttpServer;
  url: string;
  close(): Promise<void>;
}

/** The real runtime with one generated model (`tiny`), served on a free loopback port. */
export async function serveRealRuntime(options: HttpServerOptions = {}): Promise<Served> {
  const [modelDir, engine] = await Promise.all([makeModel(), startEngine()]);
  await engine.loadModel({ model_id: MODEL, local_path: modelDir });
  const server = createHttpServer(engine, options);
  const url = await server.listen(0);
  return {
    engine,
    server,
    url,
    close: async () => {
      await server.close();
      await engine.dispose();
    },
  };
}

/**
 * A random-weight model whose chat template calls tools the Hermes way (`tools`: mlx-lm's
 * json_tools parser reads its calls) or opens a `<think>` block (`thinking`), made by the
 * runtime's own testing helpers.
 */
export async function makeChatModel(kind: 'tools' | 'thinking'): Promise<string> {
  const dir = join(tempDir(), kind);
  const [tokens, template] = kind === 'tools' ? ['TOOL_TOKENS', 'TOOLS_TEMPLATE'] : ['THINK_TOKENS', 'THINKING_TEMPLATE'];
  const code = [
    'import sys',
    'from mlx_serving.testing.make_model import make_model',
    'from mlx_serving.testing import chat_templates as t',
    `make_model(sys.argv[1], "qwen2", seed=3, extra_special_tokens=t.${tokens}, chat_template=t.${template})`,
  ].join('\n');
  const spec = runtimeProcessSpec();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(spec.command, ['-c', code, dir], { env: spec.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (exit) => (exit === 0 ? resolve() : reject(new Error(`making the ${kind} model failed:\n${stderr}`))));
  });
  return dir;
}

/** What the scripted engine streams for one request: chunks, or an error to throw. */
export type Script = (params: GenerateParams & Record<string, unknown>) => ScriptedChunk[] | Error;

export type ScriptedChunk =
  | { type: 'token'; text: string; reasoning?: boolean }
  | { type: 'tool_call'; id: string; name: string; arguments: string }
  | { type: 'end'; finishReason: string; promptTokens?: number };

/** An engine without a runtime: each stream is the script's answer to its params. */
export class ScriptedEngine implements ServedEngine {
  readonly requests: Array<GenerateParams & Record<string, unknown>> = [];
  readonly info = undefined;
  private streams = 0;

  constructor(public script: Script) {}

  createGenerator(params: Parameters<Engine['createGenerator']>[0]): Generation {
    const wire = params as unknown as GenerateParams & Record<string, unknown>;
    this.requests.push(wire);
    const streamId = `scripted-${++this.streams}`;
    const generation = new Generation(streamId, params.model_id, { cancel: () => {} });
    const answer = this.script(wire);
    setImmediate(() => (answer instanceof Error ? generation.fail(answer) : this.play(generation, answer)));
    return generation;
  }

  async runtimeState(): Promise<RuntimeState> {
    // Only what the server reads of it.
    const models = [{ model_id: MODEL, state: 'ready', type: 'text' }];
    return { active_streams: 0, loaded_models: models, restart_count: 0 } as unknown as RuntimeState;
  }

  async embed(): Promise<EmbedResult> {
    return { embeddings: [[1, 0]], dimensions: 2, prompt_tokens: 1 };
  }

  async metrics(): Promise<RuntimeMetrics> {
    return { collector: 'python', counters: [], gauges: [], histograms: [] };
  }

  private play(generation: Generation, chunks: ScriptedChunk[]): void {
    const streamId = generation.streamId;
    let tokens = 0;
    let calls = 0;
    for (const chunk of chunks) {
      if (chunk.type === 'token') {
        tokens += 1;
        generation.pushChunk({ stream_id: streamId, token: chunk.text, token_id: tokens, reasoning: chunk.reasoning ?? false });
      } else if (chunk.type === 'tool_call') {
        generation.pushToolCall({ stream_id: streamId, index: calls++, id: chunk.id, name: chunk.name, arguments: chunk.arguments });
      } else {
        const stats: StreamStats = {
          stream_id: streamId,
          tokens_generated: tokens,
          prompt_tokens: chunk.promptTokens ?? 7,
          tokens_per_second: 100,
          time_to_first_token: 0.01,
          total_time: 0.1,
        };
        generation.pushStats(stats);
        const finish = chunk.finishReason as Parameters<Generation['complete']>[0]['finish_reason'];
        generation.complete({ event: 'completed', stream_id: streamId, finish_reason: finish });
      }
    }
  }
}

/** The scripted engine served on a free loopback port. */
export async function serveScripted(script: Script, options: HttpServerOptions = {}) {
  const engine = new ScriptedEngine(script);
  const server = createHttpServer(engine, options);
  const url = await server.listen(0);
  return { engine, server, url, close: () => server.close() };
}

export type { GenerationChunk };
