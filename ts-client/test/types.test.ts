/**
 * src/types/ is what gen:types makes of protocol/schemas today, the validators compile, and
 * the params types refuse what the runtime refuses (checked by tsc, which `npm test` runs).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { generateTypeFiles, typesDir } from '../scripts/gen-types.js';
import type { Engine } from '../src/index.js';
import { METHOD_SCHEMA_KEYS, NOTIFICATION_METHODS, type MethodName } from '../src/types/index.js';
import { ProtocolValidator } from '../src/validation.js';

test('generated types match protocol/schemas (run `npm run gen:types` after a schema change)', async () => {
  const generated = await generateTypeFiles();
  const committed = readdirSync(typesDir()).sort();
  assert.deepEqual(committed, [...generated.keys()].sort(), 'files in src/types/');
  for (const [name, text] of generated) {
    const onDisk = readFileSync(join(typesDir(), name), 'utf8');
    assert.ok(onDisk === text, `src/types/${name} differs from protocol/schemas: run \`npm run gen:types\``);
  }
});

test('every method and notification has a validator', () => {
  const validator = new ProtocolValidator();
  for (const method of Object.keys(METHOD_SCHEMA_KEYS) as MethodName[]) {
    assert.ok(Array.isArray(validator.params(method, {})), method);
    assert.ok(Array.isArray(validator.result(method, {})), method);
  }
  for (const method of NOTIFICATION_METHODS) assert.ok(Array.isArray(validator.notification(method, {})), method);
  assert.equal(validator.notification('no.such.notification', {}), null);
});

test('validation issues carry dotted field paths', () => {
  const validator = new ProtocolValidator();
  const issues = validator.params('generate', { model_id: 'm', max_tokens: 0, stop_sequences: ['ok', ''] });
  const paths = issues.map((i) => i.path);
  assert.ok(paths.includes('max_tokens'), JSON.stringify(issues));
  assert.ok(paths.includes('stop_sequences[1]'), JSON.stringify(issues));
  assert.deepEqual(
    validator.params('tokenize', { text: 'x' }).map((i) => [i.path, i.code]),
    [['model_id', 'required']],
  );
});

test('compat finish reasons pass; unknown ones do not', () => {
  const validator = new ProtocolValidator();
  const event = (finish_reason: string) => ({ stream_id: 's', event: 'completed', finish_reason });
  for (const reason of ['stop', 'length', 'cancelled', 'completed', 'no_output']) {
    assert.deepEqual(validator.notification('stream.event', event(reason)), [], reason);
  }
  assert.notDeepEqual(validator.notification('stream.event', event('exploded')), []);
});

/**
 * Never run: tsc checks it. Each @ts-expect-error must meet an error, else tsc fails the
 * build with "Unused '@ts-expect-error' directive".
 */
function generatorParamsNeedOnePromptForm(engine: Engine): void {
  // @ts-expect-error no prompt at all
  engine.createGenerator({ model_id: 'm' });
  // @ts-expect-error both prompt and messages
  engine.createGenerator({ model_id: 'm', prompt: 'x', messages: [{ role: 'user', content: 'x' }] });
  // @ts-expect-error both prompt and prompt_tokens
  engine.createGenerator({ model_id: 'm', prompt: 'x', prompt_tokens: [1] });
  // @ts-expect-error a role the protocol does not have
  engine.createGenerator({ model_id: 'm', messages: [{ role: 'robot', content: 'x' }] });
  // @ts-expect-error the vision generator needs a prompt as well
  engine.createVisionGenerator({ model_id: 'm', image: 'x' });
  // Each form alone, and compat's empty prompt beside prompt_tokens.
  engine.createGenerator({ model_id: 'm', prompt: 'x' });
  engine.createGenerator({ model_id: 'm', prompt_tokens: [1, 2] });
  engine.createGenerator({ model_id: 'm', prompt: '', prompt_tokens: [1, 2] });
  engine.createGenerator({ model_id: 'm', messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'x' }] });
  engine.createVisionGenerator({ model_id: 'm', prompt: 'x', image: 'x' });
}

test('generator params need exactly one prompt form and a known role (a tsc check)', () => {
  assert.equal(typeof generatorParamsNeedOnePromptForm, 'function');
});

test('an unknown message role breaks the generate schema, at messages[i].role', () => {
  const validator = new ProtocolValidator();
  const issues = validator.params('generate', { model_id: 'm', messages: [{ role: 'robot', content: 'x' }] });
  assert.equal(issues[0]?.path, 'messages[0].role', JSON.stringify(issues));
  for (const role of ['system', 'developer', 'user', 'assistant', 'tool']) {
    assert.deepEqual(validator.params('generate', { model_id: 'm', messages: [{ role, content: 'x' }] }), [], role);
  }
});
