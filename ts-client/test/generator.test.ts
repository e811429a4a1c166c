/**
 * Generation on its own, fed by hand instead of by a runtime: how next() calls queue, how a
 * stream ends, and what it asks the runtime when it is cancelled.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Generation } from '../src/generator.js';

/** A Generation with a control that records the cancels it is asked to send. */
function generation(): { generation: Generation; cancels: string[] } {
  const cancels: string[] = [];
  return { generation: new Generation('s1', 'm', { cancel: (streamId) => cancels.push(streamId) }), cancels };
}

function chunk(token: string, tokenId: number) {
  return { stream_id: 's1', token, token_id: tokenId };
}

const stats = {
  stream_id: 's1',
  tokens_generated: 2,
  tokens_per_second: 10,
  time_to_first_token: 0.01,
  total_time: 0.2,
  prompt_tokens: 3,
};

test('next() calls made at once are queued and settle in order', async () => {
  const { generation: g } = generation();
  const iterator = g[Symbol.asyncIterator]();
  const calls = [iterator.next(), iterator.next(), iterator.next(), iterator.next()];
  g.acknowledge();
  g.pushChunk(chunk('a', 1));
  g.pushChunk(chunk('b', 2));
  g.pushStats(stats);
  g.complete({ stream_id: 's1', event: 'completed', finish_reason: 'stop' });
  const results = await Promise.all(calls);
  assert.deepEqual(
    results.map((r) => (r.done ? 'done' : r.value.type === 'token' ? r.value.text : r.value.type === 'stats' ? r.value.finishReason : r.value.type)),
    ['a', 'b', 'stop', 'done'],
  );
});

test('a failure goes to the first waiting next(); the others see the end', async () => {
  const { generation: g } = generation();
  const iterator = g[Symbol.asyncIterator]();
  const calls = [iterator.next(), iterator.next()].map((p) => p.then((r) => r, (e: unknown) => e));
  const boom = new Error('boom');
  g.fail(boom);
  const [first, second] = await Promise.all(calls);
  assert.equal(first, boom);
  assert.deepEqual(second, { done: true, value: undefined });
});

test('cancel() ends the stream at once, with the client counts, and cancels it on the runtime', async () => {
  const { generation: g, cancels } = generation();
  const iterator = g[Symbol.asyncIterator]();
  g.acknowledge();
  g.pushChunk(chunk('a', 1));
  assert.equal(((await iterator.next()).value as { text: string }).text, 'a');
  const waiting = iterator.next();
  g.cancel();
  const end = await waiting;
  assert.ok(!end.done && end.value.type === 'stats');
  assert.equal(end.value.finishReason, 'cancelled');
  assert.equal(end.value.stats.tokens_generated, 1);
  assert.equal(end.value.stats.prompt_tokens, 0);
  assert.ok(end.value.stats.total_time >= 0);
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  assert.deepEqual(cancels, ['s1']);
  assert.ok(g.done && g.cancelled);
  // What the runtime sends afterwards is dropped.
  g.pushChunk(chunk('late', 2));
  g.complete({ stream_id: 's1', event: 'completed', finish_reason: 'cancelled' });
  assert.deepEqual(await iterator.next(), { done: true, value: undefined });
  assert.deepEqual(cancels, ['s1']);
});

test('a stream cancelled before its acknowledgement is cancelled on the runtime when it comes', async () => {
  const { generation: g, cancels } = generation();
  const ends: Array<string | undefined> = [];
  g.onEnd((final) => ends.push(final?.finishReason));
  g.cancel();
  assert.deepEqual(cancels, []);
  assert.deepEqual(ends, ['cancelled']);
  g.acknowledge();
  assert.deepEqual(cancels, ['s1']);
});

test('a stream the runtime already ended is not cancelled when its acknowledgement is handled', () => {
  const { generation: g, cancels } = generation();
  g.pushStats(stats);
  g.complete({ stream_id: 's1', event: 'completed', finish_reason: 'stop' });
  g.acknowledge();
  g.cancel();
  assert.deepEqual(cancels, []);
  assert.equal(g.cancelled, false);
});

test('a client-side failure marked cancelOnRuntime cancels the stream there, once acknowledged', () => {
  const { generation: g, cancels } = generation();
  g.fail(new Error('idle'), { cancelOnRuntime: true });
  assert.deepEqual(cancels, []);
  g.acknowledge();
  assert.deepEqual(cancels, ['s1']);
});

test('return() while a next() waits settles that next() with the end', async () => {
  const { generation: g, cancels } = generation();
  const iterator = g[Symbol.asyncIterator]();
  g.acknowledge();
  const waiting = iterator.next();
  assert.deepEqual(await iterator.return!(), { done: true, value: undefined });
  assert.deepEqual(await waiting, { done: true, value: undefined });
  assert.deepEqual(cancels, ['s1']);
});
