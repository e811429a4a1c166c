/**
 * Cancellation seen from the engine (fake runtime): an abort ends the iteration at once
 * even when the runtime cannot answer, the runtime is told in the background, a stream
 * that ends before its `generate` went out never reaches the runtime, and one whose
 * acknowledgement came too late is cancelled when it comes.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { createEngine, RequestTimeoutError, type Engine, type GenerationChunk, type RuntimeStatus } from '../src/index.js';
import { eventually, fakeRuntimeOptions } from './support/runtime.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The chunks, or 'pending' when the iteration has not ended after `ms`. */
async function collectWithin(iterable: AsyncIterable<GenerationChunk>, ms: number): Promise<GenerationChunk[] | 'pending'> {
  const chunks: GenerationChunk[] = [];
  const loop = (async () => {
    for await (const chunk of iterable) chunks.push(chunk);
    return chunks;
  })();
  return Promise.race([loop, sleep(ms).then(() => 'pending' as const)]);
}

/** How many `generate` requests the fake runtime process has received. */
async function generatesReceived(engine: Engine): Promise<number> {
  return (await engine.tokenize({ model_id: 'm', text: 'count:generate' })).tokens[0]!;
}

const describeChunks = (chunks: GenerationChunk[] | 'pending') =>
  chunks === 'pending' ? chunks : chunks.map((c) => (c.type === 'token' ? c.text : c.type === 'stats' ? `<${c.finishReason}>` : `<${c.type}>`));

describe('abort and cancel (fake runtime)', () => {
  test('an abort ends the iteration at once while the runtime cannot answer; the cancel follows', async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal'));
    const pid = engine.pid!;
    try {
      const generation = engine.createGenerator({ model_id: 'm', prompt: 'forever' }, { signal: AbortSignal.timeout(300) });
      const iterator = generation[Symbol.asyncIterator]();
      assert.equal((await iterator.next()).value?.type, 'token');
      process.kill(pid, 'SIGSTOP');
      const started = Date.now();
      const rest = await collectWithin({ [Symbol.asyncIterator]: () => iterator }, 2_000);
      assert.deepEqual(describeChunks(rest), ['<cancelled>']);
      assert.ok(Date.now() - started < 1_500, `ended after ${Date.now() - started} ms`);
      const end = (rest as GenerationChunk[])[0]!;
      assert.ok(end.type === 'stats' && end.stats.tokens_generated === 1);
      process.kill(pid, 'SIGCONT');
      // The cancel sent in the background reaches the runtime once it runs again.
      await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the stream to end there');
    } finally {
      process.kill(pid, 'SIGCONT');
      await engine.dispose();
    }
  });

  test('a generator aborted while the runtime restarts ends at once; its generate is never sent', async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal', { restart: { initialDelayMs: 1_000 } }));
    engine.on('error', () => {});
    const statuses: RuntimeStatus[] = [];
    engine.on('runtimeStatus', (status) => statuses.push(status));
    try {
      process.kill(engine.pid!, 'SIGKILL');
      await eventually(() => statuses.some((s) => s.state === 'restarting'), 5_000, 'the crash');
      const controller = new AbortController();
      const generation = engine.createGenerator({ model_id: 'm', prompt: 'forever' }, { signal: controller.signal });
      setTimeout(() => controller.abort(), 50);
      const started = Date.now();
      assert.deepEqual(describeChunks(await collectWithin(generation, 3_000)), ['<cancelled>']);
      assert.ok(Date.now() - started < 500, `ended after ${Date.now() - started} ms`);
      await eventually(() => statuses.some((s) => s.state === 'ready'), 5_000, 'the restart');
      assert.equal(await generatesReceived(engine), 0);
    } finally {
      await engine.dispose();
    }
  });

  test('aborting in the tick the generators are created sends no generate and ends them cancelled', async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal'));
    try {
      const controller = new AbortController();
      const generations = Array.from({ length: 20 }, () =>
        engine.createGenerator({ model_id: 'm', prompt: 'forever' }, { signal: controller.signal }),
      );
      controller.abort();
      for (const generation of generations) {
        const chunks = await collectWithin(generation, 2_000);
        assert.deepEqual(describeChunks(chunks), ['<cancelled>']);
        const end = (chunks as GenerationChunk[])[0]!;
        assert.ok(end.type === 'stats' && end.stats.tokens_generated === 0);
      }
      assert.equal(await generatesReceived(engine), 0);
      assert.equal((await engine.runtimeState()).active_streams, 0);
    } finally {
      await engine.dispose();
    }
  });
});

test('streams whose generate acknowledgement timed out are cancelled when it comes late', async () => {
  const engine = await createEngine(fakeRuntimeOptions('normal'));
  const pid = engine.pid!;
  try {
    process.kill(pid, 'SIGSTOP');
    const generations = Array.from({ length: 8 }, () =>
      engine.createGenerator({ model_id: 'm', prompt: 'forever' }, { timeoutMs: 200 }),
    );
    const errors = await Promise.all(
      generations.map(async (generation) => {
        try {
          for await (const chunk of generation) void chunk;
        } catch (error) {
          return error;
        }
        return undefined;
      }),
    );
    for (const error of errors) assert.ok(error instanceof RequestTimeoutError, String(error));
    process.kill(pid, 'SIGCONT');
    await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the late streams to be cancelled');
    assert.equal(await generatesReceived(engine), 8);
  } finally {
    process.kill(pid, 'SIGCONT');
    await engine.dispose();
  }
});

test('one AbortSignal shared by many live streams and calls prints no MaxListenersExceededWarning', async () => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  const engine = await createEngine(fakeRuntimeOptions('normal'));
  try {
    const controller = new AbortController();
    const { signal } = controller;
    const iterators = Array.from({ length: 16 }, () =>
      engine.createGenerator({ model_id: 'm', prompt: 'forever' }, { signal })[Symbol.asyncIterator](),
    );
    for (const iterator of iterators) assert.equal((await iterator.next()).value?.type, 'token');
    await Promise.all(Array.from({ length: 16 }, () => engine.tokenize({ model_id: 'm', text: 'x' }, { signal })));
    controller.abort();
    for (const iterator of iterators) {
      const end = await iterator.next();
      assert.ok(!end.done && end.value.type === 'stats' && end.value.finishReason === 'cancelled');
    }
    await sleep(10); // Node emits warnings on a later tick
    assert.deepEqual(
      warnings.map((w) => w.name),
      [],
    );
  } finally {
    process.off('warning', onWarning);
    await engine.dispose();
  }
});
