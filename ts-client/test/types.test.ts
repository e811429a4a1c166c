/** src/types/ is what gen:types makes of protocol/schemas today, and the validators compile. */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { generateTypeFiles, typesDir } from '../scripts/gen-types.js';
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

test('an unknown message role breaks the generate schema, at messages[i].role', () => {
  const validator = new ProtocolValidator();
  const issues = validator.params('generate', { model_id: 'm', messages: [{ role: 'robot', content: 'x' }] });
  assert.equal(issues[0]?.path, 'messages[0].role', JSON.stringify(issues));
  for (const role of ['system', 'developer', 'user', 'assistant', 'tool']) {
    assert.deepEqual(validator.params('generate', { model_id: 'm', messages: [{ role, content: 'x' }] }), [], role);
  }
});
