/**
 * `mlx-serving serve`'s OpenAI API, driven by the official `openai` client against the real
 * runtime and a generated random-weight model: whole and streamed chat and completions,
 * structured output, logprobs, cancellation by disconnect, concurrency, and the errors.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import Ajv2020Module from 'ajv/dist/2020.js';
import OpenAI from 'openai';

import { eventually, makeModel, noEos, tempDir } from './support/runtime.js';
import { MODEL, serveRealRuntime, serveScripted, type Served } from './support/server.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    role: { enum: ['admin', 'user', 'guest'] },
  },
  required: ['name', 'age', 'role'],
  additionalProperties: false,
};

const hello = [{ role: 'user' as const, content: 'Hello there!' }];

describe('HTTP server: OpenAI API through the official client', () => {
  let served: Served;
  let client: OpenAI;

  before(async () => {
    served = await serveRealRuntime();
    client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  });
  after(() => served.close());

  test('GET /v1/models lists the loaded model', async () => {
    const models = [];
    for await (const model of client.models.list()) models.push(model.id);
    assert.deepEqual(models, [MODEL]);
    assert.equal((await client.models.retrieve(MODEL)).id, MODEL);
  });

  test('a whole chat completion, with usage', async () => {
    const completion = await client.chat.completions.create({ model: MODEL, messages: hello, max_tokens: 8, seed: 1 });
    const choice = completion.choices[0]!;
    assert.equal(completion.object, 'chat.completion');
    assert.equal(choice.message.role, 'assistant');
    assert.equal(typeof choice.message.content, 'string');
    assert.ok(['stop', 'length'].includes(choice.finish_reason), choice.finish_reason);
    assert.ok(completion.usage && completion.usage.prompt_tokens > 0);
    assert.ok(completion.usage.completion_tokens >= 1 && completion.usage.completion_tokens <= 8);
    assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
  });

  test('a streamed chat completion concatenates to the whole one (greedy, same seed)', async () => {
    const params = { model: MODEL, messages: hello, max_completion_tokens: 12, temperature: 0 };
    const whole = await client.chat.completions.create(params);
    const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: OpenAI.CompletionUsage | undefined;
    let roleSent = false;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.role === 'assistant') roleSent = true;
      text += choice.delta.content ?? '';
      finish = choice.finish_reason ?? finish;
    }
    assert.ok(roleSent);
    assert.equal(text, whole.choices[0]!.message.content);
    assert.equal(finish, whole.choices[0]!.finish_reason);
    assert.equal(usage?.completion_tokens, whole.usage?.completion_tokens);
  });

  test('response_format json_schema answers JSON that validates', async () => {
    const validate = new Ajv2020({ strict: false }).compile(PERSON);
    for (const seed of [1, 2]) {
      const completion = await client.chat.completions.create({
        model: MODEL,
        messages: [{ role: 'user', content: 'Describe a person as JSON.' }],
        max_tokens: 96,
        temperature: 0.9,
        seed,
        response_format: { type: 'json_schema', json_schema: { name: 'person', schema: PERSON, strict: true } },
      });
      const text = completion.choices[0]!.message.content ?? '';
      assert.equal(completion.choices[0]!.finish_reason, 'stop', text);
      assert.ok(validate(JSON.parse(text)), `${text}: ${JSON.stringify(validate.errors)}`);
    }
    // json_object: any object; a random model's strings may run to max_tokens, so some
    // seed is tried until one answer ends (seed 6 does within a few tokens).
    let parsed: unknown;
    for (let seed = 1; parsed === undefined && seed <= 8; seed++) {
      const object = await client.chat.completions.create({
        model: MODEL,
        messages: hello,
        max_tokens: 48,
        seed,
        response_format: { type: 'json_object' },
      });
      const text = object.choices[0]!.message.content ?? '';
      assert.ok(text.startsWith('{'), text);
      if (object.choices[0]!.finish_reason === 'stop') parsed = JSON.parse(text);
    }
    assert.equal(typeof parsed, 'object');
  });

  test('logprobs and top_logprobs, whole and streamed', async () => {
    const completion = await client.chat.completions.create({
      model: MODEL,
      messages: hello,
      max_tokens: 4,
      logprobs: true,
      top_logprobs: 3,
    });
    const content = completion.choices[0]!.logprobs?.content ?? [];
    assert.equal(content.length, completion.usage?.completion_tokens);
    for (const entry of content) {
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top_logprobs.length, 3);
      assert.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
    }
    const stream = await client.chat.completions.create({ model: MODEL, messages: hello, max_tokens: 4, logprobs: true, stream: true });
    let entries = 0;
    for await (const chunk of stream) entries += chunk.choices[0]?.logprobs?.content?.length ?? 0;
    assert.equal(entries, 4);
  });

  test('stop sequences end the answer before them', async () => {
    const params = { model: MODEL, messages: hello, max_tokens: 24, temperature: 0 };
    const free = (await client.chat.completions.create(params)).choices[0]!.message.content ?? '';
    const stopAt = free.slice(4, 6);
    assert.ok(stopAt.trim().length > 0, `need a varied greedy answer: ${JSON.stringify(free)}`);
    const stopped = await client.chat.completions.create({ ...params, stop: [stopAt] });
    const text = stopped.choices[0]!.message.content ?? '';
    assert.equal(stopped.choices[0]!.finish_reason, 'stop');
    assert.ok(!text.includes(stopAt) && free.startsWith(text), `${JSON.stringify(text)} vs ${JSON.stringify(free)}`);
  });

  test('completions: text and token prompts, echo, logprobs, streamed', async () => {
    const whole = await client.completions.create({ model: MODEL, prompt: 'Once upon', max_tokens: 6, temperature: 0, echo: true, logprobs: 2 });
    const choice = whole.choices[0]!;
    assert.equal(whole.object, 'text_completion');
    assert.ok(choice.text.startsWith('Once upon'));
    assert.equal(choice.logprobs?.tokens?.length, whole.usage?.completion_tokens);
    assert.equal(choice.logprobs?.text_offset?.[0], 'Once upon'.length);
    const tokens = await client.completions.create({ model: MODEL, prompt: [1, 2, 3], max_tokens: 3 });
    assert.equal(tokens.usage?.prompt_tokens, 3);
    let text = '';
    for await (const chunk of await client.completions.create({ model: MODEL, prompt: 'Once upon', max_tokens: 6, temperature: 0, stream: true })) {
      text += chunk.choices[0]?.text ?? '';
    }
    assert.equal('Once upon' + text, choice.text);
  });

  test('an aborted stream is cancelled on the runtime: its slot is freed at once', async () => {
    // The stream could run for thousands of tokens: EOS is banned.
    const logit_bias = await noEos(served.engine, MODEL);
    const completed = new Promise<string>((resolve) => served.engine.once('generationCompleted', (e) => resolve(e.finishReason)));
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: hello,
      max_tokens: 4000,
      logit_bias,
      stream: true,
    });
    let chunks = 0;
    for await (const _ of stream) {
      if (++chunks === 3) stream.controller.abort();
    }
    const abortedAt = Date.now();
    await eventually(async () => (await served.engine.runtimeState()).active_streams === 0, 5_000, 'active_streams 0');
    assert.ok(Date.now() - abortedAt < 5_000);
    assert.equal(await completed, 'cancelled');
  });

  test('32 concurrent streams all complete, sharing the batch', async () => {
    const answers = await Promise.all(
      Array.from({ length: 32 }, async (_, i) => {
        const stream = await client.chat.completions.create({
          model: MODEL,
          messages: [{ role: 'user', content: `Request ${i}` }],
          max_tokens: 12,
          seed: i,
          stream: true,
          stream_options: { include_usage: true },
        });
        let finish: string | null = null;
        let tokens = 0;
        for await (const chunk of stream) {
          finish = chunk.choices[0]?.finish_reason ?? finish;
          tokens = chunk.usage?.completion_tokens ?? tokens;
        }
        return { finish, tokens };
      }),
    );
    for (const answer of answers) {
      assert.ok(answer.finish === 'stop' || answer.finish === 'length', String(answer.finish));
      assert.ok(answer.tokens >= 1 && answer.tokens <= 12);
    }
    assert.equal((await served.engine.runtimeState()).active_streams, 0);
  });

  test('400 names the parameter: ours, the client library and the runtime', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ messages: [] }, 'messages'],
      [{ n: 2 }, 'n'],
      [{ temperature: 'hot' }, 'temperature'],
      [{ messages: [{ role: 'robot', content: 'x' }] }, 'messages[0].role'],
      [{ max_tokens: 1_000_000 }, 'max_tokens'],
      [{ max_completion_tokens: 1_000_000 }, 'max_completion_tokens'],
      [{ stop: Array.from({ length: 11 }, (_, i) => `s${i}`) }, 'stop'],
      [{ seed: -1 }, 'seed'],
      [{ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array', minItems: -1 } } } }, 'response_format.json_schema.schema.minItems'],
    ];
    for (const [override, param] of cases) {
      const body = { model: MODEL, messages: hello, max_tokens: 4, ...override } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming;
      const error = await client.chat.completions.create(body).catch((e: unknown) => e);
      assert.ok(error instanceof OpenAI.BadRequestError, `${param}: ${String(error)}`);
      assert.equal(error.param, param, error.message);
      assert.equal(error.type, 'invalid_request_error');
    }
  });

  test('404 for a model that is not loaded, as OpenAI answers it', async () => {
    const error = await client.chat.completions.create({ model: 'nope', messages: hello }).catch((e: unknown) => e);
    assert.ok(error instanceof OpenAI.NotFoundError, String(error));
    assert.equal(error.code, 'model_not_found');
    assert.equal(error.param, 'model');
    const streamed = await client.chat.completions.create({ model: 'nope', messages: hello, stream: true }).catch((e: unknown) => e);
    assert.ok(streamed instanceof OpenAI.NotFoundError, String(streamed));
  });

  test('embeddings: one unit vector per text, as floats and as the client\'s default base64', async () => {
    const floats = await client.embeddings.create({ model: MODEL, input: ['Hello', 'world, again'], encoding_format: 'float' });
    assert.equal(floats.data.length, 2);
    const [a, b] = floats.data.map((d) => d.embedding);
    assert.equal(a!.length, b!.length);
    assert.ok(Math.abs(Math.hypot(...a!) - 1) < 1e-3);
    assert.ok(floats.usage.prompt_tokens > 0);
    // The openai client asks for base64 unless told otherwise, and decodes it.
    const decoded = await client.embeddings.create({ model: MODEL, input: 'Hello' });
    const vector = decoded.data[0]!.embedding;
    assert.equal(vector.length, a!.length);
    assert.ok(vector.every((x, i) => Math.abs(x - a![i]!) < 1e-5));
    const empty = await client.embeddings.create({ model: MODEL, input: [] }).catch((e: unknown) => e);
    assert.ok(empty instanceof OpenAI.BadRequestError && empty.param === 'input', String(empty));
    const missing = await client.embeddings.create({ model: 'nope', input: 'x' }).catch((e: unknown) => e);
    assert.ok(missing instanceof OpenAI.NotFoundError, String(missing));
  });

  test('/health and /metrics', async () => {
    const health = await fetch(`${served.url}/health`);
    assert.equal(health.status, 200);
    assert.deepEqual(((await health.json()) as { models: string[] }).models, [MODEL]);
    const metrics = await fetch(`${served.url}/metrics`);
    assert.match(metrics.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await metrics.text();
    assert.match(text, /^# TYPE mlx_serving_http_requests_total counter$/m);
    assert.match(text, /mlx_serving_http_requests_total\{route="POST \/v1\/chat\/completions",status="200"\} \d+/);
  });
});

describe('HTTP server: the API key', () => {
  let served: Served;

  before(async () => {
    served = await serveRealRuntime({ apiKey: 'sekret' });
  });
  after(() => served.close());

  test('401 without the key or with a wrong one; the key as Bearer or x-api-key', async () => {
    for (const apiKey of ['wrong', 'sekret-but-longer', '']) {
      const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: apiKey || 'x', maxRetries: 0 });
      const error = await client.models.list().catch((e: unknown) => e);
      assert.ok(error instanceof OpenAI.AuthenticationError, String(error));
    }
    const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: 'sekret', maxRetries: 0 });
    const completion = await client.chat.completions.create({ model: MODEL, messages: hello, max_tokens: 2 });
    assert.equal(completion.object, 'chat.completion');
    const byHeader = await fetch(`${served.url}/v1/models`, { headers: { 'x-api-key': 'sekret' } });
    assert.equal(byHeader.status, 200);
    const none = await fetch(`${served.url}/v1/models`);
    assert.equal(none.status, 401);
    assert.equal((await fetch(`${served.url}/health`)).status, 200, '/health needs no key');
  });
});

describe('mlx-serving serve, the command', () => {
  test('--model, --config and --api-key; overload is a 429 with Retry-After; SIGTERM stops it', async () => {
    const model = await makeModel();
    const config = join(tempDir(), 'runtime.yaml');
    writeFileSync(config, 'json_rpc:\n  max_active_streams: 1\n');
    const cli = fileURLToPath(new URL('../src/cli.js', import.meta.url));
    const server = spawn(process.execPath, [cli, 'serve', '--port', '0', '--model', `one=${model}`, '--config', config, '--api-key', 'k'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    server.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    const exited = new Promise<number | null>((resolve) => server.on('exit', (code) => resolve(code)));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        let out = '';
        server.stdout.on('data', (data: Buffer) => {
          out += data.toString();
          const match = /listening on (\S+)/.exec(out);
          if (match) resolve(match[1]!);
        });
        void exited.then((code) => reject(new Error(`serve exited with ${code}: ${stderr}`)));
      });
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'k', maxRetries: 0 });
      assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['one']);
      // One stream at a time: of two at once, the second is refused.
      const results = await Promise.allSettled(
        [0, 1].map(() => client.chat.completions.create({ model: 'one', messages: hello, max_tokens: 200 })),
      );
      const refused = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')?.reason as unknown;
      assert.ok(results.some((r) => r.status === 'fulfilled'), JSON.stringify(results));
      assert.ok(refused instanceof OpenAI.RateLimitError, String(refused));
      assert.equal(refused.headers?.get('retry-after'), '1');
    } finally {
      server.kill('SIGTERM');
    }
    assert.equal(await exited, 0, stderr);
  });
});

describe('HTTP server: malformed requests, scripted', () => {
  test('each is answered in its API\'s shape, and the server serves on', async () => {
    const served = await serveScripted(() => [{ type: 'end', finishReason: 'stop' }], { maxBodyBytes: 1024 });
    try {
      const post = (path: string, body: string, headers: Record<string, string> = {}) =>
        fetch(`${served.url}${path}`, { method: 'POST', body, headers });
      const notJson = await post('/v1/chat/completions', '{"model": ');
      assert.equal(notJson.status, 400);
      assert.match(((await notJson.json()) as { error: { message: string } }).error.message, /not valid JSON/);
      const notObject = await post('/v1/messages', '[1, 2]', { 'anthropic-version': '2023-06-01' });
      assert.equal(notObject.status, 400);
      assert.deepEqual(await notObject.json(), {
        type: 'error',
        error: { type: 'invalid_request_error', message: 'body: the request body must be a JSON object' },
      });
      const tooLarge = await post('/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'x'.repeat(2000) }] }));
      assert.equal(tooLarge.status, 413);
      const badEscape = await fetch(`${served.url}/v1/models/%E0%A4%A`);
      assert.equal(badEscape.status, 400);
      const wrongMethod = await fetch(`${served.url}/v1/chat/completions`);
      assert.equal(wrongMethod.status, 405);
      assert.equal(wrongMethod.headers.get('allow'), 'POST');
      const noRoute = await fetch(`${served.url}/v1/nothing`, { headers: { 'anthropic-version': '2023-06-01' } });
      assert.equal(noRoute.status, 404);
      assert.equal(((await noRoute.json()) as { type: string }).type, 'error');
      const fine = await post('/v1/chat/completions', JSON.stringify({ model: MODEL, messages: [{ role: 'user', content: 'hi' }] }));
      assert.equal(fine.status, 200);
    } finally {
      await served.close();
    }
  });
});
