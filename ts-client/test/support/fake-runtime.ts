/**
 * A stand-in runtime that speaks just enough of the protocol to pass the readiness probe,
 * then misbehaves on cue, for the tests of the client's error paths. The request's text or
 * prompt picks the misbehaviour; FAKE_RUNTIME_MODE changes the process as a whole.
 *
 * Modes: "normal"; "bad-info" (runtime/info lacks fields); "crash-after-ready" (exits 1
 * shortly after answering runtime/info); "ignore-shutdown" (never exits on shutdown).
 * FAKE_MAX_FRAME_BYTES sets the frame limit it reports and enforces as the runtime does.
 */
import { createInterface } from 'node:readline';

const mode = process.env['FAKE_RUNTIME_MODE'] ?? 'normal';
const maxFrameBytes = Number(process.env['FAKE_MAX_FRAME_BYTES'] ?? 1 << 24);

type Frame = { id?: unknown; method?: string; params?: Record<string, unknown> };

function send(frame: unknown): void {
  process.stdout.write(JSON.stringify(frame) + '\n');
}

function result(id: unknown, value: unknown): void {
  send({ jsonrpc: '2.0', id, result: value });
}

function notify(method: string, params: unknown): void {
  send({ jsonrpc: '2.0', method, params });
}

const info = {
  version: '0.0.0-fake',
  mlx_version: '0',
  mlx_lm_version: '0',
  protocol: 'json-rpc-2.0',
  capabilities: ['generate', 'cancel', 'tokenize'],
  mlx_supported: false,
  memory: { rss: 1, vms: 1 },
  backend: 'cpu',
  native: {},
  native_notes: {},
  limits: {
    max_frame_bytes: maxFrameBytes,
    max_output_line_bytes: 1 << 24,
    max_tokens: 4096,
    max_temperature: 2,
    max_prompt_bytes: 1 << 20,
    max_active_streams: 8,
  },
  prompt_cache: { directory: null, max_disk_bytes: 0, persisted_models: [], not_persisted: {} },
  config: {
    environment: null,
    json_rpc: { max_frame_bytes: 1 << 24, max_active_streams: 8 },
    security: { allowed_model_roots: [], allow_trust_remote_code: false },
  },
};

function stats(streamId: string, tokens: number): Record<string, unknown> {
  return {
    stream_id: streamId,
    tokens_generated: tokens,
    tokens_per_second: 100,
    time_to_first_token: 0.01,
    total_time: 0.05,
    prompt_tokens: 1,
  };
}

function chunk(streamId: string, token: string, tokenId: number): Record<string, unknown> {
  return { stream_id: streamId, token, token_id: tokenId };
}

/** Streams (by prompt) that only end when cancelled. */
const open = new Set<string>();
/** `generate` requests received, reported by tokenize of 'count:generate'. */
let generateCount = 0;

function generate(id: unknown, params: Record<string, unknown>): void {
  generateCount += 1;
  const streamId = String(params['stream_id']);
  const prompt = String(params['prompt'] ?? '');
  result(id, { stream_id: streamId, started_at: Date.now() / 1000 });
  switch (prompt) {
    case 'batch':
      // The batched form, then a compat finish reason.
      notify('stream.chunk', chunk(streamId, 'He', 1));
      notify('stream.chunk', {
        stream_id: streamId,
        is_batch: true,
        batch_size: 2,
        tokens: [chunk(streamId, 'll', 2), chunk(streamId, 'o', 3)],
      });
      notify('stream.stats', stats(streamId, 3));
      notify('stream.event', { stream_id: streamId, event: 'completed', finish_reason: 'completed', is_final: true });
      return;
    case 'no-output':
      notify('stream.stats', stats(streamId, 0));
      notify('stream.event', { stream_id: streamId, event: 'completed', finish_reason: 'no_output', is_final: true });
      return;
    case 'bad-chunk':
      notify('stream.chunk', chunk(streamId, 'ok', 1));
      notify('stream.chunk', { stream_id: streamId, token: 'x', token_id: 'not a number' });
      return;
    case 'fail':
      notify('stream.chunk', chunk(streamId, 'partial', 1));
      notify('stream.stats', stats(streamId, 1));
      notify('stream.event', { stream_id: streamId, event: 'error', error: 'generation failed: boom', error_code: -32002, is_final: true });
      return;
    case 'forever':
      notify('stream.chunk', chunk(streamId, 'tick', 1));
      open.add(streamId);
      return;
    case 'flood':
      // 200 chunks at once, then open until cancelled: a consumer that does not read falls behind.
      for (let i = 0; i < 200; i += 1) notify('stream.chunk', chunk(streamId, `t${i} `, i));
      open.add(streamId);
      return;
    default:
      notify('stream.chunk', chunk(streamId, 'fine', 1));
      notify('stream.stats', stats(streamId, 1));
      notify('stream.event', { stream_id: streamId, event: 'completed', finish_reason: 'stop', is_final: true });
  }
}

function tokenize(id: unknown, params: Record<string, unknown>): void {
  switch (params['text']) {
    case 'bad-result':
      result(id, { tokens: 'oops', token_strings: [] });
      return;
    case 'not-json':
      process.stdout.write('this is not json\n');
      result(id, { tokens: [1], token_strings: ['a'] });
      return;
    case 'unknown-id':
      result(987654, { tokens: [], token_strings: [] });
      result(id, { tokens: [1], token_strings: ['a'] });
      return;
    case 'huge':
      result(id, { tokens: [1], token_strings: ['x'.repeat(2 * 1024 * 1024)] });
      return;
    case 'no-answer':
      return;
    case 'count:generate':
      result(id, { tokens: [generateCount], token_strings: [] });
      return;
    default:
      result(id, { tokens: [1, 2], token_strings: ['a', 'b'] });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on('line', (line) => {
  const size = Buffer.byteLength(line);
  if (size > maxFrameBytes) {
    // As the runtime answers a line it did not read: no id to answer to.
    send({ jsonrpc: '2.0', id: null, error: { code: -32600, message: `Invalid Request: frame of ${size} bytes exceeds ${maxFrameBytes}` } });
    return;
  }
  const frame = JSON.parse(line) as Frame;
  const params = frame.params ?? {};
  switch (frame.method) {
    case 'runtime/info':
      if (mode === 'bad-info') result(frame.id, { version: 'x' });
      else result(frame.id, info);
      if (mode === 'crash-after-ready') setTimeout(() => process.exit(1), 50);
      return;
    case 'runtime/state':
      result(frame.id, {
        loaded_models: [],
        active_streams: open.size,
        restart_count: 0,
        memory: { budget_bytes: 1 << 30, used_bytes: 0, weights_bytes: 0, kv_reserved_bytes: 0, loading_bytes: 0, streams_waiting: 0 },
      });
      return;
    case 'tokenize':
      tokenize(frame.id, params);
      return;
    case 'generate':
      generate(frame.id, params);
      return;
    case 'cancel': {
      const streamId = String(params['stream_id']);
      const was = open.delete(streamId);
      result(frame.id, { stream_id: streamId, cancelled: was });
      if (was) {
        notify('stream.stats', stats(streamId, 1));
        notify('stream.event', { stream_id: streamId, event: 'completed', finish_reason: 'cancelled', is_final: true });
      }
      return;
    }
    case 'shutdown':
      result(frame.id, { success: true });
      if (mode !== 'ignore-shutdown') setTimeout(() => process.exit(0), 10);
      return;
    default:
      send({ jsonrpc: '2.0', id: frame.id, error: { code: -32601, message: `Method not found: ${frame.method}` } });
  }
});
lines.on('close', () => {
  if (mode !== 'ignore-shutdown') process.exit(0);
});
process.stderr.write('MLX Runtime ready\n');
