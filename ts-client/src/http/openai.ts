/**
 * OpenAI's API over the engine: chat completions and completions (whole or streamed as
 * `chat.completion.chunk` / `text_completion` events ending in `[DONE]`), models, and
 * embeddings; errors as `{error: {message, type, param, code}}`.
 */
import { randomUUID } from 'node:crypto';

import { HttpError, type ErrorDialect, type ErrorKind } from './errors.js';
import type { Exchange } from './exchange.js';
import {
  apiFinishReason,
  collect,
  OpenGeneration,
  tokenLogprob,
  type ApiFinishReason,
  type TokenLogprob,
} from './generation.js';
import { readChatRequest, readCompletionRequest } from './openai-request.js';
import type { StatsChunk, ToolCallChunk } from '../generator.js';
import type { TopLogprob } from '../types/index.js';

const ERROR_TYPES: Record<ErrorKind, { type: string; code: string | null }> = {
  invalid_request: { type: 'invalid_request_error', code: null },
  authentication: { type: 'invalid_request_error', code: 'invalid_api_key' },
  not_found: { type: 'invalid_request_error', code: 'model_not_found' },
  too_large: { type: 'invalid_request_error', code: 'request_too_large' },
  rate_limit: { type: 'rate_limit_error', code: 'rate_limit_exceeded' },
  unavailable: { type: 'server_error', code: 'service_unavailable' },
  server: { type: 'server_error', code: null },
};

export const openaiErrors: ErrorDialect = {
  body: (error: HttpError) => {
    const { type, code } = ERROR_TYPES[error.kind];
    // A 404 of a route, not of a model, has no model code.
    const named = error.kind === 'not_found' && error.param === null ? null : code;
    return { error: { message: error.message, type, param: error.param, code: named } };
  },
  // The openai SDKs throw an APIError for a data event that carries `error`.
  streamEvent: (error: HttpError) => ({ data: openaiErrors.body(error) }),
};

function usage(stats: StatsChunk['stats']) {
  return {
    prompt_tokens: stats.prompt_tokens,
    completion_tokens: stats.tokens_generated,
    total_tokens: stats.prompt_tokens + stats.tokens_generated,
    prompt_tokens_details: { cached_tokens: stats.cached_prompt_tokens ?? 0 },
  };
}

// -- chat completions ----------------------------------------------------------------------

export async function chatCompletions(exchange: Exchange): Promise<void> {
  const request = readChatRequest(await exchange.body());
  exchange.fieldNames = request.fieldNames;
  const generation = await OpenGeneration.start(exchange.engine, request.params, exchange.signal);
  const head = { id: `chatcmpl-${randomUUID()}`, created: Math.floor(Date.now() / 1000), model: request.model };

  if (!request.stream) {
    const whole = await collect(generation);
    const message: Record<string, unknown> = { role: 'assistant', content: whole.text, refusal: null };
    if (whole.toolCalls.length) {
      message['tool_calls'] = whole.toolCalls.map(toolCall);
      if (!whole.text) message['content'] = null;
    }
    if (whole.reasoning) message['reasoning_content'] = whole.reasoning;
    const choice = {
      index: 0,
      message,
      logprobs: request.logprobs ? { content: whole.logprobs.map(contentLogprob), refusal: null } : null,
      finish_reason: apiFinishReason(whole.end.finishReason),
    };
    exchange.json(200, { ...head, object: 'chat.completion', choices: [choice], usage: usage(whole.end.stats) });
    return;
  }

  const stream = exchange.openStream();
  // A chunk per token: the part that never changes is serialized once.
  const opening = `{"id":"${head.id}","object":"chat.completion.chunk","created":${head.created},"model":${JSON.stringify(head.model)},"choices":[{"index":0,"delta":`;
  const chunk = (delta: unknown, logprobs: unknown = null, finish: ApiFinishReason | null = null) =>
    stream.sendRaw(`${opening}${JSON.stringify(delta)},"logprobs":${JSON.stringify(logprobs)},"finish_reason":${JSON.stringify(finish)}}]}`);
  await chunk({ role: 'assistant', content: '' });
  for await (const item of generation) {
    switch (item.type) {
      case 'token':
        if (request.logprobs) await chunk({ content: item.text }, { content: [contentLogprob(tokenLogprob(item))] });
        else if (item.text) await chunk({ content: item.text });
        break;
      case 'reasoning':
        if (item.text) await chunk({ reasoning_content: item.text });
        break;
      case 'tool_call':
        await chunk({ tool_calls: [{ index: item.index, ...toolCall(item) }] });
        break;
      case 'stats': {
        await chunk({}, null, apiFinishReason(item.finishReason));
        if (request.includeUsage) {
          await stream.send({ ...head, object: 'chat.completion.chunk', choices: [], usage: usage(item.stats) });
        }
      }
    }
  }
  await stream.sendRaw('[DONE]');
  stream.end();
}

function toolCall(call: ToolCallChunk) {
  return { id: call.id, type: 'function', function: { name: call.name, arguments: call.arguments } };
}

function bytesOf(text: string): number[] {
  return [...Buffer.from(text, 'utf8')];
}

function topEntry(top: TopLogprob) {
  return { token: top.token, logprob: top.logprob, bytes: bytesOf(top.token) };
}

function contentLogprob(entry: TokenLogprob) {
  return { token: entry.token, logprob: entry.logprob, bytes: bytesOf(entry.token), top_logprobs: entry.top.map(topEntry) };
}

// -- completions ---------------------------------------------------------------------------

export async function completions(exchange: Exchange): Promise<void> {
  const request = readCompletionRequest(await exchange.body());
  exchange.fieldNames = request.fieldNames;
  const generation = await OpenGeneration.start(exchange.engine, request.params, exchange.signal);
  const head = { id: `cmpl-${randomUUID()}`, object: 'text_completion', created: Math.floor(Date.now() / 1000), model: request.model };
  const wantLogprobs = request.logprobs !== undefined;

  if (!request.stream) {
    const whole = await collect(generation);
    const choice = {
      index: 0,
      text: request.echo + whole.text,
      logprobs: wantLogprobs ? completionLogprobs(whole.logprobs, request.echo.length) : null,
      finish_reason: apiFinishReason(whole.end.finishReason),
    };
    exchange.json(200, { ...head, choices: [choice], usage: usage(whole.end.stats) });
    return;
  }

  const stream = exchange.openStream();
  const choice = (text: string, extra: Record<string, unknown> = {}) =>
    stream.send({ ...head, choices: [{ index: 0, text, logprobs: null, finish_reason: null, ...extra }] });
  let offset = request.echo.length;
  if (request.echo) await choice(request.echo);
  for await (const item of generation) {
    if (item.type === 'token') {
      if (wantLogprobs) await choice(item.text, { logprobs: completionLogprobs([tokenLogprob(item)], offset) });
      else if (item.text) await choice(item.text);
      offset += item.text.length;
    } else if (item.type === 'stats') {
      await choice('', { finish_reason: apiFinishReason(item.finishReason) });
      if (request.includeUsage) await stream.send({ ...head, choices: [], usage: usage(item.stats) });
    }
  }
  await stream.sendRaw('[DONE]');
  stream.end();
}

/** The legacy shape: parallel lists, the alternatives as {token: logprob} maps. */
function completionLogprobs(entries: TokenLogprob[], startOffset: number) {
  const textOffset: number[] = [];
  let offset = startOffset;
  for (const entry of entries) {
    textOffset.push(offset);
    offset += entry.token.length;
  }
  return {
    tokens: entries.map((e) => e.token),
    token_logprobs: entries.map((e) => e.logprob),
    top_logprobs: entries.map((e) => Object.fromEntries(e.top.map((t) => [t.token, t.logprob]))),
    text_offset: textOffset,
  };
}

// -- models and embeddings -----------------------------------------------------------------

/** Models are the runtime's loaded ones; `created` is when this answer was made. */
export async function openaiModels(exchange: Exchange): Promise<void> {
  const state = await exchange.engine.runtimeState({ signal: exchange.signal });
  const created = Math.floor(Date.now() / 1000);
  exchange.json(200, {
    object: 'list',
    data: state.loaded_models.map((m) => ({ id: m.model_id, object: 'model', created, owned_by: 'mlx-serving' })),
  });
}

export async function openaiModel(exchange: Exchange, id: string): Promise<void> {
  const state = await exchange.engine.runtimeState({ signal: exchange.signal });
  if (!state.loaded_models.some((m) => m.model_id === id)) {
    throw new HttpError(404, 'not_found', `model '${id}' is not loaded`, 'model');
  }
  exchange.json(200, { id, object: 'model', created: Math.floor(Date.now() / 1000), owned_by: 'mlx-serving' });
}

/**
 * Vectors of a loaded model (`embed`): floats, or base64 of little-endian float32 (what the
 * openai client asks for by default). `pooling`, `normalize` and `truncate` are the
 * runtime's own options, passed through.
 */
export async function embeddings(exchange: Exchange): Promise<void> {
  const body = await exchange.body();
  const model = body.get('model').string({ nonEmpty: true });
  const inputField = body.get('input');
  if (!inputField.isString && inputField.array().some((item) => !item.isString)) {
    throw inputField.invalid('token arrays are not served: send text');
  }
  const input = inputField.strings({ min: 1 });
  const format = body.get('encoding_format').optional((f) => f.oneOf(['float', 'base64'])) ?? 'float';
  if (body.get('dimensions').present) throw body.get('dimensions').invalid('is not served: vectors have the model\'s size');
  const params: Parameters<Exchange['engine']['embed']>[0] = { model_id: model, input };
  const pooling = body.get('pooling').optional((f) => f.oneOf(['mean', 'last', 'cls']));
  if (pooling) params.pooling = pooling;
  const normalize = body.get('normalize').optional((f) => f.boolean());
  if (normalize !== undefined) params.normalize = normalize;
  const truncate = body.get('truncate').optional((f) => f.boolean());
  if (truncate !== undefined) params.truncate = truncate;
  exchange.fieldNames = (wire) => wire.replace(/^model_id/, 'model');
  const result = await exchange.engine.embed(params, { signal: exchange.signal });
  const encode = (vector: number[]) => (format === 'float' ? vector : Buffer.from(new Float32Array(vector).buffer).toString('base64'));
  exchange.json(200, {
    object: 'list',
    data: result.embeddings.map((vector, index) => ({ object: 'embedding', index, embedding: encode(vector) })),
    model,
    usage: { prompt_tokens: result.prompt_tokens, total_tokens: result.prompt_tokens },
  });
}
