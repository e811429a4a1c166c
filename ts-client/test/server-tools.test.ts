/**
 * Tool calls, reasoning and overload through the HTTP server, with the official clients.
 * A scripted engine produces what a random model cannot on cue (a call as a model that
 * uses tools makes it, reasoning, an overloaded runtime, a stream that fails); the real
 * runtime forces a named call on a random-weight model and round-trips its result.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';
import Ajv2020Module from 'ajv/dist/2020.js';
import OpenAI from 'openai';

import { RpcError, RuntimeExitedError, StreamFailedError } from '../src/errors.js';
import { makeChatModel, MODEL, serveRealRuntime, serveScripted, type ScriptedChunk, type Served } from './support/server.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

const WEATHER_SCHEMA = {
  type: 'object',
  properties: {
    city: { type: 'string', maxLength: 16 },
    unit: { enum: ['celsius', 'fahrenheit'] },
  },
  required: ['city', 'unit'],
  additionalProperties: false,
};

const openaiTools: OpenAI.ChatCompletionTool[] = [
  { type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: WEATHER_SCHEMA } },
  { type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } },
];

const anthropicTools: Anthropic.Tool[] = [
  { name: 'get_weather', description: 'Weather in a city', input_schema: WEATHER_SCHEMA as Anthropic.Tool.InputSchema },
];

const CALL: ScriptedChunk = { type: 'tool_call', id: 'call_1', name: 'get_weather', arguments: '{"city": "Paris", "unit": "celsius"}' };
const THINKING: ScriptedChunk[] = [
  { type: 'token', text: 'The user wants ', reasoning: true },
  { type: 'token', text: 'the weather.', reasoning: true },
];

describe('HTTP server: tools, reasoning and overload, scripted', () => {
  let served: Awaited<ReturnType<typeof serveScripted>>;
  let openai: OpenAI;
  let anthropic: Anthropic;

  before(async () => {
    served = await serveScripted(() => [...THINKING, { type: 'token', text: 'Let me look.' }, CALL, { type: 'end', finishReason: 'tool_calls' }]);
    openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
  });
  after(() => served.close());

  test('OpenAI: a whole answer with reasoning_content and tool_calls; the request as the runtime gets it', async () => {
    const completion = await openai.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'Weather in Paris?' }],
      tools: openaiTools,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const choice = completion.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.content, 'Let me look.');
    assert.equal((choice.message as unknown as { reasoning_content: string }).reasoning_content, 'The user wants the weather.');
    assert.deepEqual(choice.message.tool_calls, [
      { id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: CALL.type === 'tool_call' ? CALL.arguments : '' } },
    ]);
    const wire = served.engine.requests.at(-1)!;
    assert.deepEqual(wire.tools, openaiTools);
    assert.deepEqual(wire.tool_choice, { type: 'function', function: { name: 'get_weather' } });
    assert.equal(wire.reasoning, 'separate');
  });

  test('OpenAI: streamed tool_calls deltas, as the SDK assembles them', async () => {
    const stream = openai.chat.completions.stream({ model: MODEL, messages: [{ role: 'user', content: 'Weather?' }], tools: openaiTools });
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0]!;
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.equal(choice.message.tool_calls?.[0]?.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(choice.message.tool_calls?.[0]?.function.arguments ?? ''), { city: 'Paris', unit: 'celsius' });
    assert.equal(choice.message.content, 'Let me look.');
  });

  test('OpenAI: the call and its result go back to the runtime as assistant tool_calls and a tool message', async () => {
    await openai.chat.completions.create({
      model: MODEL,
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
        { role: 'tool', tool_call_id: 'call_1', content: [{ type: 'text', text: '18 C, sunny' }] },
      ],
      tools: openaiTools,
    });
    assert.deepEqual(served.engine.requests.at(-1)!.messages, [
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: 'call_1', content: [{ type: 'text', text: '18 C, sunny' }] },
    ]);
  });

  test('Anthropic: thinking, text and tool_use blocks, whole and streamed alike', async () => {
    const params = {
      model: MODEL,
      max_tokens: 64,
      messages: [{ role: 'user' as const, content: 'Weather in Paris?' }],
      tools: anthropicTools,
      tool_choice: { type: 'tool' as const, name: 'get_weather' },
    };
    const whole = await anthropic.messages.create(params);
    assert.equal(whole.stop_reason, 'tool_use');
    assert.deepEqual(
      whole.content.map((b) => b.type),
      ['thinking', 'text', 'tool_use'],
    );
    const use = whole.content[2] as Anthropic.ToolUseBlock;
    assert.deepEqual(use.input, { city: 'Paris', unit: 'celsius' });
    assert.equal(use.id, 'call_1');
    const streamed = await anthropic.messages.stream(params).finalMessage();
    assert.deepEqual(streamed.content, whole.content);
    assert.equal(streamed.stop_reason, 'tool_use');
    const wire = served.engine.requests.at(-1)!;
    assert.deepEqual(wire.tool_choice, { type: 'function', function: { name: 'get_weather' } });
    assert.deepEqual(wire.tools, [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: WEATHER_SCHEMA } }]);
  });

  test('Anthropic: tool_use and tool_result blocks become tool_calls and tool messages; any is required', async () => {
    await anthropic.messages.create({
      model: MODEL,
      max_tokens: 16,
      system: [{ type: 'text', text: 'Use tools.' }],
      messages: [
        { role: 'user', content: 'Weather in Paris?' },
        {
          role: 'assistant',
          content: [
            { type: 'thinking', thinking: 'hmm', signature: '' },
            { type: 'tool_use', id: 'toolu_1', name: 'get_weather', input: { city: 'Paris', unit: 'celsius' } },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'toolu_1', content: '18 C' },
            { type: 'text', text: 'And tomorrow?' },
          ],
        },
      ],
      tools: anthropicTools,
      tool_choice: { type: 'any' },
    });
    const wire = served.engine.requests.at(-1)!;
    assert.equal(wire.tool_choice, 'required');
    assert.deepEqual(wire.messages, [
      { role: 'system', content: 'Use tools.' },
      { role: 'user', content: 'Weather in Paris?' },
      {
        role: 'assistant',
        content: '',
        tool_calls: [{ id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris","unit":"celsius"}' } }],
      },
      { role: 'tool', tool_call_id: 'toolu_1', content: '18 C' },
      { role: 'user', content: 'And tomorrow?' },
    ]);
  });
});

describe('HTTP server: failures of the runtime, scripted', () => {
  test('Overloaded (-32006) is a 429 with Retry-After from retry_after_ms, in both shapes', async () => {
    const served = await serveScripted(() => new RpcError(-32006, 'too many active streams', { retry_after_ms: 2500 }));
    try {
      const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
      const error = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      assert.ok(error instanceof OpenAI.RateLimitError, String(error));
      assert.equal(error.headers?.get('retry-after'), '3');
      const anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
      const refused = await anthropic.messages.create({ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'x' }], stream: true }).catch((e: unknown) => e);
      assert.ok(refused instanceof Anthropic.RateLimitError, String(refused));
      assert.equal(refused.headers?.get('retry-after'), '3');
      // The SDKs' own retries honour it: one retry, then the answer.
      let calls = 0;
      served.engine.script = () => (++calls === 1 ? new RpcError(-32006, 'busy', { retry_after_ms: 10 }) : [{ type: 'end', finishReason: 'stop' }]);
      const retried = await new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 1 }).chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'x' }],
      });
      assert.equal(retried.choices[0]!.finish_reason, 'stop');
      assert.equal(calls, 2);
    } finally {
      await served.close();
    }
  });

  test('a runtime that died is a 503 with Retry-After; a stream that fails midway ends in an error event', async () => {
    const served = await serveScripted(() => new RuntimeExitedError(null, 'SIGKILL', []));
    try {
      const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
      const error = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }] }).catch((e: unknown) => e);
      assert.ok(error instanceof OpenAI.InternalServerError && error.status === 503, String(error));
      assert.equal(error.headers?.get('retry-after'), '1');

      // A token, then the runtime's error event for the stream.
      served.engine.script = () => [{ type: 'token', text: 'Hel' }];
      const failing = served.engine.createGenerator.bind(served.engine);
      served.engine.createGenerator = (params) => {
        const generation = failing(params);
        setTimeout(() => generation.fail(new StreamFailedError(generation.streamId, 'out of memory', -32002)), 20);
        return generation;
      };
      const stream = await openai.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], stream: true });
      let text = '';
      const midway = await (async () => {
        for await (const chunk of stream) text += chunk.choices[0]?.delta.content ?? '';
      })().catch((e: unknown) => e);
      assert.equal(text, 'Hel');
      assert.ok(midway instanceof OpenAI.APIError && /out of memory/.test(midway.message), String(midway));

      const anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
      const broken = await anthropic.messages
        .stream({ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'x' }] })
        .finalMessage()
        .catch((e: unknown) => e);
      assert.ok(broken instanceof Anthropic.APIError && /out of memory/.test(broken.message), String(broken));
    } finally {
      await served.close();
    }
  });
});

describe('HTTP server: tools on the real runtime', () => {
  let served: Served;

  before(async () => {
    const [started, tools, thinking] = await Promise.all([serveRealRuntime(), makeChatModel('tools'), makeChatModel('thinking')]);
    served = started;
    await served.engine.loadModel({ model_id: 'tools', local_path: tools });
    await served.engine.loadModel({ model_id: 'thinking', local_path: thinking });
  });
  after(() => served.close());

  test('a model whose template calls tools: its call is parsed, and the call with its result renders into the next turn', async () => {
    const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const validate = new Ajv2020({ strict: false }).compile(WEATHER_SCHEMA);
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const stream = openai.chat.completions.stream({
      model: 'tools',
      messages,
      max_tokens: 128,
      seed: 1,
      tools: openaiTools,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const first = await stream.finalChatCompletion();
    const message = first.choices[0]!.message;
    assert.equal(first.choices[0]!.finish_reason, 'tool_calls');
    const call = message.tool_calls?.[0];
    assert.ok(call?.type === 'function' && call.id.length > 0, JSON.stringify(message));
    assert.ok(validate(JSON.parse(call.function.arguments)), call.function.arguments);
    assert.ok(!message.content?.includes('<tool_call>'), 'the markup is not text');
    // The next turn, with a short and a long result: the template renders the result.
    const next = async (result: string) => {
      const history = [...messages, message, { role: 'tool' as const, tool_call_id: call.id, content: result }];
      const answer = await openai.chat.completions.create({ model: 'tools', messages: history, max_tokens: 4, tools: openaiTools });
      assert.ok(['stop', 'length', 'tool_calls'].includes(answer.choices[0]!.finish_reason));
      return answer.usage?.prompt_tokens ?? 0;
    };
    const short = await next('18 C');
    const long = await next('18 C, sunny, light wind from the west, no rain expected before the evening');
    assert.ok(short > (first.usage?.prompt_tokens ?? 0), 'the call is in the prompt');
    assert.ok(long > short + 5, `the result is in the prompt: ${short} vs ${long} tokens`);
  });

  test('a thinking model: reasoning as reasoning_content deltas and an Anthropic thinking block', async () => {
    const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    let reasoning = '';
    const stream = await openai.chat.completions.create({ model: 'thinking', messages: [{ role: 'user', content: 'Think.' }], max_tokens: 16, stream: true });
    for await (const chunk of stream) reasoning += (chunk.choices[0]?.delta as { reasoning_content?: string } | undefined)?.reasoning_content ?? '';
    assert.ok(reasoning.length > 0, 'reasoning came apart from the answer');
    assert.ok(!reasoning.includes('<think>'));
    const anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
    const message = await anthropic.messages.stream({ model: 'thinking', max_tokens: 16, messages: [{ role: 'user', content: 'Think.' }] }).finalMessage();
    assert.equal(message.content[0]?.type, 'thinking', JSON.stringify(message.content));
  });

  test('a named tool_choice on a random-weight model: a call whose arguments validate (OpenAI, Anthropic)', async () => {
    const validate = new Ajv2020({ strict: false }).compile(WEATHER_SCHEMA);
    const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    for (const seed of [1, 2]) {
      const completion = await openai.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
        max_tokens: 128,
        seed,
        tools: openaiTools,
        tool_choice: { type: 'function', function: { name: 'get_weather' } },
      });
      const choice = completion.choices[0]!;
      assert.equal(choice.finish_reason, 'tool_calls', JSON.stringify(choice));
      const call = choice.message.tool_calls?.[0];
      assert.ok(call?.type === 'function' && call.function.name === 'get_weather', JSON.stringify(call));
      const args: unknown = JSON.parse(call.function.arguments);
      assert.ok(validate(args), `${call.function.arguments}: ${JSON.stringify(validate.errors)}`);
    }
    const anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
    const message = await anthropic.messages
      .stream({
        model: MODEL,
        max_tokens: 128,
        messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
        tools: anthropicTools,
        tool_choice: { type: 'tool', name: 'get_weather' },
      })
      .finalMessage();
    assert.equal(message.stop_reason, 'tool_use');
    const use = message.content.find((b): b is Anthropic.ToolUseBlock => b.type === 'tool_use');
    assert.ok(use && validate(use.input), JSON.stringify(message.content));
  });

  test('the call and its result round-trip: the next turn is answered', async () => {
    const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'What is the weather in Paris?' }];
    const first = await openai.chat.completions.create({
      model: MODEL,
      messages,
      max_tokens: 128,
      tools: openaiTools,
      tool_choice: { type: 'function', function: { name: 'get_weather' } },
    });
    const message = first.choices[0]!.message;
    const call = message.tool_calls?.[0];
    assert.ok(call?.type === 'function', JSON.stringify(message));
    messages.push(message, { role: 'tool', tool_call_id: call.id, content: '{"temperature": 18}' });
    const second = await openai.chat.completions.create({ model: MODEL, messages, max_tokens: 8, tools: openaiTools });
    assert.ok(['stop', 'length', 'tool_calls'].includes(second.choices[0]!.finish_reason));
    assert.ok((second.usage?.prompt_tokens ?? 0) > (first.usage?.prompt_tokens ?? 0), 'the call and its result are in the prompt');
  });

  test('tool_choice naming no tool is a 400 naming tool_choice', async () => {
    const openai = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'x', maxRetries: 0 });
    const error = await openai.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], tools: openaiTools, tool_choice: { type: 'function', function: { name: 'nope' } } })
      .catch((e: unknown) => e);
    assert.ok(error instanceof OpenAI.BadRequestError, String(error));
    assert.equal(error.param, 'tool_choice.function.name');
    const anthropic = new Anthropic({ baseURL: served.url, apiKey: 'x', maxRetries: 0 });
    const refused = await anthropic.messages
      .create({ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'x' }], tools: anthropicTools, tool_choice: { type: 'tool', name: 'nope' } })
      .catch((e: unknown) => e);
    assert.ok(refused instanceof Anthropic.BadRequestError, String(refused));
    assert.match(refused.message, /tool_choice\.name/);
  });
});
