/**
 * The runtime's memory budget through the client, against the real Python runtime: LRU
 * eviction around a pinned model (modelUnloaded events, runtimeState), a generate on an
 * evicted model answered with the same greedy tokens, keep-alive expiry, the typed refusal
 * of a load nothing can make room for, and -32006 with retryAfterMs for a stream.
 */
import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { RpcError, type Engine, type EngineEvents } from '../src/index.js';
import { eventually, makeModel, startEngine } from './support/runtime.js';

/** Bytes of tensor data in the model's safetensors file: what a load measures. */
function weightBytes(modelDir: string): number {
  const path = join(modelDir, 'model.safetensors');
  const header = Number(readFileSync(path).readBigUInt64LE(0));
  return statSync(path).size - 8 - header;
}

type Unloaded = EngineEvents['modelUnloaded'][0];

describe('memory budget against the Python runtime', () => {
  let modelDir: string;
  let weights: number;
  let engine: Engine;
  const unloaded: Unloaded[] = [];

  before(async () => {
    modelDir = await makeModel();
    weights = weightBytes(modelDir);
    engine = await startEngine({
      env: {
        MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES: String(Math.floor(2.5 * weights)),
        MLX_SERVING_SCHEDULER__PROMPT_CACHE_BYTES: '0',
      },
    });
    engine.on('modelUnloaded', (event) => unloaded.push(event));
  });
  after(() => engine.dispose());

  test('the oldest unpinned model is evicted, the pinned one never, and comes back on demand', async () => {
    const greedy = { prompt: 'The memory of the sea', max_tokens: 12, temperature: 0 };
    await engine.loadModel({ model_id: 'p', local_path: modelDir, pin: true });
    await engine.loadModel({ model_id: 'a', local_path: modelDir });
    const before = await engine.generate({ model_id: 'a', ...greedy });
    await engine.loadModel({ model_id: 'b', local_path: modelDir });
    await engine.loadModel({ model_id: 'c', local_path: modelDir });
    await eventually(() => unloaded.length >= 2, 5_000, 'two evictions');
    assert.deepEqual(
      unloaded.map((e) => [e.model_id, e.reason]),
      [
        ['a', 'evicted'],
        ['b', 'evicted'],
      ],
    );
    assert.match(unloaded[0]?.detail ?? '', /loading 'b'/);

    const state = await engine.runtimeState();
    const resident = Object.fromEntries(state.loaded_models.map((m) => [m.model_id, m.resident]));
    assert.deepEqual(resident, { p: true, a: false, b: false, c: true });
    assert.ok(state.loaded_models.find((m) => m.model_id === 'p')?.pinned);
    assert.equal(state.memory.budget_bytes, Math.floor(2.5 * weights));
    assert.equal(state.memory.used_bytes, 2 * weights);
    // The client still counts an evicted model as loaded: the runtime loads it on demand.
    assert.deepEqual(engine.loadedModels, ['p', 'a', 'b', 'c']);

    const after = await engine.generate({ model_id: 'a', ...greedy });
    assert.deepEqual(after.tokenIds, before.tokenIds);
    assert.equal(unloaded.at(-1)?.model_id, 'c');
  });

  test('a load nothing can make room for is refused with the budget and its holders', async () => {
    await engine.loadModel({ model_id: 'a', local_path: modelDir, pin: true });
    await assert.rejects(engine.loadModel({ model_id: 'd', local_path: modelDir }), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, 'ModelLoadError');
      const data = error.data as { budget_bytes: number; holders: Array<{ model_id?: string; pinned?: boolean }> };
      assert.equal(data.budget_bytes, Math.floor(2.5 * weights));
      assert.deepEqual(data.holders.map((h) => [h.model_id, h.pinned]).sort(), [
        ['a', true],
        ['p', true],
      ]);
      return true;
    });
    await engine.unloadModel('a');
  });

  test('a model unused past keep_alive_s is evicted and loaded again when asked for', async () => {
    const before = unloaded.length;
    await engine.loadModel({ model_id: 'k', local_path: modelDir, keep_alive_s: 0.3 });
    await eventually(() => unloaded.slice(before).some((e) => e.model_id === 'k'), 3_000, 'expiry');
    assert.equal(unloaded.at(-1)?.reason, 'expired');
    const state = await engine.runtimeState();
    const k = state.loaded_models.find((m) => m.model_id === 'k');
    assert.equal(k?.resident, false);
    assert.equal(k?.keep_alive_s, 0.3);
    const tokens = await engine.tokenize({ model_id: 'k', text: 'hello' });
    assert.ok(tokens.tokens.length > 0);
  });
});

describe('stream admission against the Python runtime', () => {
  let engine: Engine;
  let modelDir: string;

  before(async () => {
    modelDir = await makeModel();
    // The weights and room for one stream of 256 tokens (2 layers x 1 KV head x 32 dims x
    // key and value x float32, twice for the batch), not two.
    const stream = 256 * 2 * 1 * 32 * 2 * 4 * 2;
    engine = await startEngine({
      env: {
        MLX_SERVING_MODELS__MEMORY_BUDGET_BYTES: String(weightBytes(modelDir) + Math.floor(1.5 * stream)),
        MLX_SERVING_SCHEDULER__PROMPT_CACHE_BYTES: '0',
        MLX_SERVING_SCHEDULER__ADMISSION_TIMEOUT_S: '0',
      },
    });
    await engine.loadModel({ model_id: 'm', local_path: modelDir });
  });
  after(() => engine.dispose());

  test('a stream that does not fit is refused Overloaded with retryAfterMs', async () => {
    const params = { model_id: 'm', prompt: 'hello', max_tokens: 200, temperature: 0 };
    const first = engine.createGenerator(params);
    const iterator = first[Symbol.asyncIterator]();
    await iterator.next(); // the first stream holds its KV reservation now
    await assert.rejects(engine.generate(params), (error: unknown) => {
      assert.ok(error instanceof RpcError);
      assert.equal(error.code, 'Overloaded');
      assert.ok((error.retryAfterMs ?? 0) > 0);
      return true;
    });
    await first.cancel();
    const state = await engine.runtimeState();
    await eventually(async () => (await engine.runtimeState()).memory.kv_reserved_bytes === 0, 5_000, 'release');
    assert.equal(state.memory.streams_waiting, 0);
  });
});
