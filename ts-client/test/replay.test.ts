/**
 * The contract harness: replays protocol/fixtures/*.jsonl against the real Python runtime,
 * with the matching rules of tests/protocol/replay.py (the Python suite replays the same
 * files). Placeholders: <int>, <number>, <string>, <bool>, <any>; `$MODEL_DIR` in a sent
 * frame is a model generated for the run. One difference: JSON.parse cannot tell 1.0 from
 * 1, so <int> accepts a float with an integral value where Python would not.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';

import { ClientLogger } from '../src/logger.js';
import { runtimeProcessSpec } from '../src/launch.js';
import { packageRoot } from '../src/paths.js';
import { RuntimeProcess } from '../src/transport.js';
import { makeModel, testLogger } from './support/runtime.js';

const FIXTURES = resolve(packageRoot(), '..', 'protocol', 'fixtures');

const PLACEHOLDERS: Record<string, (v: unknown) => boolean> = {
  '<any>': () => true,
  '<int>': (v) => typeof v === 'number' && Number.isInteger(v),
  '<number>': (v) => typeof v === 'number',
  '<string>': (v) => typeof v === 'string',
  '<bool>': (v) => typeof v === 'boolean',
};

export function matches(expected: unknown, actual: unknown): boolean {
  if (typeof expected === 'string' && expected in PLACEHOLDERS) return PLACEHOLDERS[expected]!(actual);
  if (Array.isArray(expected)) {
    // A batch answer may list its entries in any order.
    if (!Array.isArray(actual) || expected.length !== actual.length) return false;
    const remaining = [...actual];
    for (const item of expected) {
      const hit = remaining.findIndex((a) => matches(item, a));
      if (hit < 0) return false;
      remaining.splice(hit, 1);
    }
    return true;
  }
  if (typeof expected === 'object' && expected !== null) {
    if (typeof actual !== 'object' || actual === null || Array.isArray(actual)) return false;
    const e = expected as Record<string, unknown>;
    const a = actual as Record<string, unknown>;
    const keys = Object.keys(e);
    return (
      keys.length === Object.keys(a).length &&
      keys.every((k) => k in a) &&
      keys.every((k) => matches(e[k], a[k]))
    );
  }
  return expected === actual;
}

function substitute(value: unknown, variables: Record<string, string>): unknown {
  let text = JSON.stringify(value);
  for (const [name, replacement] of Object.entries(variables)) {
    // Replaced inside JSON text, so the replacement is escaped as a JSON string body.
    text = text.split(name).join(JSON.stringify(replacement).slice(1, -1));
  }
  return JSON.parse(text);
}

interface Step {
  send: unknown;
  expect: unknown[];
}

/** A runtime process with every stdout line kept, like the Python RuntimeClient. */
class RawRuntime {
  readonly lines: string[] = [];
  readonly process: RuntimeProcess;

  constructor() {
    this.process = new RuntimeProcess(runtimeProcessSpec(), new ClientLogger(testLogger()));
    this.process.on('line', (line) => this.lines.push(line));
  }

  send(line: string): void {
    assert.ok(this.process.write(line), 'runtime process is gone');
  }

  async waitFor(predicate: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      if (this.process.hasExited) assert.fail(`runtime exited while ${what()}\n${this.process.stderrTail().join('\n')}`);
      if (Date.now() > deadline) assert.fail(`timed out: ${what()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async close(): Promise<void> {
    this.process.kill('SIGTERM');
    await this.process.exited;
  }
}

async function replay(runtime: RawRuntime, name: string, variables: Record<string, string>, timeoutMs = 30_000): Promise<number> {
  const steps = readFileSync(join(FIXTURES, name), 'utf8')
    .split('\n')
    .filter((line) => line.trim())
    .map((line) => JSON.parse(line) as Step);
  for (const [number, step] of steps.entries()) {
    const sent = substitute(step.send, variables);
    const start = runtime.lines.length;
    runtime.send(typeof sent === 'string' ? sent : JSON.stringify(sent));
    // A probe after every step proves that nothing beyond `expect` came back.
    const probeId = `probe-${number}`;
    runtime.send(JSON.stringify({ jsonrpc: '2.0', method: 'runtime/state', id: probeId }));
    const expected = [...step.expect];
    const isProbe = (f: unknown) => typeof f === 'object' && f !== null && (f as { id?: unknown }).id === probeId;
    let frames: unknown[] = [];
    await runtime.waitFor(
      () => {
        frames = runtime.lines.slice(start).map((l) => JSON.parse(l) as unknown);
        return frames.some(isProbe) && frames.length >= expected.length + 1;
      },
      timeoutMs,
      () => `step ${number} of ${name}: got ${JSON.stringify(frames)}`,
    );
    for (const frame of frames.filter((f) => !isProbe(f))) {
      const hit = expected.findIndex((e) => matches(e, frame));
      assert.ok(hit >= 0, `step ${number} of ${name}: unexpected ${JSON.stringify(frame)}; wanted ${JSON.stringify(expected)}`);
      expected.splice(hit, 1);
    }
    assert.deepEqual(expected, [], `step ${number} of ${name}: missing frames`);
  }
  return steps.length;
}

describe('protocol/fixtures transcripts against the Python runtime', () => {
  let modelDir: string;
  before(async () => {
    modelDir = await makeModel();
  });

  const fixtures = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.jsonl'))
    .sort();
  assert.ok(fixtures.length >= 2, `no transcripts in ${FIXTURES}`);

  for (const name of fixtures) {
    describe(name, () => {
      let runtime: RawRuntime;
      before(async () => {
        runtime = new RawRuntime();
        // Readiness: an answer to runtime/info, before the transcript's first step.
        runtime.send(JSON.stringify({ jsonrpc: '2.0', method: 'runtime/info', id: 'ready' }));
        await runtime.waitFor(() => runtime.lines.length > 0, 60_000, () => 'waiting for readiness');
        runtime.lines.length = 0;
      });
      after(() => runtime.close());

      test('replays', async () => {
        const steps = await replay(runtime, name, { $MODEL_DIR: modelDir });
        assert.ok(steps >= 5);
      });
    });
  }
});

describe('replay matching rules', () => {
  test('placeholders, key sets and any-order lists', () => {
    assert.ok(matches({ a: '<int>', b: ['<string>', 1] }, { a: 3, b: [1, 'x'] }));
    assert.ok(!matches({ a: '<int>' }, { a: 3.5 }));
    assert.ok(!matches({ a: '<int>' }, { a: 3, extra: 1 }));
    assert.ok(!matches({ a: '<bool>' }, { a: 1 }));
    assert.ok(!matches([1, 1], [1, 2]));
    assert.ok(matches(null, null));
    assert.ok(!matches(null, 0));
  });
});
