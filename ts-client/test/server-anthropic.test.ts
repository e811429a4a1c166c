/**
 * `mlx-serving serve`'s Anthropic Messages API, driven by the official `@anthropic-ai/sdk`
 * against the real runtime and a generated model: whole and streamed messages, a system
 * prompt and content blocks, and the API's own error shapes.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

import { MODEL, serveRealRuntime, type Served } from './support/server.js';

const hello = [{ role: 'user' as const, content: 'Hello there!' }];
/** The API takes `temperature`; this SDK's types no longer list it. */
const greedy = { temperature: 0 } as object;

describe('HTTP server: Anthropic Messages API through the official client', () => {
  let served: Served;
  let client: Anthropic;

  before(async () => {
    served = await serveRealRuntime();
    client = new Anthropic({ baseURL: served.url, apiKey: 'unused', maxRetries: 0 });
  });
  after(() => served.close());

  test('a whole message: one text block, stop reason, usage', async () => {
    const message = await client.messages.create({ model: MODEL, max_tokens: 8, messages: hello, ...greedy });
    assert.equal(message.type, 'message');
    assert.equal(message.role, 'assistant');
    assert.equal(message.content.length, 1);
    assert.equal(message.content[0]!.type, 'text');
    assert.ok(['end_turn', 'max_tokens'].includes(message.stop_reason ?? ''), String(message.stop_reason));
    assert.ok(message.usage.input_tokens > 0);
    assert.ok(message.usage.output_tokens >= 1 && message.usage.output_tokens <= 8);
  });

  test('a streamed message gives the same text, through the SDK helper and raw events', async () => {
    const params = {
      model: MODEL,
      max_tokens: 12,
      ...greedy,
      system: 'You are terse.',
      messages: [{ role: 'user' as const, content: [{ type: 'text' as const, text: 'Hello there!' }] }],
    };
    const whole = await client.messages.create(params);
    const stream = client.messages.stream(params);
    let deltas = '';
    stream.on('text', (text) => (deltas += text));
    const final = await stream.finalMessage();
    const wholeText = whole.content.map((b) => (b.type === 'text' ? b.text : '')).join('');
    assert.equal(deltas, wholeText);
    assert.deepEqual(final.content, whole.content);
    assert.equal(final.stop_reason, whole.stop_reason);
    assert.equal(final.usage.output_tokens, whole.usage.output_tokens);
    assert.equal(final.usage.input_tokens, whole.usage.input_tokens, 'message_delta carries the prompt size');

    const events: string[] = [];
    for await (const event of await client.messages.create({ ...params, stream: true })) events.push(event.type);
    assert.equal(events[0], 'message_start');
    assert.deepEqual(events.slice(-2), ['message_delta', 'message_stop']);
    assert.ok(events.includes('content_block_start') && events.includes('content_block_stop'));
  });

  test('a multi-turn conversation with an assistant turn in blocks', async () => {
    const message = await client.messages.create({
      model: MODEL,
      max_tokens: 4,
      messages: [
        { role: 'user', content: 'Hi' },
        { role: 'assistant', content: [{ type: 'text', text: 'Hello!' }] },
        { role: 'user', content: 'How are you?' },
      ],
    });
    assert.equal(message.content[0]?.type, 'text');
  });

  test('400 as invalid_request_error naming the field; 404 as not_found_error', async () => {
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ max_tokens: undefined }, /^max_tokens: is required/],
      [{ messages: [] }, /^messages: /],
      [{ temperature: 1.5 }, /^temperature: must be <= 1/],
      [{ messages: [{ role: 'system', content: 'x' }] }, /^messages\[0\]\.role: /],
      [{ messages: [{ role: 'user', content: [{ type: 'document', source: {} }] }] }, /^messages\[0\]\.content\[0\]\.type: /],
      // Over the runtime's limit (4096); the SDK itself refuses more than about 21 000.
      [{ max_tokens: 20_000 }, /^max_tokens: /],
    ];
    for (const [override, message] of cases) {
      const body = { model: MODEL, max_tokens: 4, messages: hello, ...override } as unknown as Anthropic.MessageCreateParamsNonStreaming;
      const error = await client.messages.create(body).catch((e: unknown) => e);
      assert.ok(error instanceof Anthropic.BadRequestError, `${message}: ${String(error)}`);
      assert.equal((error.error as { error: { type: string } }).error.type, 'invalid_request_error');
      assert.match((error.error as { error: { message: string } }).error.message, message);
    }
    const missing = await client.messages.create({ model: 'nope', max_tokens: 4, messages: hello }).catch((e: unknown) => e);
    assert.ok(missing instanceof Anthropic.NotFoundError, String(missing));
    assert.equal((missing.error as { error: { type: string } }).error.type, 'not_found_error');
  });

  test('GET /v1/models in Anthropic\'s shape for Anthropic\'s client', async () => {
    const models = [];
    for await (const model of client.models.list()) models.push(model.id);
    assert.deepEqual(models, [MODEL]);
  });
});
