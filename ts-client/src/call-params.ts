/**
 * Params of the engine's calls where the client's shape differs from the wire's (one
 * prompt form, the seeds' `structured`, any list for `embed`), and the conversion of
 * generate params to the wire's.
 */
import { InvalidParamsError } from './errors.js';
import type { ChatMessage, EmbedParams, GenerateParams, GenerateWithImageParams } from './types/index.js';

/** `embed` params with `input` as any string list (the wire type says non-empty: an empty
 * list is refused at `input` before sending). */
export type EmbedRequest = Omit<EmbedParams, 'input'> & { input: string | readonly string[] };

/** Structured output in the seeds' shape; sent as `guidance: {mode: "json_schema", schema}`. */
export interface StructuredOutput {
  schema: Record<string, unknown>;
  format?: 'json';
}

/**
 * Exactly one prompt form, as the runtime requires (the wire's types cannot say so): a
 * `prompt`, `prompt_tokens`, or chat `messages`. An empty `prompt` beside another form is
 * allowed, since compat clients sent one.
 */
export type PromptForm =
  | { prompt: string; prompt_tokens?: null; messages?: null }
  | { prompt_tokens: number[]; prompt?: ''; messages?: null }
  | { messages: ChatMessage[]; prompt?: ''; prompt_tokens?: null };

type WithOnePrompt<P extends GenerateParams> = Omit<P, keyof PromptForm> & PromptForm;

/** `generate` params; `stream_id` is chosen by the client when left out. */
export type GeneratorParams = WithOnePrompt<GenerateParams> & { structured?: StructuredOutput };

/** `generate_with_image` params: generate's plus `image` / `images` (base64 or data URIs,
 * see `imageDataUri`) and `raw_prompt`. */
export type VisionGeneratorParams = WithOnePrompt<GenerateWithImageParams>;

/** The seeds' `structured` option becomes the wire's `guidance`. */
export function toWireParams(params: GeneratorParams): GenerateParams {
  const { structured, ...wire } = params;
  if (structured === undefined) return wire;
  const issue = (path: string, message: string) =>
    new InvalidParamsError(`generate: ${path} ${message}`, path, [{ path, message, code: 'invalid' }], 'client');
  if (wire.guidance) throw issue('structured', 'cannot be combined with guidance');
  if (structured.format !== undefined && structured.format !== 'json') {
    throw issue('structured.format', "must be 'json' (the runtime constrains to a JSON schema)");
  }
  if (typeof structured.schema !== 'object' || structured.schema === null) throw issue('structured.schema', 'must be an object');
  return { ...wire, guidance: { mode: 'json_schema', schema: structured.schema } };
}
