/**
 * A stream whose consumer does not read (fake runtime): past maxUnreadChunks it is cancelled
 * on the runtime and its iteration fails with SlowConsumerError after the chunks that were
 * waiting; the bound is the engine's default unless the call sets its own.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createEngine, SlowConsumerError, type Engine } from '../src/index.js';
import { eventually, fakeRuntimeOptions } from './support/runtime.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function withEngine(body: (engine: Engine) => Promise<void>): Promise<void> {
  const engine = await createEngine(fakeRuntimeOptions('normal', { maxUnreadChunks: 50 }));
  try {
    await body(engine);
  } finally {
    await engine.dispose();
  }
}

test('a stream nobody reads fails with SlowConsumerError and is cancelled on the runtime', () =>
  withEngine(async (engine) => {
    const failed: unknown[] = [];
    engine.on('generationFailed', (event) => failed.push(event));
    const generation = engine.createGenerator({ model_id: 'm', prompt: 'flood' });
    await eventually(() => generation.done, 5_000, 'the stream to give up');
    // The runtime was told: its stream ends there too.
    await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the cancel to reach the runtime');
    const texts: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const chunk of generation) if (chunk.type === 'token') texts.push(chunk.text);
      })(),
      (error: unknown) => error instanceof SlowConsumerError && error.maxUnreadChunks === 50 && error.streamId === generation.streamId,
    );
    assert.deepEqual(texts, Array.from({ length: 50 }, (_, i) => `t${i} `), 'the chunks that waited, in order, then the error');
    assert.deepEqual(failed, [], 'a client-side failure, as an idle timeout: no generationFailed event');
    // The engine carries on.
    assert.equal((await engine.generate({ model_id: 'm', prompt: 'hello' })).text, 'fine');
  }));

test('a call sets its own bound (0: none)', () =>
  withEngine(async (engine) => {
    const generation = engine.createGenerator({ model_id: 'm', prompt: 'flood' }, { maxUnreadChunks: 0 });
    await sleep(300); // all 200 chunks arrive unread
    assert.equal(generation.done, false);
    let read = 0;
    for await (const chunk of generation) {
      if (chunk.type !== 'token') continue;
      read += 1;
      if (read === 200) break;
    }
    assert.equal(read, 200);
  }));
