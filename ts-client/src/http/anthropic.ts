/**
 * Anthropic's Messages API over the engine: `POST /v1/messages`, whole or as its event
 * stream (message_start, content_block_start/delta/stop, message_delta, message_stop), with
 * text, thinking and tool_use blocks out and text, image, tool_use and tool_result blocks in;
 * errors as `{type: "error", error: {type, message}}`.
 */
import { randomUUID } from 'node:crypto';

import type { GeneratorParams } from '../engine.js';
import type { FinishReason, ToolCallChunk } from '../generator.js';
import type { ChatMessage, GenerateParams, TextPart, ImagePart, ToolCall, ToolDefinition } from '../types/index.js';
import { HttpError, type ErrorDialect, type ErrorKind, type FieldNames } from './errors.js';
import type { Exchange } from './exchange.js';
import { collect, OpenGeneration } from './generation.js';
import type { Field } from './params.js';
import type { EventStream } from './sse.js';

const ERROR_TYPES: Record<ErrorKind, string> = {
  invalid_request: 'invalid_request_error',
  authentication: 'authentication_error',
  not_found: 'not_found_error',
  too_large: 'request_too_large',
  rate_limit: 'rate_limit_error',
  unavailable: 'overloaded_error',
  server: 'api_error',
};

export const anthropicErrors: ErrorDialect = {
  body: (error: HttpError) => ({ type: 'error', error: { type: ERROR_TYPES[error.kind], message: error.message } }),
  streamEvent: (error: HttpError) => ({ event: 'error', data: anthropicErrors.body(error) }),
};

type StopReason = 'end_turn' | 'max_tokens' | 'tool_use';

function stopReason(reason: FinishReason): StopReason {
  if (reason === 'length') return 'max_tokens';
  if (reason === 'tool_calls') return 'tool_use';
  return 'end_turn';
}

interface MessagesRequest {
  model: string;
  stream: boolean;
  params: GeneratorParams;
  fieldNames: FieldNames;
}

// -- the request ---------------------------------------------------------------------------

function readRequest(body: Field): MessagesRequest {
  const model = body.get('model').string({ nonEmpty: true });
  const stream = body.get('stream').optional((f) => f.boolean()) ?? false;
  // Where each wire message came from, for errors the runtime reports by wire index.
  const origins: string[] = [];
  const messages: ChatMessage[] = [];
  const system = body.get('system').optional((f) => textOf(f));
  if (system !== undefined) {
    messages.push({ role: 'system', content: system });
    origins.push('system');
  }
  for (const message of body.get('messages').array({ min: 1 })) {
    for (const wire of readMessage(message)) {
      messages.push(wire);
      origins.push(message.path);
    }
  }
  const params: GeneratorParams = {
    model_id: model,
    messages,
    max_tokens: body.get('max_tokens').integer({ min: 1 }),
    // Anthropic's defaults: temperature 1, no nucleus or top-k cut.
    temperature: body.get('temperature').optional((f) => f.number({ min: 0, max: 1 })) ?? 1,
    reasoning: 'separate',
  };
  const topP = body.get('top_p').optional((f) => f.number({ min: 0, max: 1 }));
  if (topP !== undefined) params.top_p = topP;
  const topK = body.get('top_k').optional((f) => f.integer({ min: 0 }));
  if (topK !== undefined) params.top_k = topK;
  const stop = body.get('stop_sequences').optional((f) => f.array().map((s) => s.string()));
  if (stop?.length) params.stop_sequences = stop;
  const tools = body.get('tools').optional((f) => f.array().map((tool) => readTool(tool)));
  if (tools?.length) params.tools = tools;
  const toolChoice = body.get('tool_choice').optional((f) => readToolChoice(f));
  if (toolChoice !== undefined) params.tool_choice = toolChoice;
  // Thinking is always sent apart as thinking blocks; its budget is the answer's max_tokens.
  body.get('thinking').optional((f) => f.get('type').oneOf(['enabled', 'disabled', 'adaptive']));
  return { model, stream, params, fieldNames: (wire) => anthropicField(wire, origins) };
}

/** Runtime paths to the request's: messages by where they came from, tools by their shape. */
function anthropicField(wire: string, origins: string[]): string {
  const message = /^messages\[(\d+)\]/.exec(wire);
  if (message) return origins[Number(message[1])] ?? 'messages';
  return wire
    .replace(/^model_id/, 'model')
    .replace(/^(tools\[\d+\])\.function\.parameters/, '$1.input_schema')
    .replace(/^(tools\[\d+\])\.function/, '$1')
    .replace(/^tool_choice\.function/, 'tool_choice');
}

/** A system prompt or tool result: a string, or text blocks. */
function textOf(field: Field): string {
  if (field.required().isString) return field.string();
  return field
    .array()
    .map((block) => {
      block.get('type').oneOf(['text']);
      return block.get('text').string();
    })
    .join('\n');
}

/**
 * One Anthropic message as wire messages: tool_result blocks become `tool` messages (ahead
 * of the user's other blocks, as the API requires them first), tool_use blocks the
 * assistant's `tool_calls`; thinking blocks of earlier turns are not sent back.
 */
function readMessage(message: Field): ChatMessage[] {
  const role = message.get('role').oneOf(['user', 'assistant']);
  const content = message.get('content');
  if (content.required().isString) return [{ role, content: content.string() }];
  const results: ChatMessage[] = [];
  const parts: Array<TextPart | ImagePart> = [];
  const calls: ToolCall[] = [];
  for (const block of content.array()) {
    const type = block.get('type').string();
    if (type === 'text') {
      parts.push({ type: 'text', text: block.get('text').string() });
    } else if (type === 'image' && role === 'user') {
      const source = block.get('source');
      source.get('type').oneOf(['base64']);
      const mediaType = source.get('media_type').string({ nonEmpty: true });
      parts.push({ type: 'image', image: `data:${mediaType};base64,${source.get('data').string()}` });
    } else if (type === 'tool_result' && role === 'user') {
      const isError = block.get('is_error').optional((f) => f.boolean()) ?? false;
      const text = block.get('content').optional((f) => textOf(f)) ?? '';
      results.push({ role: 'tool', tool_call_id: block.get('tool_use_id').string(), content: isError ? `Error: ${text}` : text });
    } else if (type === 'tool_use' && role === 'assistant') {
      const input = block.get('input').record();
      calls.push({
        id: block.get('id').string(),
        type: 'function',
        function: { name: block.get('name').string({ nonEmpty: true }), arguments: JSON.stringify(input) },
      });
    } else if (type !== 'thinking' && type !== 'redacted_thinking') {
      throw block.get('type').invalid(`${JSON.stringify(type)} blocks are not served in ${role} messages`);
    }
  }
  const own: ChatMessage[] = [];
  const text = parts.every((p) => p.type === 'text') ? parts.map((p) => (p as { text: string }).text).join('') : null;
  if (calls.length) own.push({ role, content: text ?? parts, tool_calls: calls });
  else if (parts.length || !results.length) own.push({ role, content: text ?? parts });
  return [...results, ...own];
}

function readTool(tool: Field): ToolDefinition {
  const type = tool.get('type').optional((f) => f.string());
  if (type !== undefined && type !== 'custom') throw tool.get('type').invalid('only custom tools (name, input_schema) are served');
  const definition: ToolDefinition['function'] = {
    name: tool.get('name').string({ nonEmpty: true }),
    parameters: tool.get('input_schema').record(),
  };
  const description = tool.get('description').optional((f) => f.string());
  if (description !== undefined) definition.description = description;
  return { type: 'function', function: definition };
}

function readToolChoice(field: Field): NonNullable<GenerateParams['tool_choice']> {
  const type = field.get('type').oneOf(['auto', 'any', 'tool', 'none']);
  if (type === 'any') return 'required';
  if (type === 'tool') return { type: 'function', function: { name: field.get('name').string({ nonEmpty: true }) } };
  return type;
}

// -- the answer ----------------------------------------------------------------------------

function toolUse(call: ToolCallChunk) {
  let input: unknown;
  try {
    input = JSON.parse(call.arguments);
  } catch {
    input = {}; // the runtime sends JSON text; an unparsable one is no input at all
  }
  return { type: 'tool_use', id: call.id, name: call.name, input };
}

export async function messages(exchange: Exchange): Promise<void> {
  const request = readRequest(await exchange.body());
  exchange.fieldNames = request.fieldNames;
  const generation = await OpenGeneration.start(exchange.engine, request.params, exchange.signal);
  const id = `msg_${randomUUID().replace(/-/g, '')}`;
  const message = { id, type: 'message', role: 'assistant', model: request.model };

  if (!request.stream) {
    const whole = await collect(generation);
    const content: unknown[] = [];
    if (whole.reasoning) content.push({ type: 'thinking', thinking: whole.reasoning, signature: '' });
    if (whole.text || !whole.toolCalls.length) content.push({ type: 'text', text: whole.text });
    content.push(...whole.toolCalls.map(toolUse));
    const stats = whole.end.stats;
    exchange.json(200, {
      ...message,
      content,
      stop_reason: stopReason(whole.end.finishReason),
      stop_sequence: null,
      usage: { input_tokens: stats.prompt_tokens, output_tokens: stats.tokens_generated },
    });
    return;
  }

  const stream = exchange.openStream();
  const blocks = new BlockWriter(stream);
  await stream.send(
    { type: 'message_start', message: { ...message, content: [], stop_reason: null, stop_sequence: null, usage: { input_tokens: 0, output_tokens: 0 } } },
    'message_start',
  );
  for await (const item of generation) {
    switch (item.type) {
      case 'token':
        if (item.text) await blocks.delta('text', item.text);
        break;
      case 'reasoning':
        if (item.text) await blocks.delta('thinking', item.text);
        break;
      case 'tool_call':
        await blocks.toolUse(item);
        break;
      case 'stats': {
        await blocks.close();
        const { prompt_tokens, tokens_generated } = item.stats;
        await stream.send(
          {
            type: 'message_delta',
            delta: { stop_reason: stopReason(item.finishReason), stop_sequence: null },
            // The prompt's size is known only now: message_start said 0.
            usage: { input_tokens: prompt_tokens, output_tokens: tokens_generated },
          },
          'message_delta',
        );
        await stream.send({ type: 'message_stop' }, 'message_stop');
      }
    }
  }
  stream.end();
}

/** The stream's content blocks: one open at a time, opened by the first delta of a kind. */
class BlockWriter {
  private index = -1;
  private open: 'text' | 'thinking' | undefined;

  constructor(private readonly stream: EventStream) {}

  async delta(kind: 'text' | 'thinking', text: string): Promise<void> {
    if (this.open !== kind) {
      await this.close();
      this.index += 1;
      this.open = kind;
      const block = kind === 'text' ? { type: 'text', text: '' } : { type: 'thinking', thinking: '', signature: '' };
      await this.send('content_block_start', { content_block: block });
    }
    const delta = kind === 'text' ? { type: 'text_delta', text } : { type: 'thinking_delta', thinking: text };
    await this.send('content_block_delta', { delta });
  }

  /** A call comes whole: its block opens, carries the arguments in one delta, and closes. */
  async toolUse(call: ToolCallChunk): Promise<void> {
    await this.close();
    this.index += 1;
    await this.send('content_block_start', { content_block: { type: 'tool_use', id: call.id, name: call.name, input: {} } });
    await this.send('content_block_delta', { delta: { type: 'input_json_delta', partial_json: call.arguments } });
    await this.send('content_block_stop', {});
  }

  async close(): Promise<void> {
    if (this.open === undefined) return;
    this.open = undefined;
    await this.send('content_block_stop', {});
  }

  private send(type: string, fields: Record<string, unknown>): Promise<void> {
    return this.stream.send({ type, index: this.index, ...fields }, type);
  }
}

// -- models --------------------------------------------------------------------------------

export async function anthropicModels(exchange: Exchange): Promise<void> {
  const state = await exchange.engine.runtimeState({ signal: exchange.signal });
  const created = new Date().toISOString();
  const data = state.loaded_models.map((m) => ({ type: 'model', id: m.model_id, display_name: m.model_id, created_at: created }));
  exchange.json(200, { data, has_more: false, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null });
}
