#!/usr/bin/env node
/**
 * `mlx-serving`: the engine from a terminal. Exit codes: 0 ok, 1 the runtime answered an
 * error (or a generation failed), 2 usage, 3 the runtime could not start or died, 4 the
 * runtime broke the protocol, 130 interrupted.
 */
import { spawn } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { basename, delimiter, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { parseArgs, type ParseArgsConfig } from 'node:util';

import { createEngine, type Engine, type EngineOptions } from './engine.js';
import { runtimeProcessSpec } from './launch.js';
import { CircuitOpenError, InvalidParamsError, ProtocolError, RuntimeExitedError } from './errors.js';
import type { GeneratorParams, PromptForm } from './engine.js';
import type { StatsChunk } from './generator.js';
import { consoleLogger } from './logger.js';
import { serveMain } from './serve.js';
import type { ChatMessage, GenerateParams } from './types/index.js';

const USAGE = `Usage: mlx-serving <command> [options]

Commands:
  info                          print the runtime's runtime/info
  tokenize --model M --text T   tokenize a text
  generate --model M --prompt P stream a completion to stdout; TTFT and tok/s to stderr
  chat --model M                interactive chat through the model's chat template
  convert-gguf FILE OUT         convert a GGUF file into an mlx-lm model directory
  serve --model ID=PATH         OpenAI- and Anthropic-compatible HTTP server (serve --help)

Model (generate, tokenize, chat):
  --model M            a model directory or .gguf file (loaded as its name) or a model id
  --dtype D            float32 | float16 | bfloat16 (dequantizes; float32 is fastest on CPU)
Generation:
  --max-tokens N       (default 256)     --temperature T  (default 0.7)
  --top-p P            --seed S          --system TEXT    (chat: system message)
  --chat               generate: send the prompt as one user message (chat template)
Runtime:
  --python PATH        python executable (default: $MLX_SERVING_PYTHON, ./.venv, ../.venv, python3)
  --pythonpath DIRS    extra PYTHONPATH entries, '${delimiter}'-separated
  --timeout MS         request timeout (default 30000)
  --verbose            show the runtime's log on stderr
Output:
  --json               machine-readable output (generate: one JSON chunk per line)

Exit codes: 0 ok, 1 runtime error, 2 usage, 3 runtime failed to start or died,
4 protocol violation, 130 interrupted.`;

const OPTIONS = {
  model: { type: 'string' },
  dtype: { type: 'string' },
  prompt: { type: 'string' },
  text: { type: 'string' },
  system: { type: 'string' },
  'max-tokens': { type: 'string' },
  temperature: { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
  chat: { type: 'boolean' },
  python: { type: 'string' },
  pythonpath: { type: 'string' },
  timeout: { type: 'string' },
  verbose: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} satisfies ParseArgsConfig['options'];

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

class UsageError extends Error {}

export async function main(argv: string[]): Promise<number> {
  // serve has options of its own (serve.ts).
  if (argv[0] === 'serve') return serveMain(argv.slice(1));
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true }));
  } catch (error) {
    return usage((error as Error).message);
  }
  const [command, ...rest] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return command || values.help ? 0 : 2;
  }
  if (command === 'convert-gguf') {
    if (rest.length !== 2) return usage('convert-gguf needs FILE and OUT');
    return convertGguf(values, rest[0]!, rest[1]!);
  }
  if (rest.length) return usage(`unexpected argument ${rest[0]}`);
  const commands: Record<string, (engine: Engine, values: Values) => Promise<number>> = { info, tokenize, generate, chat };
  const run = commands[command];
  if (!run) return usage(`unknown command ${command}`);

  let engine: Engine | undefined;
  try {
    validate(command, values);
    engine = await createEngine(engineOptions(values));
    return await run(engine, values);
  } catch (error) {
    return report(error);
  } finally {
    await engine?.dispose();
  }
}

function engineOptions(values: Values): EngineOptions {
  const options: EngineOptions = {
    logger: consoleLogger(values.verbose ? 'debug' : 'warn'),
    // A CLI run is short: a crash should end it, not restart behind the user's back.
    restart: false,
  };
  if (values.python) options.python = values.python;
  if (values.pythonpath) options.extraPythonPath = values.pythonpath.split(delimiter).filter(Boolean);
  if (values.timeout) options.requestTimeoutMs = number('timeout', values.timeout);
  return options;
}

function validate(command: string, values: Values): void {
  if (command !== 'info' && !values.model) throw new UsageError(`${command} needs --model`);
  if (command === 'generate' && values.prompt === undefined) throw new UsageError('generate needs --prompt');
  if (command === 'tokenize' && values.text === undefined) throw new UsageError('tokenize needs --text');
}

async function info(engine: Engine, values: Values): Promise<number> {
  const info = await engine.runtimeInfo();
  if (values.json) {
    console.log(JSON.stringify(info, null, 2));
  } else {
    console.log(`mlx-serving runtime ${info.version} (protocol ${info.protocol}, pid ${engine.pid})`);
    console.log(`  backend       ${info.backend}; mlx ${info.mlx_version}, mlx-lm ${info.mlx_lm_version}`);
    console.log(`  capabilities  ${info.capabilities.join(', ')}`);
    const native = Object.entries(info.native).filter(([, on]) => on).map(([name]) => name);
    console.log(`  native        ${native.length ? native.join(', ') : 'none'}`);
    console.log(`  memory        rss ${mib(info.memory.rss)}, vms ${mib(info.memory.vms)}`);
    console.log(`  limits        max_tokens ${info.limits.max_tokens}, max_active_streams ${info.limits.max_active_streams}`);
  }
  return 0;
}

async function tokenize(engine: Engine, values: Values): Promise<number> {
  const modelId = await loadModel(engine, values.model!, values);
  const result = await engine.tokenize({ model_id: modelId, text: values.text! });
  if (values.json) {
    console.log(JSON.stringify(result));
  } else {
    console.log(`${result.tokens.length} tokens`);
    result.tokens.forEach((id, i) => console.log(`${String(id).padStart(8)}  ${JSON.stringify(result.token_strings[i])}`));
  }
  return 0;
}

async function generate(engine: Engine, values: Values): Promise<number> {
  const modelId = await loadModel(engine, values.model!, values);
  const prompt: PromptForm = values.chat
    ? { messages: [...systemMessage(values), { role: 'user', content: values.prompt! }] }
    : { prompt: values.prompt! };
  const params: GeneratorParams = { model_id: modelId, ...sampling(values), ...prompt };
  const result = await stream(engine, params, values);
  return result.interrupted ? 130 : 0;
}

async function chat(engine: Engine, values: Values): Promise<number> {
  const modelId = await loadModel(engine, values.model!, values);
  const history: ChatMessage[] = [...systemMessage(values)];
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: process.stdin.isTTY });
  // On a terminal readline takes Ctrl-C: during a reply it cancels the reply, at the prompt
  // it leaves. (Piped input gets the process's SIGINT, which stream() handles.)
  let reply: AbortController | undefined;
  rl.on('SIGINT', () => (reply ? reply.abort() : rl.close()));
  console.error(`chatting with ${modelId}; /reset clears the conversation, /exit or Ctrl-D leaves`);
  rl.setPrompt('> ');
  rl.prompt();
  try {
    // The line iterator queues what arrives during a reply, so piped turns are all answered.
    for await (const line of rl) {
      const text = line.trim();
      if (text === '/exit') return 0;
      if (text === '/reset') {
        history.splice(0, history.length, ...systemMessage(values));
      } else if (text) {
        history.push({ role: 'user', content: text });
        reply = new AbortController();
        const answer = await stream(engine, { model_id: modelId, messages: [...history], ...sampling(values) }, values, reply.signal);
        reply = undefined;
        history.push({ role: 'assistant', content: answer.text });
      }
      rl.prompt();
    }
    return 0;
  } finally {
    rl.close();
  }
}

/**
 * Streams one generation to stdout; Ctrl-C (or `interrupt`) cancels it: it ends `cancelled`
 * at once, and the runtime is told in the background.
 */
async function stream(
  engine: Engine,
  params: GeneratorParams,
  values: Values,
  interrupt?: AbortSignal,
): Promise<{ text: string; interrupted: boolean }> {
  const controller = new AbortController();
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) process.exit(130); // a second Ctrl-C does not wait
    interrupted = true;
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  interrupt?.addEventListener('abort', onSigint, { once: true });
  const started = performance.now();
  let firstTokenAt: number | undefined;
  let text = '';
  let end: StatsChunk | undefined;
  try {
    for await (const chunk of engine.createGenerator(params, { signal: controller.signal })) {
      if (values.json) process.stdout.write(JSON.stringify(chunk) + '\n');
      if (chunk.type === 'token') {
        firstTokenAt ??= performance.now();
        text += chunk.text;
        if (!values.json) process.stdout.write(chunk.text);
      } else if (chunk.type === 'stats') {
        end = chunk;
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
    interrupt?.removeEventListener('abort', onSigint);
  }
  if (!values.json) process.stdout.write('\n');
  if (end) {
    const s = end.stats;
    const clientTtft = firstTokenAt === undefined ? 'n/a' : `${(firstTokenAt - started).toFixed(1)} ms`;
    console.error(
      `[${end.finishReason}] ${s.tokens_generated} tokens · TTFT ${(s.time_to_first_token * 1000).toFixed(1)} ms ` +
        `(client ${clientTtft}) · ${s.tokens_per_second.toFixed(1)} tok/s · prompt ${s.prompt_tokens} tokens`,
    );
  }
  return { text, interrupted };
}

/** A directory or file is loaded under its name; anything else is taken as a model id. */
async function loadModel(engine: Engine, model: string, values: Values): Promise<string> {
  const path = resolve(model);
  const dtype = values.dtype ? dtypeOf(values.dtype) : undefined;
  const extra = dtype ? { dtype } : {};
  if (existsSync(path)) {
    const modelId = statSync(path).isDirectory() ? basename(path) : basename(path).replace(/\.gguf$/i, '');
    await engine.loadModel({ model_id: modelId, local_path: path, ...extra });
    return modelId;
  }
  await engine.loadModel({ model_id: model, ...extra });
  return model;
}

const DTYPES = ['float32', 'float16', 'bfloat16'] as const;

function dtypeOf(text: string): (typeof DTYPES)[number] {
  const found = DTYPES.find((d) => d === text);
  if (!found) throw new UsageError(`--dtype must be one of ${DTYPES.join(', ')}, got ${JSON.stringify(text)}`);
  return found;
}

/** The runtime's own converter, run as a one-off child process (no protocol involved). */
async function convertGguf(values: Values, file: string, out: string): Promise<number> {
  const options: Parameters<typeof runtimeProcessSpec>[0] = { runtimeArgs: ['convert-gguf', resolve(file), resolve(out)] };
  if (values.python) options.python = values.python;
  if (values.pythonpath) options.extraPythonPath = values.pythonpath.split(delimiter).filter(Boolean);
  const spec = runtimeProcessSpec(options);
  return new Promise((done) => {
    const child = spawn(spec.command, spec.args, { env: spec.env, stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', (error) => {
      console.error(`mlx-serving: cannot start ${spec.command}: ${error.message}`);
      done(3);
    });
    child.on('exit', (code) => done(code === 0 ? 0 : 1));
  });
}

type SamplingParams = Pick<GenerateParams, 'max_tokens' | 'temperature' | 'top_p' | 'seed'>;

function sampling(values: Values): SamplingParams {
  const params: SamplingParams = {
    max_tokens: values['max-tokens'] ? number('max-tokens', values['max-tokens']) : 256,
  };
  if (values.temperature !== undefined) params.temperature = number('temperature', values.temperature);
  if (values['top-p'] !== undefined) params.top_p = number('top-p', values['top-p']);
  if (values.seed !== undefined) params.seed = number('seed', values.seed);
  return params;
}

function systemMessage(values: Values): ChatMessage[] {
  return values.system ? [{ role: 'system', content: values.system }] : [];
}

function number(name: string, text: string): number {
  const value = Number(text);
  if (!Number.isFinite(value)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(text)}`);
  return value;
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(0)} MiB`;
}

function usage(message: string): number {
  console.error(`mlx-serving: ${message}\n\n${USAGE}`);
  return 2;
}

function report(error: unknown): number {
  if (error instanceof UsageError) return usage(error.message);
  if (error instanceof Error && error.name === 'AbortError') return 130;
  const message = error instanceof Error ? error.message : String(error);
  console.error(`mlx-serving: ${message}`);
  if (error instanceof InvalidParamsError) {
    for (const issue of error.issues) console.error(`  ${issue.path || '(params)'}: ${issue.message}`);
  }
  if (error instanceof RuntimeExitedError || error instanceof CircuitOpenError) return 3;
  if (error instanceof ProtocolError) return 4;
  return 1;
}

process.exitCode = await main(process.argv.slice(2));
