/**
 * Structured output end to end: the seeds' `structured: {schema, format}` goes out as
 * `guidance: {mode: 'json_schema', schema}`, and the runtime's constrained decoding makes a
 * random-weight model (which never writes JSON on its own) answer JSON that validates.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Ajv2020Module from 'ajv/dist/2020.js';

import { InvalidParamsError, type Engine } from '../src/index.js';
import { makeModel, startEngine } from './support/runtime.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;
const MODEL = 'tiny';

const PERSON = {
  type: 'object',
  properties: {
    name: { type: 'string', maxLength: 12 },
    age: { type: 'integer', minimum: 0, maximum: 120 },
    role: { enum: ['admin', 'user', 'guest'] },
    tags: { type: 'array', items: { type: 'string', maxLength: 5 }, maxItems: 3 },
  },
  required: ['name', 'age', 'role'],
  additionalProperties: false,
};

describe('structured output against the Python runtime', () => {
  let engine: Engine;

  before(async () => {
    const [modelDir, started] = await Promise.all([makeModel(), startEngine()]);
    engine = started;
    await engine.loadModel({ model_id: MODEL, local_path: modelDir });
  });
  after(() => engine.dispose());

  test('runtime info lists the guidance modes', async () => {
    const info = await engine.runtimeInfo();
    for (const mode of ['json_schema', 'regex', 'grammar']) {
      assert.ok(info.capabilities.includes(`guidance:${mode}`), info.capabilities.join(', '));
    }
  });

  test('structured: {schema, format: "json"} answers JSON that validates, for every seed', async () => {
    const validate = new Ajv2020({ strict: false }).compile(PERSON);
    for (const seed of [1, 2, 3]) {
      const result = await engine.generate({
        model_id: MODEL,
        prompt: 'Describe a person as JSON:',
        max_tokens: 96,
        temperature: 0.9,
        seed,
        structured: { schema: PERSON, format: 'json' },
      });
      assert.equal(result.finishReason, 'stop', result.text);
      assert.equal(result.stats.guidance_valid, true, result.text);
      const value: unknown = JSON.parse(result.text);
      assert.ok(validate(value), `${result.text}: ${JSON.stringify(validate.errors)}`);
    }
  });

  test('streamed chunks of a structured stream concatenate to the JSON', async () => {
    let text = '';
    const generation = engine.createGenerator({
      model_id: MODEL,
      prompt: 'JSON:',
      max_tokens: 96,
      temperature: 0,
      structured: { schema: PERSON },
    });
    for await (const chunk of generation) if (chunk.type === 'token') text += chunk.text;
    assert.ok(new Ajv2020({ strict: false }).validate(PERSON, JSON.parse(text)), text);
  });

  test('the wire guidance field takes regex and grammar modes as they are', async () => {
    const regex = await engine.generate({
      model_id: MODEL,
      prompt: 'x',
      max_tokens: 16,
      temperature: 0,
      guidance: { mode: 'regex', pattern: '[A-Z]{3}-[0-9]{2}' },
    });
    assert.match(regex.text, /^[A-Z]{3}-[0-9]{2}$/);
    const grammar = await engine.generate({
      model_id: MODEL,
      prompt: 'x',
      max_tokens: 16,
      temperature: 0,
      guidance: { mode: 'grammar', grammar: 'start: ("yes" | "no") "!"' },
    });
    assert.match(grammar.text, /^(yes|no)!$/);
  });

  test("an invalid schema is the runtime's -32602 naming the field under guidance.schema", async () => {
    const error = await engine
      .generate({ model_id: MODEL, prompt: 'x', structured: { schema: { type: 'array', minItems: -1 } } })
      .catch((e: unknown) => e);
    assert.ok(error instanceof InvalidParamsError, String(error));
    assert.equal(error.source, 'runtime');
    assert.equal(error.field, 'guidance.schema.minItems');
    const unsupported = await engine
      .generate({ model_id: MODEL, prompt: 'x', structured: { schema: { type: 'array', uniqueItems: true } } })
      .catch((e: unknown) => e);
    assert.ok(unsupported instanceof InvalidParamsError, String(unsupported));
    assert.match(unsupported.message, /uniqueItems/);
  });

  test('structured together with guidance is refused by the client', async () => {
    const error = await engine
      .generate({
        model_id: MODEL,
        prompt: 'x',
        structured: { schema: PERSON },
        guidance: { mode: 'regex', pattern: 'a' },
      })
      .catch((e: unknown) => e);
    assert.ok(error instanceof InvalidParamsError, String(error));
    assert.equal(error.source, 'client');
    assert.equal(error.field, 'structured');
  });
});
