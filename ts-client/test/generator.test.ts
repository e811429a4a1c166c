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
    results.map((r) => (r.done ? 'done' : r.value.type === 'token' ? r.value.text : r.value.finishReason)),
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
