/**
 * engine.embed() against the real Python runtime and a generated model: one vector per
 * text, the same alone and in a batch, unit length, and empty input refused at `input`.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { InvalidParamsError, type Engine } from '../src/index.js';
import { makeModel, startEngine } from './support/runtime.js';

const MODEL = 'tiny';
const TEXTS = ['hello world', 'a', 'the quick brown fox jumps over the lazy dog', 'short text'];

const norm = (v: number[]): number => Math.sqrt(v.reduce((sum, x) => sum + x * x, 0));

describe('engine.embed', () => {
  let engine: Engine;
  let hiddenSize: number;

  before(async () => {
    const [modelDir, started] = await Promise.all([makeModel(), startEngine()]);
    engine = started;
    hiddenSize = (JSON.parse(readFileSync(join(modelDir, 'config.json'), 'utf8')) as { hidden_size: number }).hidden_size;
    await engine.loadModel({ model_id: MODEL, local_path: modelDir });
  });
  after(() => engine.dispose());

  test('one unit-length vector of the hidden size per text, the same alone and in a batch', async () => {
    const batch = await engine.embed({ model_id: MODEL, input: TEXTS });
    assert.equal(batch.embeddings.length, TEXTS.length);
    assert.equal(batch.dimensions, hiddenSize);
    assert.ok(batch.prompt_tokens >= TEXTS.length);
    for (const [index, text] of TEXTS.entries()) {
      const vector = batch.embeddings[index]!;
      assert.equal(vector.length, hiddenSize);
      assert.ok(Math.abs(norm(vector) - 1) < 1e-6, `norm ${norm(vector)}`);
      const alone = (await engine.embed({ model_id: MODEL, input: text })).embeddings[0]!;
      const worst = Math.max(...alone.map((x, i) => Math.abs(x - vector[i]!)));
      assert.ok(worst < 1e-4, `text ${index}: ${worst}`);
    }
    assert.ok(engine.info?.capabilities.includes('embed'));
  });

  test('normalize: false and last-token pooling reach the runtime', async () => {
    const raw = await engine.embed({ model_id: MODEL, input: 'hello', normalize: false, pooling: 'last' });
    assert.ok(Math.abs(norm(raw.embeddings[0]!) - 1) > 1e-2);
  });

  test('an empty list or an empty string: InvalidParams at input, from the client and the runtime', async () => {
    const list = await engine.embed({ model_id: MODEL, input: [] }).catch((e: unknown) => e);
    assert.ok(list instanceof InvalidParamsError, String(list));
    assert.equal(list.source, 'client');
    assert.equal(list.field, 'input');
    const text = await engine.embed({ model_id: MODEL, input: ['fine', ''] }).catch((e: unknown) => e);
    assert.ok(text instanceof InvalidParamsError, String(text));
    assert.equal(text.field, 'input[1]');
    // engine.request sends without the client's check: the runtime refuses it the same way.
    const remote = await engine.request('embed', { model_id: MODEL, input: '' }).catch((e: unknown) => e);
    assert.ok(remote instanceof InvalidParamsError, String(remote));
    assert.equal(remote.source, 'runtime');
    assert.equal(remote.field, 'input');
  });
});
