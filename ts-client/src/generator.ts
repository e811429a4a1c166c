/**
 * One generation stream as an async iterable: token chunks as the runtime sends them (and,
 * when the request asked for them, reasoning chunks and whole tool calls), then one `stats`
 * chunk carrying the finish reason. Errors (the runtime's, a crash, a protocol
 * violation, a consumer that fell too far behind) are thrown from the iteration after the
 * tokens that came before them.
 */
import { ProtocolError, SlowConsumerError } from './errors.js';
import type { StreamChunk, StreamCompleted, StreamStats, StreamToolCall, TopLogprob } from './types/index.js';
import type { COMPAT_FINISH_REASONS } from './validation.js';

/** `stop`, `length`, `cancelled`; `completed` and `no_output` come from compat runtimes. */
export type FinishReason = StreamCompleted['finish_reason'] | (typeof COMPAT_FINISH_REASONS)[number];

export interface TokenChunk {
  type: 'token';
  streamId: string;
  /** The text this token completed; may be empty (part of a multi-byte character). The
   * texts of a stream concatenate exactly to its whole text. */
  text: string;
  tokenId: number;
  /** Present when the request set `logprobs`. */
  logprob?: number;
  topLogprobs?: TopLogprob[];
  /** Present when the request set `include_cumulative_text`. */
  cumulativeText?: string;
}

/** A token of the model's reasoning (`<think>…</think>` and the like), sent apart from the
 * answer when the request set `reasoning: "separate"`. */
export interface ReasoningChunk {
  type: 'reasoning';
  streamId: string;
  text: string;
  tokenId: number;
  logprob?: number;
  topLogprobs?: TopLogprob[];
}

/** One complete tool call, parsed from the output by the runtime (requests with `tools`). */
export interface ToolCallChunk {
  type: 'tool_call';
  streamId: string;
  /** Position among the stream's calls, from 0. */
  index: number;
  id: string;
  name: string;
  /** The arguments as JSON text. */
  arguments: string;
}

export interface StatsChunk {
  type: 'stats';
  streamId: string;
  finishReason: FinishReason;
  /** The runtime's `stream.stats` (timings in seconds). A stream the client cancelled ends
   * before the runtime's stats come: then they are the client's own count (see `cancel`). */
  stats: StreamStats;
}

export type GenerationChunk = TokenChunk | ReasoningChunk | ToolCallChunk | StatsChunk;

/** What a Generation needs from the engine. */
export interface StreamControl {
  /** Ask the runtime to cancel the stream; nobody reads what it sends after that. */
  cancel(streamId: string): void;
}

/**
 * How many chunks a stream keeps for a consumer that has not read them (0: no bound).
 *
 * Past the bound the stream is cancelled on the runtime and fails with SlowConsumerError
 * (as a NATS client drops a "slow consumer"). The other ways out are worse here: stdout
 * carries every stream and every answer, so pausing it for one idle reader would stall the
 * rest (its `cancel` answers included); dropping chunks would break the promise that the
 * texts concatenate exactly; and the protocol has no per-stream flow control (HTTP/2's
 * windows) to slow one stream down. Cancelling also frees the stream's batch slot.
 *
 * The runtime bounds its side too, differently: its outbound queue (8 MiB,
 * `limits.outbound_queue_bytes`, shared by all streams) pauses generation when this process
 * stops reading stdout altogether. This client reads stdout as it comes, so that queue never
 * fills on account of one idle consumer; without this bound its chunks would pile up here.
 *
 * The default must exceed what one read of stdout can hold for one stream, since a whole
 * read is delivered before any consumer runs: 64 KiB of lines, some 1,300 short chunks. At
 * twice the runtime's default `max_tokens` limit (4096) a default stream always fits, and
 * one stream's backlog stays near a megabyte (more with `include_cumulative_text`, where
 * each chunk repeats the text so far).
 */
export const DEFAULT_MAX_UNREAD_CHUNKS = 8192;

interface Waiter {
  resolve(result: IteratorResult<GenerationChunk>): void;
  reject(error: unknown): void;
}

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };

export class Generation implements AsyncIterable<GenerationChunk> {
  private readonly queue: GenerationChunk[] = [];
  /** next() calls waiting for a chunk, oldest first: an async generator queues them too. */
  private readonly waiters: Waiter[] = [];
  private stats: StreamStats | undefined;
  /** The error to throw from the iteration, once; wrapped so that any value can be thrown. */
  private failure: { error: unknown } | undefined;
  private final: StatsChunk | undefined;
  private ended = false;
  private cancelledHere = false;
  /** Ended here while the runtime may still run it: cancel it there once acknowledged. */
  private stopOnRuntime = false;
  private drained = false; // the consumer stopped listening (break / return)
  private iterating = false;
  private acknowledged = false;
  private readonly createdAt = performance.now();
  private firstTokenAt: number | undefined;
  private tokensReceived = 0;
  private readonly endListeners: Array<(final: StatsChunk | undefined) => void> = [];

  constructor(
    readonly streamId: string,
    readonly modelId: string,
    private readonly control: StreamControl,
    private readonly maxUnreadChunks = DEFAULT_MAX_UNREAD_CHUNKS,
  ) {}

  /** True once the stream has ended (its final chunk is queued, or it failed). */
  get done(): boolean {
    return this.ended;
  }

  /** True when `cancel()` (an abort, a `break`) ended the stream, not the runtime. */
  get cancelled(): boolean {
    return this.cancelledHere;
  }

  /**
   * Ends the stream now, whether or not the runtime answers (it may be stopped, restarting
   * or slow): what was already received is still iterated, then a `stats` chunk with finish
   * reason `cancelled`. Its stats are the runtime's when they had come, else the client's
   * count: tokens received, times measured here, `prompt_tokens` 0 (unknown). The runtime is
   * asked to cancel in the background, at once or when it acknowledges the stream. Nothing
   * happens to a stream that has already ended.
   */
  cancel(): void {
    if (this.ended) return;
    this.cancelledHere = true;
    const stats = this.stats ?? this.clientStats();
    this.finish({ type: 'stats', streamId: this.streamId, finishReason: 'cancelled', stats });
    this.stopRuntimeStream();
  }

  [Symbol.asyncIterator](): AsyncIterator<GenerationChunk> {
    if (this.iterating) throw new TypeError('a Generation can be iterated only once');
    this.iterating = true;
    return {
      next: () => this.next(),
      return: async () => {
        // The consumer broke out of its loop: stop the stream and drop what it would send.
        this.drained = true;
        this.queue.length = 0;
        this.cancel(); // settles any next() still waiting
        return DONE;
      },
    };
  }

  // -- fed by the engine -----------------------------------------------------------------

  /**
   * The runtime acknowledged `generate`. A stream the client ended before (cancelled, timed
   * out) still runs there, so it is cancelled now; one the runtime already ended is not.
   */
  acknowledge(): void {
    if (this.acknowledged) return;
    this.acknowledged = true;
    if (this.stopOnRuntime) this.control.cancel(this.streamId);
  }

  pushChunk(chunk: StreamChunk): void {
    if (this.ended) return;
    this.tokensReceived += 1;
    this.firstTokenAt ??= performance.now();
    const token: TokenChunk | ReasoningChunk = chunk.reasoning
      ? { type: 'reasoning', streamId: this.streamId, text: chunk.token, tokenId: chunk.token_id }
      : { type: 'token', streamId: this.streamId, text: chunk.token, tokenId: chunk.token_id };
    if (chunk.logprob !== undefined) token.logprob = chunk.logprob;
    if (chunk.top_logprobs !== undefined) token.topLogprobs = chunk.top_logprobs;
    if (chunk.cumulative_text !== undefined && token.type === 'token') token.cumulativeText = chunk.cumulative_text;
    this.deliver(token);
  }

  pushToolCall(call: StreamToolCall): void {
    if (this.ended) return;
    const { index, id, name } = call;
    this.deliver({ type: 'tool_call', streamId: this.streamId, index, id, name, arguments: call.arguments });
  }

  pushStats(stats: StreamStats): void {
    if (!this.ended) this.stats = stats;
  }

  /** The final `completed` event; returns the stats chunk it produced (null if it failed). */
  complete(event: StreamCompleted): StatsChunk | null {
    if (this.ended) return null;
    if (!this.stats) {
      this.fail(new ProtocolError(`stream ${this.streamId} ended without stream.stats`, { frame: event }));
      return null;
    }
    const chunk: StatsChunk = { type: 'stats', streamId: this.streamId, finishReason: event.finish_reason, stats: this.stats };
    this.finish(chunk);
    return chunk;
  }

  /** `cancelOnRuntime`: the client gives up on a stream the runtime may still run. */
  fail(error: unknown, options: { cancelOnRuntime?: boolean } = {}): void {
    if (this.ended) return;
    this.failure = { error };
    this.end();
    if (options.cancelOnRuntime) this.stopRuntimeStream();
  }

  /** Called once when the stream ends, however it ends: with its stats chunk, if it has one. */
  onEnd(listener: (final: StatsChunk | undefined) => void): void {
    if (this.ended) listener(this.final);
    else this.endListeners.push(listener);
  }

  // -- internals -------------------------------------------------------------------------

  private stopRuntimeStream(): void {
    this.stopOnRuntime = true;
    if (this.acknowledged) this.control.cancel(this.streamId);
  }

  private finish(chunk: StatsChunk): void {
    this.final = chunk;
    this.deliver(chunk);
    this.end();
  }

  private deliver(chunk: GenerationChunk): void {
    if (this.drained) return;
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve({ done: false, value: chunk });
    } else if (this.isBehind() && chunk.type !== 'stats') {
      // The final chunk does not count: the stream ends with it and grows no further.
      this.fail(new SlowConsumerError(this.streamId, this.maxUnreadChunks), { cancelOnRuntime: true });
    } else {
      this.queue.push(chunk);
    }
  }

  private isBehind(): boolean {
    return this.maxUnreadChunks > 0 && this.queue.length >= this.maxUnreadChunks;
  }

  private end(): void {
    this.ended = true;
    // As in an async generator: the first waiting next() gets the error, the rest the end.
    for (const waiter of this.waiters.splice(0)) {
      const failure = this.takeFailure();
      if (failure) waiter.reject(failure.error);
      else waiter.resolve(DONE);
    }
    for (const listener of this.endListeners.splice(0)) listener(this.final);
  }

  /** The error to throw, once; none after the consumer stopped listening. */
  private takeFailure(): { error: unknown } | undefined {
    const failure = this.drained ? undefined : this.failure;
    this.failure = undefined;
    return failure;
  }

  private next(): Promise<IteratorResult<GenerationChunk>> {
    const chunk = this.queue.shift();
    if (chunk) return Promise.resolve({ done: false, value: chunk });
    if (this.ended || this.drained) {
      const failure = this.takeFailure();
      return failure ? Promise.reject(failure.error) : Promise.resolve(DONE);
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  /** What the client saw of a stream it ends before the runtime's stats came. */
  private clientStats(): StreamStats {
    const now = performance.now();
    const first = this.firstTokenAt;
    const decodeSeconds = first === undefined ? 0 : (now - first) / 1000;
    return {
      stream_id: this.streamId,
      tokens_generated: this.tokensReceived,
      prompt_tokens: 0,
      time_to_first_token: first === undefined ? 0 : (first - this.createdAt) / 1000,
      total_time: (now - this.createdAt) / 1000,
      // Over the time after the first token, as the runtime counts it.
      tokens_per_second: decodeSeconds > 0 ? (this.tokensReceived - 1) / decodeSeconds : 0,
    };
  }
}

export interface GenerationResult {
  streamId: string;
  /** The answer, without reasoning sent apart (`reasoning: "separate"`) or tool calls. */
  text: string;
  /** Every token's id, reasoning included. */
  tokenIds: number[];
  /** The reasoning sent apart; empty when none was. */
  reasoning: string;
  toolCalls: ToolCallChunk[];
  finishReason: FinishReason;
  stats: StreamStats;
}

/** Runs a generation to its end: its whole text, token ids, reasoning and tool calls. */
export async function collect(generation: Generation): Promise<GenerationResult> {
  let text = '';
  let reasoning = '';
  const tokenIds: number[] = [];
  const toolCalls: ToolCallChunk[] = [];
  let end: StatsChunk | undefined;
  for await (const chunk of generation) {
    if (chunk.type === 'token') {
      text += chunk.text;
      tokenIds.push(chunk.tokenId);
    } else if (chunk.type === 'reasoning') {
      reasoning += chunk.text;
      tokenIds.push(chunk.tokenId);
    } else if (chunk.type === 'tool_call') {
      toolCalls.push(chunk);
    } else {
      end = chunk;
    }
  }
  if (!end) throw new ProtocolError(`stream ${generation.streamId} ended without its stats`);
  const { streamId } = generation;
  return { streamId, text, tokenIds, reasoning, toolCalls, finishReason: end.finishReason, stats: end.stats };
}
