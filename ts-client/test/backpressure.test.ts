/**
 * A runtime that stops reading its input cannot grow the client without bound: past
 * `maxBufferedBytes` of unread requests, new calls fail at once with
 * RuntimeBackloggedError; `cancel` still goes out; once the runtime reads again, the
 * requests that were sent are answered.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createEngine, RuntimeBackloggedError } from '../src/index.js';
import { DEFAULT_MAX_BUFFERED_BYTES } from '../src/rpc.js';
import { fakeRuntimeOptions } from './support/runtime.js';

test('requests to a runtime that does not read fail fast past the buffer limit', async () => {
  const engine = await createEngine(fakeRuntimeOptions('normal'));
  const pid = engine.pid!;
  const text = 'x'.repeat(1024 * 1024);
  try {
    process.kill(pid, 'SIGSTOP');
    const sent: Promise<unknown>[] = [];
    let refused: unknown;
    for (let i = 0; i < 100 && refused === undefined; i += 1) {
      const call = engine.tokenize({ model_id: 'm', text });
      // A refusal settles within the call's own microtasks, before this timer fires.
      const pending = new Promise((resolve) => setTimeout(() => resolve('pending'), 0));
      const outcome = await Promise.race([call.then(() => 'answered', (e: unknown) => e), pending]);
      if (outcome instanceof RuntimeBackloggedError) refused = outcome;
      else sent.push(call.catch((e: unknown) => e));
    }
    assert.ok(refused instanceof RuntimeBackloggedError, String(refused));
    assert.equal(refused.code, 'Backlogged');
    assert.equal(refused.limitBytes, DEFAULT_MAX_BUFFERED_BYTES);
    assert.ok(sent.length >= 30 && sent.length <= 34, `${sent.length} sent before the limit`);
    process.kill(pid, 'SIGCONT');
    const answers = await Promise.all(sent);
    assert.ok(answers.every((a) => !(a instanceof Error)), 'every request sent was answered');
  } finally {
    process.kill(pid, 'SIGCONT');
    await engine.dispose();
  }
});
