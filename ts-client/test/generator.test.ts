/**
 * Generation on its own, fed by hand instead of by a runtime: how next() calls queue, how a
 * stream ends, and what it asks the runtime when it is cancelled.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { SlowConsumerError } from '../src/errors.js';
import { DEFAULT_MAX_UNREAD_CHUNKS, Generation, type GenerationChunk } from '../src/generator.js';

/** A Generation with a control that records the cancels it is asked to send. */
function generation(maxUnreadChunks?: number): { generation: Generation; cancels: string[] } {
  const cancels: string[] = [];
  return { generation: new Generation('s1', 'm', { cancel: (streamId) => cancels.push(streamId) }, maxUnreadChunks), cancels };
}

/** What an iteration yields to its end, then what it throws (or 'end'). */
async function drain(g: Generation): Promise<{ texts: string[]; end: unknown }> {
  const texts: string[] = [];
  try {
    for await (const c of g) texts.push(c.type === 'token' ? c.text : c.type === 'stats' ? `<${c.finishReason}>` : `<${c.type}>`);
  } catch (error) {
    return { texts, end: error };
  }
  return { texts, end: 'end' };
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

test('a consumer that falls maxUnreadChunks behind fails the stream, after what was waiting, and cancels it', async () => {
  const { generation: g, cancels } = generation(3);
  const ends: unknown[] = [];
  g.onEnd((final) => ends.push(final));
  g.acknowledge();
  for (let i = 0; i < 3; i += 1) g.pushChunk(chunk(String(i), i));
  assert.equal(g.done, false, 'at the bound: still running');
  g.pushChunk(chunk('3', 3));
  assert.equal(g.done, true);
  assert.deepEqual(cancels, ['s1'], 'cancelled on the runtime at once');
  assert.deepEqual(ends, [undefined], 'ended without a stats chunk');
  g.pushChunk(chunk('late', 4)); // what the runtime still sends is dropped
  const { texts, end } = await drain(g);
  assert.deepEqual(texts, ['0', '1', '2']);
  assert.ok(end instanceof SlowConsumerError);
  assert.equal(end.code, 'SlowConsumer');
  assert.equal(end.streamId, 's1');
  assert.equal(end.maxUnreadChunks, 3);
  assert.equal(g.cancelled, false, 'not a cancel the consumer asked for');
});

test('tool calls count as unread chunks; a stream not yet acknowledged is cancelled when it is', () => {
  const { generation: g, cancels } = generation(1);
  g.pushChunk(chunk('a', 1));
  g.pushToolCall({ stream_id: 's1', index: 0, id: 'call_0', name: 'f', arguments: '{}' });
  assert.equal(g.done, true);
  assert.deepEqual(cancels, []);
  g.acknowledge();
  assert.deepEqual(cancels, ['s1']);
});

test('a consumer that keeps up is never behind, however long the stream', async () => {
  const { generation: g, cancels } = generation(2);
  const iterator = g[Symbol.asyncIterator]();
  g.acknowledge();
  const texts: string[] = [];
  for (let i = 0; i < 50; i += 1) {
    g.pushChunk(chunk(String(i), i));
    g.pushChunk(chunk(String(i), i)); // two unread: at the bound
    for (let j = 0; j < 2; j += 1) texts.push(((await iterator.next()).value as { text: string }).text);
  }
  g.pushStats(stats);
  g.complete({ stream_id: 's1', event: 'completed', finish_reason: 'stop' });
  assert.equal(texts.length, 100);
  assert.equal(((await iterator.next()).value as GenerationChunk).type, 'stats');
  assert.deepEqual(cancels, []);
});

test('the final stats chunk does not count against the bound', async () => {
  const { generation: g, cancels } = generation(2);
  g.acknowledge();
  g.pushChunk(chunk('a', 1));
  g.pushChunk(chunk('b', 2));
  g.pushStats(stats);
  g.complete({ stream_id: 's1', event: 'completed', finish_reason: 'stop' });
  assert.deepEqual(await drain(g), { texts: ['a', 'b', '<stop>'], end: 'end' });
  assert.deepEqual(cancels, []);
});

test('maxUnreadChunks 0 is no bound; the default is 8192', async () => {
  const unbounded = generation(0).generation;
  for (let i = 0; i < 20_000; i += 1) unbounded.pushChunk(chunk('x', i));
  assert.equal(unbounded.done, false);
  assert.equal(DEFAULT_MAX_UNREAD_CHUNKS, 8192);
  const { generation: g } = generation();
  for (let i = 0; i <= DEFAULT_MAX_UNREAD_CHUNKS; i += 1) g.pushChunk(chunk('x', i));
  const { texts, end } = await drain(g);
  assert.equal(texts.length, DEFAULT_MAX_UNREAD_CHUNKS);
  assert.ok(end instanceof SlowConsumerError);
});
