/**
 * What the runtime sends is checked against the schemas: violations surface as
 * ProtocolError (on the request or stream they belong to, else as an `error` event), and
 * the compat forms the protocol allows (batched chunks, old finish reasons) are accepted.
 * A fake runtime (support/fake-runtime.ts) produces the frames.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  createEngine,
  ProtocolError,
  RequestTimeoutError,
  RequestTooLargeError,
  StreamFailedError,
  type Engine,
  type GenerationChunk,
  type Logger,
} from '../src/index.js';
import { ClientLogger } from '../src/logger.js';
import { fakeRuntimeOptions } from './support/runtime.js';

async function collect(iterable: AsyncIterable<GenerationChunk>): Promise<GenerationChunk[]> {
  const chunks: GenerationChunk[] = [];
  for await (const chunk of iterable) chunks.push(chunk);
  return chunks;
}

describe('protocol violations and compat forms (fake runtime)', () => {
  let engine: Engine;
  const errors: Error[] = [];

  before(async () => {
    engine = await createEngine(fakeRuntimeOptions('normal', { maxLineBytes: 1024 * 1024 }));
    engine.on('error', (error) => errors.push(error));
  });
  after(() => engine.dispose());

  test('a result that breaks its schema rejects the request with ProtocolError', async () => {
    const error = await engine.tokenize({ model_id: 'm', text: 'bad-result' }).catch((e: unknown) => e);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.equal(error.code, 'ProtocolError');
    assert.ok(error.issues.some((i) => i.path === 'tokens'), JSON.stringify(error.issues));
    // The connection stays usable.
    assert.deepEqual((await engine.tokenize({ model_id: 'm', text: 'ok' })).tokens, [1, 2]);
  });

  test('a stdout line that is not JSON is reported as an error event', async () => {
    errors.length = 0;
    await engine.tokenize({ model_id: 'm', text: 'not-json' });
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof ProtocolError);
    assert.match(errors[0].message, /not JSON/);
  });

  test('an answer to an unknown id is reported as an error event', async () => {
    errors.length = 0;
    await engine.tokenize({ model_id: 'm', text: 'unknown-id' });
    assert.equal(errors.length, 1);
    assert.ok(errors[0] instanceof ProtocolError);
    assert.match(errors[0].message, /unknown request id 987654/);
  });

  test('an answer over maxLineBytes fails the request it answers', async () => {
    const error = await engine.tokenize({ model_id: 'm', text: 'huge' }).catch((e: unknown) => e);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.match(error.message, /over the client's maxLineBytes/);
  });

  test('a request without an answer times out with RequestTimeoutError', async () => {
    const error = await engine.tokenize({ model_id: 'm', text: 'no-answer' }, { timeoutMs: 100 }).catch((e: unknown) => e);
    assert.ok(error instanceof RequestTimeoutError, String(error));
    assert.equal(error.code, 'Timeout');
  });

  test('a chunk that breaks its schema fails its stream with ProtocolError', async () => {
    const chunks: GenerationChunk[] = [];
    const error = await (async () => {
      for await (const chunk of engine.createGenerator({ model_id: 'm', prompt: 'bad-chunk' })) chunks.push(chunk);
    })().catch((e: unknown) => e);
    assert.ok(error instanceof ProtocolError, String(error));
    assert.ok(error.issues.some((i) => i.path === 'token_id'), JSON.stringify(error.issues));
    assert.deepEqual(
      chunks.map((c) => c.type === 'token' && c.text),
      ['ok'],
    );
  });

  test('batched chunks are unpacked and compat finish reasons accepted', async () => {
    const chunks = await collect(engine.createGenerator({ model_id: 'm', prompt: 'batch' }));
    assert.deepEqual(
      chunks.map((c) => (c.type === 'token' ? c.text : c.type === 'stats' ? `<${c.finishReason}>` : `<${c.type}>`)),
      ['He', 'll', 'o', '<completed>'],
    );
    const empty = await engine.generate({ model_id: 'm', prompt: 'no-output' });
    assert.equal(empty.text, '');
    assert.equal(empty.finishReason, 'no_output');
  });

  test("a stream's error event is thrown as StreamFailedError after its tokens", async () => {
    const chunks: GenerationChunk[] = [];
    const failed: unknown[] = [];
    engine.once('generationFailed', (event) => failed.push(event.error));
    const error = await (async () => {
      for await (const chunk of engine.createGenerator({ model_id: 'm', prompt: 'fail' })) chunks.push(chunk);
    })().catch((e: unknown) => e);
    assert.ok(error instanceof StreamFailedError, String(error));
    assert.equal(error.code, 'GenerationError');
    assert.equal(error.rpcCode, -32002);
    assert.equal(chunks.length, 1);
    assert.equal(failed[0], error);
  });
});

test('a runtime/info that breaks its schema fails createEngine with ProtocolError', async () => {
  const error = await createEngine(fakeRuntimeOptions('bad-info')).catch((e: unknown) => e);
  assert.ok(error instanceof ProtocolError, String(error));
  assert.match(error.message, /runtime\/info/);
});

test("the runtime's stderr goes to the client's logger, at the level its tag names", async () => {
  const logged: Array<[string, string]> = [];
  const logger = Object.fromEntries(
    (['debug', 'info', 'warn', 'error'] as const).map((level) => [level, (message: string) => logged.push([level, message])]),
  ) as unknown as Logger;
  const engine = await createEngine(fakeRuntimeOptions('normal', { logger }));
  await engine.dispose();
  assert.ok(
    logged.some(([level, message]) => level === 'info' && message === '[runtime] MLX Runtime ready'),
    JSON.stringify(logged),
  );

  logged.length = 0;
  const client = new ClientLogger(logger);
  for (const line of ['x [WARNING] low memory', 'Traceback (most recent call last):', 'y [DEBUG] detail']) client.runtime(line);
  assert.deepEqual(
    logged.map(([level]) => level),
    ['warn', 'warn', 'debug'],
  );
});

test("a request over the runtime's max_frame_bytes in UTF-8 fails at once, unsent", async () => {
  const options = fakeRuntimeOptions('normal', { env: { FAKE_RUNTIME_MODE: 'normal', FAKE_MAX_FRAME_BYTES: '4096' } });
  const engine = await createEngine(options);
  const errors: Error[] = [];
  engine.on('error', (error) => errors.push(error));
  try {
    assert.equal(engine.info?.limits.max_frame_bytes, 4096);
    const started = Date.now();
    // 2,000 characters, under the limit as a count of characters, but 6,000 bytes of UTF-8.
    const error = await engine.tokenize({ model_id: 'm', text: '€'.repeat(2000) }, { timeoutMs: 2_000 }).catch((e: unknown) => e);
    assert.ok(error instanceof RequestTooLargeError, String(error));
    assert.equal(error.code, 'RequestTooLarge');
    assert.equal(error.method, 'tokenize');
    assert.equal(error.limitBytes, 4096);
    assert.ok(error.bytes > 6000, String(error.bytes));
    assert.ok(Date.now() - started < 500);
    const stream = await collect(engine.createGenerator({ model_id: 'm', prompt: '€'.repeat(2000) })).catch((e: unknown) => e);
    assert.ok(stream instanceof RequestTooLargeError, String(stream));
    // Under the limit in bytes, it goes out and is answered.
    assert.deepEqual((await engine.tokenize({ model_id: 'm', text: '€'.repeat(1000) })).tokens, [1, 2]);
    assert.deepEqual(errors, []);
  } finally {
    await engine.dispose();
  }
});
