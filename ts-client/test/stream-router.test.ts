/**
 * StreamRouter on its own: notifications reach the Generation they name (batched ones
 * split by stream), the engine's events are emitted, an invalid notification fails the
 * streams it names, and a stream leaves the router when it ends.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';

import { ProtocolError, StreamFailedError } from '../src/errors.js';
import type { EngineEvents } from '../src/events.js';
import { Generation, type GenerationChunk } from '../src/generator.js';
import { ClientLogger, silentLogger } from '../src/logger.js';
import { StreamRouter } from '../src/stream-router.js';

function setup(idleTimeoutMs = 0) {
  const events = new EventEmitter<EngineEvents>();
  const cancels: string[] = [];
  const router = new StreamRouter(events, new ClientLogger(silentLogger), idleTimeoutMs);
  const open = (streamId: string) => {
    const generation = new Generation(streamId, 'm', { cancel: (id) => cancels.push(id) });
    generation.acknowledge();
    router.add(generation);
    return generation;
  };
  return { events, router, cancels, open };
}

async function texts(generation: Generation): Promise<Array<string>> {
  const out: string[] = [];
  try {
    for await (const c of generation) out.push(describe(c));
  } catch (error) {
    out.push(`!${(error as Error).constructor.name}`);
  }
  return out;
}

const describe = (c: GenerationChunk) => (c.type === 'token' ? c.text : c.type === 'stats' ? `<${c.finishReason}>` : `<${c.type}>`);

const stats = (streamId: string) => ({
  stream_id: streamId,
  tokens_generated: 1,
  tokens_per_second: 1,
  time_to_first_token: 0,
  total_time: 0,
  prompt_tokens: 1,
});

test('chunks, tool calls, stats and the final event reach the stream they name', async () => {
  const { events, router, open } = setup();
  const a = open('a');
  const b = open('b');
  const completed: string[] = [];
  events.on('generationCompleted', (e) => completed.push(`${e.streamId}:${e.finishReason}`));
  router.notification('stream.chunk', { stream_id: 'a', token: 'x', token_id: 1 });
  router.notification('stream.chunk', {
    stream_id: 'a',
    is_batch: true,
    batch_size: 2,
    tokens: [
      { stream_id: 'b', token: 'y', token_id: 2 },
      { stream_id: 'a', token: 'z', token_id: 3 },
    ],
  });
  router.notification('stream.tool_call', { stream_id: 'b', index: 0, id: 'call_0', name: 'f', arguments: '{}' });
  router.notification('stream.chunk', { stream_id: 'nobody', token: 'q', token_id: 4 }); // dropped
  for (const id of ['a', 'b']) {
    router.notification('stream.stats', stats(id));
    router.notification('stream.event', { stream_id: id, event: 'completed', finish_reason: 'stop', is_final: true });
  }
  assert.deepEqual(await texts(a), ['x', 'z', '<stop>']);
  assert.deepEqual(await texts(b), ['y', '<tool_call>', '<stop>']);
  assert.deepEqual(completed, ['a:stop', 'b:stop']);
  assert.equal(router.has('a'), false, 'an ended stream leaves the router');
});

test("the runtime's error event fails the stream and is reported", async () => {
  const { events, router, open } = setup();
  const a = open('a');
  const failed: unknown[] = [];
  events.on('generationFailed', (e) => failed.push(e.error));
  router.notification('stream.event', { stream_id: 'a', event: 'error', error: 'boom', error_code: -32002, is_final: true });
  assert.deepEqual(await texts(a), ['!StreamFailedError']);
  assert.ok(failed[0] instanceof StreamFailedError);
});

test('an invalid notification fails the streams it names and cancels them; otherwise it is reported', async () => {
  const { events, router, cancels, open } = setup();
  const a = open('a');
  const b = open('b');
  const c = open('c');
  const errors: Error[] = [];
  events.on('error', (e) => errors.push(e));
  const error = new ProtocolError('invalid stream.chunk notification');
  router.invalidNotification({ stream_id: 'a', tokens: [{ stream_id: 'b' }, null] }, error);
  assert.deepEqual(await texts(a), ['!ProtocolError']);
  assert.deepEqual(await texts(b), ['!ProtocolError']);
  assert.deepEqual(cancels, ['a', 'b']);
  assert.equal(c.done, false);
  router.invalidNotification({ stream_id: 'gone' }, error);
  assert.deepEqual(errors, [error]);
});

test('runtime notifications become engine events; eviction also says modelUnloaded', () => {
  const { events, router } = setup();
  const seen: string[] = [];
  events.on('progress', (p) => seen.push(`progress:${p.task}`));
  events.on('runtimeEvent', (e) => seen.push(`runtimeEvent:${e.event}`));
  events.on('modelUnloaded', (e) => seen.push(`modelUnloaded:${e.model_id}:${e.reason}`));
  router.notification('runtime.progress', { task: 'load', model_id: 'm', done: 1, total: 2, unit: 'steps' });
  router.notification('runtime.event', { event: 'model_unloaded', model_id: 'm', reason: 'evicted', timestamp: 0 });
  router.notification('runtime.event', { event: 'model_unloaded', model_id: 'n', reason: 'unloaded', timestamp: 0 });
  assert.deepEqual(seen, [
    'progress:load',
    'modelUnloaded:m:evicted',
    'runtimeEvent:model_unloaded',
    'runtimeEvent:model_unloaded',
  ]);
});

test('a stream idle for longer than the timeout fails and is cancelled; a notification resets the timer', async () => {
  const { router, cancels, open } = setup(300);
  const a = open('a');
  for (let i = 0; i < 3; i += 1) {
    await new Promise((r) => setTimeout(r, 50));
    router.notification('stream.chunk', { stream_id: 'a', token: String(i), token_id: i });
  }
  assert.equal(a.done, false, 'kept alive by its chunks');
  assert.deepEqual(await texts(a), ['0', '1', '2', '!RequestTimeoutError']);
  assert.deepEqual(cancels, ['a']);
});

test('failAll ends every live stream with the error', async () => {
  const { router, open } = setup();
  const streams = [open('a'), open('b')];
  router.failAll(new StreamFailedError('x', 'gone', null));
  for (const s of streams) assert.deepEqual(await texts(s), ['!StreamFailedError']);
  assert.equal(router.has('a') || router.has('b'), false);
});
