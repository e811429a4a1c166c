/**
 * OpenAI request bodies (`/v1/chat/completions`, `/v1/completions`) read into the runtime's
 * generate params, every field checked where it is read so that a 400 names it. Fields the
 * runtime checks against its own limits (max_tokens, stop lengths, tool schemas) are left
 * to it; its errors name wire fields, which `fieldNames` maps back to the request's.
 */
import type { GeneratorParams } from '../engine.js';
import type { ChatMessage, GenerateParams, ImagePart, TextPart, ToolCall, ToolDefinition } from '../types/index.js';
import type { FieldNames } from './errors.js';
import type { Field } from './params.js';

export interface OpenAIRequest {
  model: string;
  stream: boolean;
  includeUsage: boolean;
  params: GeneratorParams;
  fieldNames: FieldNames;
}

export interface ChatRequest extends OpenAIRequest {
  logprobs: boolean;
}

export interface CompletionRequest extends OpenAIRequest {
  /** `logprobs: N` asks for the top N alternatives of each token. */
  logprobs: number | undefined;
  /** The prompt to put in front of the answer (`echo`); only for a text prompt. */
  echo: string;
}

type Sampling = Omit<GenerateParams, 'prompt' | 'prompt_tokens' | 'messages'>;

/** The fields both endpoints share. */
function readCommon(body: Field): { model: string; stream: boolean; includeUsage: boolean; sampling: Sampling } {
  const model = body.get('model').string({ nonEmpty: true });
  const stream = body.get('stream').optional((f) => f.boolean()) ?? false;
  const includeUsage = body.get('stream_options').optional((f) => f.get('include_usage').optional((u) => u.boolean())) ?? false;
  const n = body.get('n').optional((f) => f.integer({ min: 1 }));
  if (n !== undefined && n !== 1) throw body.get('n').invalid('only n = 1 is served');
  // OpenAI's defaults, not the runtime's: a request means what it means on OpenAI.
  const sampling: Sampling = {
    model_id: model,
    temperature: body.get('temperature').optional((f) => f.number({ min: 0, max: 2 })) ?? 1,
    top_p: body.get('top_p').optional((f) => f.number({ min: 0, max: 1 })) ?? 1,
  };
  const stop = body.get('stop').optional((f) => f.strings());
  if (stop) sampling.stop_sequences = stop;
  const seed = body.get('seed').optional((f) => f.integer());
  if (seed !== undefined) sampling.seed = seed;
  for (const key of ['presence_penalty', 'frequency_penalty'] as const) {
    const value = body.get(key).optional((f) => f.number({ min: -2, max: 2 }));
    if (value !== undefined) sampling[key] = value;
  }
  const bias = body.get('logit_bias').optional((f) => readLogitBias(f));
  if (bias) sampling.logit_bias = bias;
  // Sampling fields OpenAI lacks and local servers (mlx_lm.server, vLLM) take.
  const topK = body.get('top_k').optional((f) => f.integer({ min: 0 }));
  if (topK !== undefined) sampling.top_k = topK;
  const minP = body.get('min_p').optional((f) => f.number({ min: 0, max: 1 }));
  if (minP !== undefined) sampling.min_p = minP;
  const repetition = body.get('repetition_penalty').optional((f) => f.number({ min: 0 }));
  if (repetition !== undefined) sampling.repetition_penalty = repetition;
  return { model, stream, includeUsage, sampling };
}

function readLogitBias(field: Field): Record<string, number> {
  const bias: Record<string, number> = {};
  for (const key of Object.keys(field.record())) {
    const entry = field.get(key);
    if (!/^\d+$/.test(key)) throw entry.invalid('keys must be token ids');
    bias[key] = entry.number({ min: -100, max: 100 });
  }
  return bias;
}

/** Runtime field → request field: the names differ, the paths below them do not. */
function renamer(renames: Record<string, string>): FieldNames {
  return (wire) => {
    const head = /^[a-z_]+/.exec(wire)?.[0] ?? wire;
    const renamed = renames[head];
    if (renamed === undefined) return wire;
    return renamed + wire.slice(head.length);
  };
}

export function readChatRequest(body: Field): ChatRequest {
  const { model, stream, includeUsage, sampling } = readCommon(body);
  const messages = body
    .get('messages')
    .array({ min: 1 })
    .map((m) => readMessage(m));
  const params: GeneratorParams = { ...sampling, messages, reasoning: 'separate' };
  const maxTokensField = body.get('max_completion_tokens').present ? 'max_completion_tokens' : 'max_tokens';
  const maxTokens = body.get(maxTokensField).optional((f) => f.integer({ min: 1 }));
  if (maxTokens !== undefined) params.max_tokens = maxTokens;
  const logprobs = body.get('logprobs').optional((f) => f.boolean()) ?? false;
  const topLogprobs = body.get('top_logprobs').optional((f) => f.integer({ min: 0, max: 20 }));
  if (topLogprobs !== undefined && !logprobs) throw body.get('top_logprobs').invalid('needs logprobs: true');
  if (logprobs) {
    params.logprobs = true;
    params.top_logprobs = topLogprobs ?? 0;
  }
  const guidance = body.get('response_format').optional((f) => readResponseFormat(f));
  if (guidance) params.guidance = guidance;
  const tools = body.get('tools').optional((f) => f.array().map((tool) => readTool(tool)));
  if (tools?.length) params.tools = tools;
  const toolChoice = body.get('tool_choice').optional((f) => readToolChoice(f));
  if (toolChoice !== undefined) params.tool_choice = toolChoice;
  body.get('parallel_tool_calls').optional((f) => f.boolean()); // calls come as the model makes them
  const fieldNames = renamer({
    model_id: 'model',
    stop_sequences: 'stop',
    guidance: 'response_format.json_schema',
    max_tokens: maxTokensField,
  });
  return { model, stream, includeUsage, logprobs, params, fieldNames };
}

const ROLES = ['system', 'developer', 'user', 'assistant', 'tool'] as const;

function readMessage(message: Field): ChatMessage {
  const role = message.get('role').oneOf(ROLES);
  const content = message.get('content');
  const wire: ChatMessage = { role, content: null };
  if (role === 'assistant') {
    wire.content = content.optional((f) => readContent(f, false)) ?? null;
    const calls = message.get('tool_calls').optional((f) => f.array().map((call) => readToolCall(call)));
    if (calls?.length) wire.tool_calls = calls;
    if (wire.content === null && !wire.tool_calls) throw content.invalid('is required without tool_calls');
  } else if (role === 'tool') {
    wire.tool_call_id = message.get('tool_call_id').string();
    wire.content = readContent(content, false);
  } else {
    wire.content = readContent(content, role === 'user');
  }
  return wire;
}

/** A string, or parts: text (any role), images (user messages, as data URIs). */
function readContent(field: Field, images: boolean): string | Array<TextPart | ImagePart> {
  if (field.required().isString) return field.string();
  return field.array().map((part) => {
    const type = part.get('type').string();
    if (type === 'text' || type === 'refusal') return { type: 'text' as const, text: part.get(type).string() };
    if (type === 'image_url' && images) {
      const imageUrl = part.get('image_url');
      const url = imageUrl.isString ? imageUrl.string() : imageUrl.get('url').string();
      if (!url.startsWith('data:')) throw imageUrl.invalid('only data: URIs are served (the runtime fetches nothing)');
      return { type: 'image' as const, image: url };
    }
    throw part.get('type').invalid(`content parts of type ${JSON.stringify(type)} are not served here`);
  });
}

function readToolCall(call: Field): ToolCall {
  call.get('type').optional((f) => f.oneOf(['function']));
  const fn = call.get('function');
  return {
    id: call.get('id').string(),
    type: 'function',
    function: { name: fn.get('name').string({ nonEmpty: true }), arguments: fn.get('arguments').string() },
  };
}

function readTool(tool: Field): ToolDefinition {
  tool.get('type').oneOf(['function']);
  const fn = tool.get('function');
  const definition: ToolDefinition['function'] = { name: fn.get('name').string({ nonEmpty: true }) };
  const description = fn.get('description').optional((f) => f.string());
  if (description !== undefined) definition.description = description;
  const parameters = fn.get('parameters').optional((f) => f.record());
  if (parameters !== undefined) definition.parameters = parameters;
  fn.get('strict').optional((f) => f.boolean()); // calls are always checked against the schema
  return { type: 'function', function: definition };
}

function readToolChoice(field: Field): NonNullable<GenerateParams['tool_choice']> {
  if (field.isString) return field.oneOf(['auto', 'none', 'required']);
  field.get('type').oneOf(['function']);
  return { type: 'function', function: { name: field.get('function').get('name').string({ nonEmpty: true }) } };
}

function readResponseFormat(field: Field): GenerateParams['guidance'] {
  const type = field.get('type').oneOf(['text', 'json_object', 'json_schema']);
  if (type === 'text') return undefined;
  if (type === 'json_object') return { mode: 'json_schema', schema: { type: 'object' } };
  const spec = field.get('json_schema');
  spec.get('name').string({ nonEmpty: true });
  spec.get('strict').optional((f) => f.boolean());
  return { mode: 'json_schema', schema: spec.get('schema').optional((f) => f.record()) ?? { type: 'object' } };
}

export function readCompletionRequest(body: Field): CompletionRequest {
  const { model, stream, includeUsage, sampling } = readCommon(body);
  const promptField = body.get('prompt');
  const prompt = readPrompt(promptField);
  const params: GeneratorParams =
    typeof prompt === 'string' ? { ...sampling, prompt } : { ...sampling, prompt_tokens: prompt };
  const maxTokens = body.get('max_tokens').optional((f) => f.integer({ min: 1 }));
  if (maxTokens !== undefined) params.max_tokens = maxTokens;
  const logprobs = body.get('logprobs').optional((f) => f.integer({ min: 0, max: 20 }));
  if (logprobs !== undefined) {
    params.logprobs = true;
    params.top_logprobs = logprobs;
  }
  const bestOf = body.get('best_of').optional((f) => f.integer({ min: 1 }));
  if (bestOf !== undefined && bestOf !== 1) throw body.get('best_of').invalid('only best_of = 1 is served');
  if (body.get('suffix').present) throw body.get('suffix').invalid('is not served (no fill-in-the-middle)');
  const echo = body.get('echo').optional((f) => f.boolean()) ?? false;
  if (echo && typeof prompt !== 'string') throw body.get('echo').invalid('is served only with a text prompt');
  const fieldNames = renamer({ model_id: 'model', stop_sequences: 'stop', prompt: 'prompt', prompt_tokens: 'prompt', top_logprobs: 'logprobs' });
  return { model, stream, includeUsage, logprobs, echo: echo ? (prompt as string) : '', params, fieldNames };
}

/** A string or token ids, alone or as a batch of one (n = 1: one prompt per request). */
function readPrompt(field: Field): string | number[] {
  if (field.required().isString) return field.string();
  const items = field.array({ min: 1 });
  if (items.every((item) => typeof item.raw === 'number')) return items.map((item) => item.integer({ min: 0 }));
  if (items.length !== 1) throw field.invalid('one prompt per request is served');
  const only = items[0]!;
  return only.isString ? only.string() : only.array({ min: 1 }).map((item) => item.integer({ min: 0 }));
}
