/**
 * A generation on behalf of one HTTP request: cancelled when the client goes away, and
 * started before the response is, so that a refusal (unknown model, bad params, overload)
 * still gets its own status instead of a 200 with an error inside.
 */
import type { Engine, GeneratorParams } from '../engine.js';
import type { FinishReason, GenerationChunk, StatsChunk, ToolCallChunk } from '../generator.js';
import type { TopLogprob } from '../types/index.js';

/** What the server needs of an engine (tests stand a scripted one in). */
export type ServedEngine = Pick<Engine, 'createGenerator' | 'embed' | 'runtimeState' | 'metrics' | 'info'>;

export class OpenGeneration implements AsyncIterable<GenerationChunk> {
  private constructor(
    private readonly first: GenerationChunk,
    private readonly iterator: AsyncIterator<GenerationChunk>,
  ) {}

  /**
   * Starts the generation and waits for its first chunk: by then the runtime has accepted
   * it, or the failure is thrown here. `signal` is the client's: aborting cancels it.
   */
  static async start(engine: ServedEngine, params: GeneratorParams, signal: AbortSignal): Promise<OpenGeneration> {
    const iterator = engine.createGenerator(params, { signal })[Symbol.asyncIterator]();
    const first = await iterator.next();
    // A Generation always ends with its stats chunk unless it throws.
    if (first.done) throw new Error('generation ended without a chunk');
    return new OpenGeneration(first.value, iterator);
  }

  /** The first chunk, then the Generation's own (no extra await per chunk). A consumer
   * that stops early (its write failed, it threw) stops the stream too. */
  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    let first: GenerationChunk | undefined = this.first;
    return {
      next: () => {
        if (first === undefined) return this.iterator.next();
        const value = first;
        first = undefined;
        return Promise.resolve({ done: false, value });
      },
      return: async () => {
        await this.iterator.return?.();
        return { done: true, value: undefined };
      },
    };
  }
}

/** One generated token with its log-probabilities (requests with `logprobs`). */
export interface TokenLogprob {
  token: string;
  logprob: number;
  top: TopLogprob[];
}

/** A whole generation, for the answers that are not streamed. */
export interface Collected {
  text: string;
  reasoning: string;
  toolCalls: ToolCallChunk[];
  logprobs: TokenLogprob[];
  end: StatsChunk;
}

export async function collect(generation: OpenGeneration): Promise<Collected> {
  let text = '';
  let reasoning = '';
  const toolCalls: ToolCallChunk[] = [];
  const logprobs: TokenLogprob[] = [];
  for await (const chunk of generation) {
    switch (chunk.type) {
      case 'token':
        text += chunk.text;
        if (chunk.logprob !== undefined) logprobs.push(tokenLogprob(chunk));
        break;
      case 'reasoning':
        reasoning += chunk.text;
        break;
      case 'tool_call':
        toolCalls.push(chunk);
        break;
      case 'stats':
        return { text, reasoning, toolCalls, logprobs, end: chunk };
    }
  }
  throw new Error('generation ended without its stats');
}

/** The token's own text is the one its top list gives; the chunk's text is what it completed. */
export function tokenLogprob(chunk: { text: string; tokenId: number; logprob?: number; topLogprobs?: TopLogprob[] }): TokenLogprob {
  const top = chunk.topLogprobs ?? [];
  const own = top.find((t) => t.token_id === chunk.tokenId);
  return { token: own?.token ?? chunk.text, logprob: chunk.logprob ?? 0, top };
}

/** A finish reason the APIs know; `cancelled` only reaches a client that has gone. */
export type ApiFinishReason = 'stop' | 'length' | 'tool_calls';

export function apiFinishReason(reason: FinishReason): ApiFinishReason {
  if (reason === 'length') return 'length';
  if (reason === 'tool_calls') return 'tool_calls';
  return 'stop';
}

