/**
 * Vision end to end against the real Python runtime (it needs the `vision` extra) and a
 * generated tiny qwen2_vl: loadVisionModel, createVisionGenerator, images inside
 * createGenerator messages, image errors, abort, and a text stream beside a vision one.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { deflateSync } from 'node:zlib';

import {
  imageDataUri,
  imagePart,
  InvalidParamsError,
  runtimeProcessSpec,
  type Engine,
  type GenerationChunk,
  type GenerationResult,
  type StatsChunk,
  type TokenChunk,
  type VisionGeneratorParams,
} from '../src/index.js';
import { eventually, makeModel, startEngine, tempDir } from './support/runtime.js';

const VISION = 'vlm';
const TEXT = 'tiny';
const PROMPT = 'Describe the image.';

/** The runtime's own maker of the tiny qwen2_vl test model (~1 s). */
async function makeVisionModel(): Promise<string> {
  const dir = join(tempDir(), 'qwen2_vl');
  const spec = runtimeProcessSpec();
  await new Promise<void>((resolve, reject) => {
    const args = ['-m', 'mlx_serving.testing.make_vision_model', dir];
    const child = spawn(spec.command, args, { env: spec.env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`make_vision_model exited with ${code}:\n${stderr}`))));
  });
  return dir;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(data: Buffer): number {
  let c = 0xffffffff;
  for (const byte of data) c = CRC_TABLE[(c ^ byte) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** A size x size RGB PNG whose pixels `colour(x, y)` gives. */
function png(size: number, colour: (x: number, y: number) => [number, number, number]): Uint8Array {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header.set([8, 2, 0, 0, 0], 8); // 8-bit RGB, no interlace
  const rows = Buffer.alloc(size * (1 + size * 3));
  for (let y = 0; y < size; y++) {
    const row = y * (1 + size * 3); // filter byte 0, then the pixels
    for (let x = 0; x < size; x++) rows.set(colour(x, y), row + 1 + x * 3);
  }
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0))]);
}

const CHECKERS = png(64, (x, y) => ((x >> 3) + (y >> 3)) % 2 ? [250, 250, 250] : [10, 40, 200]);
const RED = png(64, () => [200, 30, 30]);

async function collect(generation: AsyncIterable<GenerationChunk>): Promise<{ tokens: TokenChunk[]; end: StatsChunk }> {
  const chunks: GenerationChunk[] = [];
  for await (const chunk of generation) chunks.push(chunk);
  const end = chunks.at(-1) as StatsChunk;
  assert.equal(end.type, 'stats');
  return { tokens: chunks.filter((c): c is TokenChunk => c.type === 'token'), end };
}

/** The generated ids: a last chunk may resend the last id with the text's tail. */
function generatedIds(run: { tokens: TokenChunk[]; end: StatsChunk }): number[] {
  return run.tokens.map((t) => t.tokenId).slice(0, run.end.stats.tokens_generated);
}

describe('vision against the Python runtime', () => {
  let engine: Engine;

  before(async () => {
    const [visionDir, textDir, started] = await Promise.all([makeVisionModel(), makeModel(), startEngine()]);
    engine = started;
    const loaded = await engine.loadVisionModel({ model_id: VISION, local_path: visionDir });
    assert.equal(loaded.is_vision_model, true);
    assert.equal(loaded.processor_type, 'Qwen2VLProcessor');
    await engine.loadModel({ model_id: TEXT, local_path: textDir });
  });
  after(() => engine.dispose());

  test('the runtime advertises the vision methods and reports the model as vision', async () => {
    assert.ok(engine.info?.capabilities.includes('load_vision_model'));
    assert.ok(engine.info?.capabilities.includes('generate_with_image'));
    const state = await engine.runtimeState();
    const types = Object.fromEntries(state.loaded_models.map((m) => [m.model_id, m.type]));
    assert.deepEqual(types, { [VISION]: 'vision', [TEXT]: 'text' });
    assert.deepEqual(engine.loadedModels, [VISION, TEXT]);
  });

  test('createVisionGenerator streams tokens then stats; the image decides the tokens', async () => {
    const params = (image: Uint8Array): VisionGeneratorParams => ({
      model_id: VISION,
      prompt: PROMPT,
      image: imageDataUri(image),
      max_tokens: 16,
      temperature: 0,
    });
    const checkers = await collect(engine.createVisionGenerator(params(CHECKERS)));
    assert.equal(checkers.end.finishReason, 'length');
    assert.equal(checkers.end.stats.tokens_generated, 16);
    assert.ok(checkers.end.stats.prompt_tokens > 4);
    const again = await collect(engine.createVisionGenerator(params(CHECKERS)));
    assert.deepEqual(generatedIds(again), generatedIds(checkers));
    const red = await collect(engine.createVisionGenerator(params(RED)));
    assert.notDeepEqual(generatedIds(red), generatedIds(checkers));
    // Two images in one request: more prompt tokens than one.
    const both = await collect(
      engine.createVisionGenerator({ ...params(CHECKERS), images: [imageDataUri(RED)], max_tokens: 2 }),
    );
    assert.ok(both.end.stats.prompt_tokens > checkers.end.stats.prompt_tokens);
  });

  test('an image part in createGenerator messages is the same request as prompt + image', async () => {
    const viaMessages: GenerationResult = await engine.generate({
      model_id: VISION,
      messages: [{ role: 'user', content: [{ type: 'text', text: PROMPT }, imagePart(CHECKERS)] }],
      max_tokens: 12,
      temperature: 0,
    });
    const viaImage = await collect(
      engine.createVisionGenerator({ model_id: VISION, prompt: PROMPT, image: imageDataUri(CHECKERS), max_tokens: 12, temperature: 0 }),
    );
    assert.deepEqual(viaMessages.tokenIds.slice(0, viaMessages.stats.tokens_generated), generatedIds(viaImage));
  });

  test('a bad image fails the stream with InvalidParamsError naming the field', async () => {
    const truncated = imageDataUri(CHECKERS).slice(0, -3);
    await assert.rejects(
      collect(engine.createVisionGenerator({ model_id: VISION, prompt: PROMPT, image: truncated })),
      (error: unknown) => error instanceof InvalidParamsError && error.field === 'image' && error.source === 'runtime',
    );
    const notAnImage = imagePart(new TextEncoder().encode('not an image'));
    await assert.rejects(
      collect(engine.createGenerator({ model_id: VISION, messages: [{ role: 'user', content: [notAnImage] }] })),
      (error: unknown) => error instanceof InvalidParamsError && error.field === 'messages[0].content[0].image',
    );
    // The client checks types before sending.
    await assert.rejects(
      collect(engine.createVisionGenerator({ model_id: VISION, prompt: PROMPT, images: 'x' as unknown as string[] })),
      (error: unknown) => error instanceof InvalidParamsError && error.source === 'client',
    );
  });

  test('abort cancels a vision stream while a text stream of another model completes', async () => {
    const controller = new AbortController();
    const long = engine.createVisionGenerator(
      { model_id: VISION, prompt: PROMPT, image: imageDataUri(RED), max_tokens: 3000, temperature: 0.9 },
      { signal: controller.signal },
    );
    const text = engine.generate({ model_id: TEXT, prompt: 'Be brief.', max_tokens: 16, temperature: 0 });
    let seen = 0;
    const ended = (async () => {
      for await (const chunk of long) {
        if (chunk.type === 'token' && ++seen === 3) controller.abort();
        if (chunk.type === 'stats') return chunk;
      }
      return undefined;
    })();
    const [stats, short] = await Promise.all([ended, text]);
    assert.equal(stats?.finishReason, 'cancelled');
    assert.ok(stats!.stats.tokens_generated < 3000);
    assert.equal(short.finishReason, 'length');
    // The abort ended the iteration at once; the runtime ends the stream when its cancel lands.
    await eventually(async () => (await engine.runtimeState()).active_streams === 0, 5_000, 'the stream to end');
  });
});
