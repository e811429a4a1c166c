/**
 * engine.metrics() and toPrometheus against the real Python runtime: the exposition text
 * parses, every family has HELP and TYPE, histograms are cumulative and end in +Inf, and the
 * figures agree with the streams that ran. Also the runtime's events and load progress.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  toPrometheus,
  type Engine,
  type GenerationResult,
  type RuntimeEvent,
  type RuntimeMetrics,
  type RuntimeProgress,
} from '../src/index.js';
import { eventually, makeModel, startEngine } from './support/runtime.js';

const MODEL = 'tiny';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  help: Map<string, string>;
  type: Map<string, string>;
  samples: Sample[];
}

/** A strict reader of text format 0.0.4: anything it does not recognise fails the test. */
function parseExposition(text: string): Exposition {
  const result: Exposition = { help: new Map(), type: new Map(), samples: [] };
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const [, kind, name, rest] = meta as unknown as [string, string, string, string];
      const map = kind === 'HELP' ? result.help : result.type;
      assert.ok(!map.has(name), `second ${kind} for ${name}`);
      map.set(name, rest);
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(sample, `not a sample line: ${line}`);
    const [, name, body, raw] = sample as unknown as [string, string, string | undefined, string];
    const labels: Record<string, string> = {};
    if (body) {
      const pair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
      let consumed = 0;
      for (let m = pair.exec(body); m; m = pair.exec(body)) {
        labels[m[1]!] = m[2]!.replace(/\\n/g, '\n').replace(/\\(["\\])/g, '$1');
        consumed = pair.lastIndex;
      }
      assert.equal(consumed, body.length, `bad labels: ${body}`);
    }
    const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw);
    assert.ok(!Number.isNaN(value) || raw === 'NaN', `bad value: ${raw}`);
    result.samples.push({ name, labels, value });
  }
  return result;
}

function familyOf(name: string, types: Map<string, string>): string {
  if (types.has(name)) return name;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  assert.equal(types.get(base), 'histogram', `sample ${name} belongs to no family`);
  return base;
}

describe('runtime/metrics as Prometheus text', () => {
  let engine: Engine;
  const runtimeEvents: RuntimeEvent[] = [];
  const progress: RuntimeProgress[] = [];
  const runs: GenerationResult[] = [];
  let progressAtLoad = 0;

  before(async () => {
    const [modelDir, started] = await Promise.all([makeModel(), startEngine()]);
    engine = started;
    engine.on('runtimeEvent', (event) => runtimeEvents.push(event));
    engine.on('progress', (p) => progress.push(p));
    await engine.loadModel({ model_id: MODEL, local_path: modelDir });
    progressAtLoad = progress.length;
    for (const [prompt, maxTokens] of [
      ['Hello', 6],
      ['The sea is calm tonight', 10],
    ] as const) {
      runs.push(await engine.generate({ model_id: MODEL, prompt, max_tokens: maxTokens, temperature: 0 }));
    }
  });
  after(() => engine.dispose());

  test('load progress arrives before loadModel resolves', () => {
    const stages = progress.slice(0, progressAtLoad).map((p) => [p.task, p.stage, p.done, p.total]);
    assert.deepEqual(stages, [
      ['load', 'resolving', 0, 2],
      ['load', 'loading_weights', 1, 2],
      ['load', 'ready', 2, 2],
    ]);
  });

  test('events: model loaded, then each generation started and completed', async () => {
    await eventually(() => runtimeEvents.length >= 5, 5_000, 'events');
    assert.deepEqual(
      runtimeEvents.map((e) => e.event),
      ['model_loaded', 'generation_started', 'generation_completed', 'generation_started', 'generation_completed'],
    );
    const completed = runtimeEvents.filter((e) => e.event === 'generation_completed');
    assert.deepEqual(
      completed.map((e) => [e.stream_id, e.tokens_generated]),
      runs.map((r) => [r.streamId, r.stats.tokens_generated]),
    );
  });

  test('the exposition parses and agrees with the streams', async () => {
    const metrics: RuntimeMetrics = await engine.metrics();
    const text = toPrometheus(metrics, { labels: { instance: 'test' } });
    const { help, type, samples } = parseExposition(text);

    for (const [name, kind] of type) {
      assert.ok(help.has(name), `${name} has no HELP`);
      assert.ok(['counter', 'gauge', 'histogram'].includes(kind), `${name}: ${kind}`);
      if (kind === 'counter') assert.ok(name.endsWith('_total'), name);
    }
    for (const s of samples) {
      familyOf(s.name, type);
      assert.equal(s.labels['instance'], 'test');
    }
    const one = (name: string, labels: Record<string, string> = {}) => {
      const found = samples.filter(
        (s) => s.name === name && Object.entries({ instance: 'test', ...labels }).every(([k, v]) => s.labels[k] === v),
      );
      assert.equal(found.length, 1, `${name} ${JSON.stringify(labels)}`);
      return found[0]!.value;
    };
    const sum = (pick: (r: GenerationResult) => number) => runs.reduce((total, r) => total + pick(r), 0);

    assert.equal(one('mlx_serving_generated_tokens_total'), sum((r) => r.stats.tokens_generated));
    assert.equal(one('mlx_serving_prompt_tokens_total'), sum((r) => r.stats.prompt_tokens));
    assert.equal(one('mlx_serving_streams_started_total'), runs.length);
    assert.equal(one('mlx_serving_streams_completed_total', { finish_reason: 'length' }), runs.length);
    assert.equal(one('mlx_serving_requests_total', { method: 'generate', outcome: 'ok' }), runs.length);
    assert.equal(one('mlx_serving_loaded_models'), 1);
    assert.equal(one('mlx_serving_time_to_first_token_seconds_count'), runs.length);
    assert.equal(one('mlx_serving_inter_token_latency_seconds_count'), sum((r) => r.tokenIds.length - 1));
    const ttftSum = one('mlx_serving_time_to_first_token_seconds_sum');
    assert.ok(Math.abs(ttftSum - sum((r) => r.stats.time_to_first_token)) < 1e-9);

    // Every histogram series: cumulative, increasing bounds, +Inf last and equal to _count.
    const series = new Map<string, Sample[]>();
    for (const s of samples.filter((x) => x.name.endsWith('_bucket'))) {
      const { le, ...rest } = s.labels;
      assert.ok(le !== undefined, `${s.name} without le`);
      const key = `${s.name}${JSON.stringify(rest)}`;
      series.set(key, [...(series.get(key) ?? []), s]);
    }
    assert.ok(series.size >= 5);
    for (const [key, buckets] of series) {
      const bounds = buckets.map((b) => (b.labels['le'] === '+Inf' ? Infinity : Number(b.labels['le'])));
      assert.equal(buckets.at(-1)!.labels['le'], '+Inf', key);
      for (let i = 1; i < buckets.length; i++) {
        assert.ok(bounds[i]! > bounds[i - 1]!, `${key}: bounds increase`);
        assert.ok(buckets[i]!.value >= buckets[i - 1]!.value, `${key}: cumulative`);
      }
      const name = buckets[0]!.name.replace(/_bucket$/, '');
      const { le: _le, ...labels } = buckets[0]!.labels;
      const count = samples.find((s) => s.name === `${name}_count` && JSON.stringify(s.labels) === JSON.stringify(labels));
      assert.equal(buckets.at(-1)!.value, count?.value, `${key}: +Inf bucket equals _count`);
    }
  });

  test('label values and help text are escaped', () => {
    const text = toPrometheus({
      counters: [
        {
          name: 'x_total',
          help: 'a \\ b\nc',
          samples: [{ labels: { path: 'C:\\dir "q"\nz' }, value: 3 }],
        },
      ],
      gauges: [],
      histograms: [],
      collector: 'python',
    });
    assert.equal(text, '# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{path="C:\\\\dir \\"q\\"\\nz"} 3\n');
    assert.deepEqual(parseExposition(text).samples[0]!.labels, { path: 'C:\\dir "q"\nz' });
  });
});
