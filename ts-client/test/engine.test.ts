/**
 * End to end against the real Python runtime and a generated model: load, tokenize round
 * trip, streaming vs whole generation, stats, cancel with a concurrent stream, error shapes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  InvalidParamsError,
  RpcError,
  type Engine,
  type EngineEvents,
  type GenerationChunk,
  type StatsChunk,
  type TokenChunk,
} from '../src/index.js';
import { eventually, makeModel, noEos, startEngine } from './support/runtime.js';

const MODEL = 'tiny';

describe('engine against the Python runtime', () => {
  let engine: Engine;
  const events: Array<[keyof EngineEvents, unknown]> = [];

  before(async () => {
    const [modelDir, started] = await Promise.all([makeModel(), startEngine()]);
    engine = started;
    for (const name of ['modelLoaded', 'modelUnloaded', 'generationStarted', 'generationCompleted'] as const) {
      engine.on(name, (event: unknown) => events.push([name, event]));
    }
    const loaded = await engine.loadModel({ model_id: MODEL, local_path: modelDir });
    assert.equal(loaded.model_id, MODEL);
    assert.equal(loaded.state, 'ready');
    assert.ok(loaded.parameter_count > 0);
  });
  after(() => engine.dispose());

  test('runtime info comes from the readiness probe and on request', async () => {
    assert.ok(engine.info?.capabilities.includes('generate'));
    const info = await engine.runtimeInfo();
    assert.equal(info.protocol, 'json-rpc-2.0');
    assert.ok(info.capabilities.includes('cancel'));
    assert.ok(events.some(([name, e]) => name === 'modelLoaded' && (e as { model_id: string }).model_id === MODEL));
    assert.deepEqual(engine.loadedModels, [MODEL]);
  });

  test('tokenize and detokenize round trip', async () => {
    const text = 'Hello world, the sea is calm.';
    const { tokens, token_strings } = await engine.tokenize({ model_id: MODEL, text, add_special_tokens: false });
    assert.ok(tokens.length > 0);
    assert.equal(tokens.length, token_strings.length);
    const back = await engine.detokenize({ model_id: MODEL, tokens });
    assert.equal(back.text, text);
  });

  test('greedy: streamed chunks concatenate to generate() text, then stats arrive', async () => {
    const params = { model_id: MODEL, prompt: 'Tell me about the sea.', max_tokens: 24, temperature: 0 };
    const chunks: GenerationChunk[] = [];
    const generation = engine.createGenerator(params);
    for await (const chunk of generation) chunks.push(chunk);

    const last = chunks.at(-1) as StatsChunk;
    assert.equal(last.type, 'stats');
    assert.equal(chunks.filter((c) => c.type === 'stats').length, 1, 'one stats chunk, last');
    const tokens = chunks.filter((c): c is TokenChunk => c.type === 'token');
    assert.ok(tokens.length > 0);
    assert.equal(last.streamId, generation.streamId);
    assert.equal(last.stats.stream_id, generation.streamId);
    assert.ok(last.stats.tokens_generated >= tokens.length);
    assert.ok(last.stats.time_to_first_token > 0);
    assert.ok(last.stats.prompt_tokens > 0);
    if (last.finishReason === 'length') assert.equal(last.stats.tokens_generated, params.max_tokens);

    const whole = await engine.generate(params);
    assert.equal(whole.text, tokens.map((c) => c.text).join(''));
    assert.deepEqual(
      whole.tokenIds,
      tokens.map((c) => c.tokenId),
    );
    assert.equal(whole.finishReason, last.finishReason);
    assert.equal(whole.stats.tokens_generated, last.stats.tokens_generated);

    const started = events.filter(([n, e]) => n === 'generationStarted' && (e as { streamId: string }).streamId === generation.streamId);
    const completed = events.filter(
      ([n, e]) => n === 'generationCompleted' && (e as { streamId: string }).streamId === generation.streamId,
    );
    assert.equal(started.length, 1);
    assert.equal(completed.length, 1);
  });

  test('logprobs are passed through when asked for', async () => {
    const chunks: GenerationChunk[] = [];
    for await (const chunk of engine.createGenerator({ model_id: MODEL, prompt: 'Hi', max_tokens: 4, logprobs: true, top_logprobs: 2 })) {
      chunks.push(chunk);
    }
    const tokens = chunks.filter((c): c is TokenChunk => c.type === 'token');
    assert.ok(tokens.length > 0);
    for (const token of tokens) {
      assert.equal(typeof token.logprob, 'number');
      assert.ok(token.logprob! <= 0);
      assert.equal(token.topLogprobs?.length, 2);
    }
  });

  test('concurrent generators: each stream gets its own tokens, the same as when run alone', async () => {
    const prompts = ['The sea', 'A mountain far away', 'Once upon a time', 'Numbers: 1, 2, 3'];
    const params = (prompt: string, i: number) => ({ model_id: MODEL, prompt, max_tokens: 6 + i, temperature: 0 });
    const alone = [];
    for (const [i, prompt] of prompts.entries()) alone.push(await engine.generate(params(prompt, i)));

    const generations = prompts.map((prompt, i) => engine.createGenerator(params(prompt, i)));
    assert.equal(new Set(generations.map((g) => g.streamId)).size, prompts.length);
    const together = await Promise.all(
      generations.map(async (generation) => {
        const chunks: GenerationChunk[] = [];
        for await (const chunk of generation) chunks.push(chunk);
        return chunks;
      }),
    );
    for (const [i, chunks] of together.entries()) {
      const tokens = chunks.filter((c): c is TokenChunk => c.type === 'token');
      assert.deepEqual(
        tokens.map((c) => c.tokenId),
        alone[i]!.tokenIds,
        `stream ${i}`,
      );
      const end = chunks.at(-1) as StatsChunk;
      assert.equal(end.type, 'stats');
      assert.equal(end.stats.stream_id, generations[i]!.streamId);
      assert.equal(end.stats.tokens_generated, tokens.length);
    }
  });

  test('abort cancels one stream with finish reason cancelled; a concurrent one completes', async () => {
    const controller = new AbortController();
    const logit_bias = await noEos(engine, MODEL);
    const long = engine.createGenerator(
      { model_id: MODEL, prompt: 'Write forever.', max_tokens: 4000, temperature: 0.8, logit_bias },
      { signal: controller.signal },
    );
    const short = engine.generate({ model_id: MODEL, prompt: 'Be brief.', max_tokens: 16, temperature: 0 });
    let tokens = 0;
    let end: StatsChunk | undefined;
    for await (const chunk of long) {
      if (chunk.type === 'token') {
        tokens += 1;
        if (tokens === 3) controller.abort();
      } else if (chunk.type === 'stats') {
        end = chunk;
      }
    }
    assert.equal(end?.finishReason, 'cancelled');
    assert.ok(end.stats.tokens_generated < 4000);
    const other = await short;
    assert.ok(['length', 'stop'].includes(other.finishReason));
    assert.notEqual(other.finishReason, 'cancelled');
  });

  test('an abort before the runtime acknowledged the stream cancels it once acknowledged', async () => {
    const controller = new AbortController();
    const logit_bias = await noEos(engine, MODEL);
    const generation = engine.createGenerator(
      { model_id: MODEL, prompt: 'Write forever.', max_tokens: 4000, temperature: 0.8, logit_bias },
      { signal: controller.signal },
    );
    await new Promise((resolve) => setImmediate(resolve)); // `generate` is sent, not yet answered
    controller.abort();
    const chunks: GenerationChunk[] = [];
    for await (const chunk of generation) chunks.push(chunk);
    const end = chunks.at(-1) as StatsChunk;
    assert.equal(end.type, 'stats');
    assert.equal(end.finishReason, 'cancelled');
    assert.ok(end.stats.tokens_generated < 4000);
    await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the stream to end');
  });

  test('an already aborted signal fails at once without starting a stream', async () => {
    const error = await engine
      .generate({ model_id: MODEL, prompt: 'x', max_tokens: 4 }, { signal: AbortSignal.abort() })
      .catch((e: unknown) => e);
    assert.ok(error instanceof Error && error.name === 'AbortError', String(error));
  });

  test('breaking out of the loop cancels the stream on the runtime', async () => {
    const logit_bias = await noEos(engine, MODEL);
    for await (const chunk of engine.createGenerator({ model_id: MODEL, prompt: 'Go on.', max_tokens: 4000, temperature: 0.8, logit_bias })) {
      if (chunk.type === 'token') break;
    }
    await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the stream to end');
  });

  test('invalid params are caught before sending, with field paths', async () => {
    const error = await engine.generate({ model_id: MODEL, prompt: 'x', max_tokens: 0 }).catch((e: unknown) => e);
    assert.ok(error instanceof InvalidParamsError, String(error));
    assert.equal(error.code, 'InvalidParams');
    assert.equal(error.rpcCode, -32602);
    assert.equal(error.source, 'client');
    assert.equal(error.field, 'max_tokens');
    assert.equal(error.issues[0]?.path, 'max_tokens');
    assert.match(error.message, /max_tokens/);

    // Every API method reports through its promise, never by throwing synchronously.
    const empty = await engine.tokenize({ model_id: '', text: 'x' }).catch((e: unknown) => e);
    assert.ok(empty instanceof InvalidParamsError);
    assert.equal(empty.field, 'model_id');
  });

  test('an unknown message role: -32602 at messages[0].role, from the client and from the runtime', async () => {
    const messages = [{ role: 'robot' as 'user', content: 'Hello' }];
    const local = await engine.generate({ model_id: MODEL, messages, max_tokens: 2 }).catch((e: unknown) => e);
    assert.ok(local instanceof InvalidParamsError, String(local));
    assert.equal(local.source, 'client');
    assert.equal(local.field, 'messages[0].role');
    // engine.request sends without the client's check: the runtime refuses it the same way.
    const remote = await engine.request('generate', { model_id: MODEL, messages, max_tokens: 2 }).catch((e: unknown) => e);
    assert.ok(remote instanceof InvalidParamsError, String(remote));
    assert.equal(remote.source, 'runtime');
    assert.equal(remote.field, 'messages[0].role');
  });

  test("the runtime's own -32602 has the same shape", async () => {
    // Above the runtime's configured max_temperature (2.0): only the runtime knows that limit.
    const error = await engine.generate({ model_id: MODEL, prompt: 'x', temperature: 5 }).catch((e: unknown) => e);
    assert.ok(error instanceof InvalidParamsError, String(error));
    assert.equal(error.source, 'runtime');
    assert.equal(error.field, 'temperature');
    assert.ok(error.issues.length > 0);
  });

  test("structured: {schema} goes out as guidance: {mode: 'json_schema', schema}", async () => {
    // An invalid schema: the runtime's error names `guidance.schema…`, so the mapping happened
    // (test/guidance.test.ts has the valid outputs).
    const error = await engine
      .generate({ model_id: MODEL, prompt: 'x', structured: { schema: { type: 'wat' }, format: 'json' } })
      .catch((e: unknown) => e);
    assert.ok(error instanceof InvalidParamsError, String(error));
    assert.equal(error.field, 'guidance.schema.type');
    const local = await engine
      .generate({ model_id: MODEL, prompt: 'x', structured: { schema: {}, format: 'xml' as 'json' } })
      .catch((e: unknown) => e);
    assert.ok(local instanceof InvalidParamsError && local.field === 'structured.format', String(local));
  });

  test('a model that is not loaded: RpcError ModelNotLoaded with its model_id', async () => {
    const error = await engine.tokenize({ model_id: 'absent', text: 'x' }).catch((e: unknown) => e);
    assert.ok(error instanceof RpcError, String(error));
    assert.equal(error.code, 'ModelNotLoaded');
    assert.equal(error.rpcCode, -32005);
    assert.equal(error.details?.['model_id'], 'absent');
  });

  test('unload, then the model is gone', async () => {
    await engine.unloadModel(MODEL);
    assert.deepEqual(engine.loadedModels, []);
    assert.ok(
      events.some(([name, e]) => name === 'modelUnloaded' && (e as { reason: string }).reason === 'unloaded'),
      JSON.stringify(events.filter(([name]) => name === 'modelUnloaded')),
    );
    const error = await engine.generate({ model_id: MODEL, prompt: 'x', max_tokens: 2 }).catch((e: unknown) => e);
    assert.ok(error instanceof RpcError && error.code === 'ModelNotLoaded', String(error));
  });
});
