/** LineSplitter: lines across chunk boundaries, multi-byte characters, the size cap. */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LineSplitter } from '../src/transport.js';

function split(chunks: Buffer[], maxBytes = 1024): Array<string | { oversize: number; head: string }> {
  const out: Array<string | { oversize: number; head: string }> = [];
  const splitter = new LineSplitter(
    maxBytes,
    (line) => out.push(line.toString('utf8')),
    (size, head) => out.push({ oversize: size, head: head.toString('utf8') }),
  );
  for (const chunk of chunks) splitter.push(chunk);
  splitter.end();
  return out;
}

test('lines split across chunks, several per chunk, and a last line without newline', () => {
  assert.deepEqual(split([Buffer.from('{"a"'), Buffer.from(':1}\n{"b":2}\n{"c"'), Buffer.from(':3}')]), [
    '{"a":1}',
    '{"b":2}',
    '{"c":3}',
  ]);
});

test('a multi-byte character split between chunks is decoded whole', () => {
  const bytes = Buffer.from('"é漢"\n');
  const chunks = [...bytes].map((b) => Buffer.from([b]));
  assert.deepEqual(split(chunks), ['"é漢"']);
});

test('a line over the cap is skipped to its newline and reported with its head', () => {
  const long = '{"jsonrpc":"2.0","id":7,"result":"' + 'x'.repeat(100) + '"}';
  const out = split([Buffer.from('short\n' + long.slice(0, 30)), Buffer.from(long.slice(30) + '\nafter\n')], 64);
  assert.equal(out[0], 'short');
  const oversize = out[1] as { oversize: number; head: string };
  assert.equal(oversize.oversize, Buffer.byteLength(long));
  assert.ok(oversize.head.startsWith('{"jsonrpc":"2.0","id":7,'));
  assert.equal(out[2], 'after');
  assert.equal(out.length, 3);
});
