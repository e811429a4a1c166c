/**
 * What the tests share: how to launch the real runtime (env MLX_SERVING_PYTHON and
 * MLX_SERVING_PYTHONPATH, else the library's defaults: a local venv and the checkout's
 * runtime/), a generated test model (and a bias that keeps it from ending a stream by
 * chance), and the fake runtime for protocol-violation tests.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { createEngine, type Engine, type EngineOptions } from '../../src/index.js';
import { runtimeProcessSpec } from '../../src/launch.js';
import { silentLogger, type Logger } from '../../src/logger.js';

/** Options that start the real Python runtime. MLX_SERVING_TEST_LOG=1 shows its stderr. */
export function realRuntimeOptions(extra: EngineOptions = {}): EngineOptions {
  return { logger: testLogger(), ...extra };
}

export function testLogger(): Logger {
  if (!process.env['MLX_SERVING_TEST_LOG']) return silentLogger;
  const log = (level: string) => (message: string) => console.error(`[${level}] ${message}`);
  return { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

const tempDirs: string[] = [];
process.on('exit', () => {
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

export function tempDir(prefix = 'mlx-serving-test-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  tempDirs.push(dir);
  return dir;
}

/** A random-weight llama written by the runtime's own `make-model` command (~1 s). */
export async function makeModel(): Promise<string> {
  const dir = join(tempDir(), 'model');
  const spec = runtimeProcessSpec({ runtimeArgs: ['make-model', dir] });
  await new Promise<void>((resolve, reject) => {
    const child = spawn(spec.command, spec.args, { env: spec.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`make-model exited with ${code}:\n${stderr}`)),
    );
  });
  return dir;
}

/** A logit bias that bans the test model's end token (`<|im_end|>`): a stream sampled at a
 * temperature then runs until it is stopped or reaches max_tokens, never ending by chance
 * before the test is done with it. */
export async function noEos(engine: Engine, modelId: string): Promise<Record<string, number>> {
  const { tokens } = await engine.tokenize({ model_id: modelId, text: '<|im_end|>' });
  if (tokens.length !== 1) throw new Error(`<|im_end|> is ${tokens.length} tokens, not one`);
  return { [tokens[0]!]: -100 };
}

export async function startEngine(extra: EngineOptions = {}): Promise<Engine> {
  return createEngine(realRuntimeOptions(extra));
}

const here = dirname(fileURLToPath(import.meta.url));

/** Options that start test/support/fake-runtime.ts in `mode` instead of Python. */
export function fakeRuntimeOptions(mode: string, extra: EngineOptions = {}): EngineOptions {
  return {
    command: [process.execPath, join(here, 'fake-runtime.js')],
    env: { FAKE_RUNTIME_MODE: mode },
    logger: testLogger(),
    ...extra,
  };
}

/** Resolves when `predicate` holds, polling; rejects after `timeoutMs`. */
export async function eventually(predicate: () => boolean | Promise<boolean>, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
