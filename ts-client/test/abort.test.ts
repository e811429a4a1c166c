/** onAbort: one 'abort' listener per signal, however many subscribe. */
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { test } from 'node:test';

import { onAbort } from '../src/abort.js';

test('many subscribers share one listener, which goes when the last unsubscribes', () => {
  const controller = new AbortController();
  const unsubscribes = Array.from({ length: 50 }, () => onAbort(controller.signal, () => {}));
  assert.equal(getEventListeners(controller.signal, 'abort').length, 1);
  for (const unsubscribe of unsubscribes) unsubscribe();
  assert.equal(getEventListeners(controller.signal, 'abort').length, 0);
  // A later subscriber gets a listener again.
  const calls: string[] = [];
  onAbort(controller.signal, () => calls.push('late'));
  controller.abort();
  assert.deepEqual(calls, ['late']);
});

test('an abort calls each subscriber once, not those that unsubscribed', () => {
  const controller = new AbortController();
  const calls: string[] = [];
  const listener = () => calls.push('a');
  onAbort(controller.signal, listener);
  const second = onAbort(controller.signal, listener); // the same function, subscribed twice
  const third = onAbort(controller.signal, () => calls.push('b'));
  onAbort(controller.signal, () => {
    calls.push('c');
    third(); // unsubscribing during the dispatch
  });
  second();
  second(); // twice is harmless
  controller.abort();
  controller.abort();
  assert.deepEqual(calls.sort(), ['a', 'b', 'c']);
});
