/**
 * QueuedLineWriter against a fake pipe that reports backpressure: lines wait while the pipe
 * is full and leave in order on 'drain', and what waits counts toward RpcConnection's
 * maxBufferedBytes.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { test } from 'node:test';

import { RuntimeBackloggedError } from '../src/errors.js';
import { QueuedLineWriter, type ByteSink } from '../src/lines.js';
import { ClientLogger, silentLogger } from '../src/logger.js';
import { RpcConnection } from '../src/rpc.js';
import { protocolValidator } from '../src/validation.js';

/** A pipe with a high-water mark: write() says false once it holds that much. */
class FakePipe extends EventEmitter implements ByteSink {
  /** Everything accepted, as text, in order. */
  accepted = '';
  writableLength = 0;
  writable = true;

  constructor(private readonly highWaterMark: number) {
    super();
  }

  write(chunk: Buffer): boolean {
    this.accepted += chunk.toString('utf8');
    this.writableLength += chunk.length;
    return this.writableLength < this.highWaterMark;
  }

  /** The reader took everything: the buffer empties and 'drain' fires. */
  drain(): void {
    this.writableLength = 0;
    this.emit('drain');
  }

  get lines(): string[] {
    return this.accepted.split('\n').slice(0, -1);
  }
}

test('lines go straight to the pipe while it takes them', () => {
  const pipe = new FakePipe(1000);
  const writer = new QueuedLineWriter(pipe);
  assert.equal(writer.write('one'), true);
  assert.equal(writer.write('twö'), true);
  assert.deepEqual(pipe.lines, ['one', 'twö']);
  assert.equal(writer.bufferedBytes, 4 + 5); // UTF-8 bytes with the newlines
});

test('once the pipe reports full, lines queue and leave in order on drain', () => {
  const pipe = new FakePipe(10);
  const writer = new QueuedLineWriter(pipe);
  writer.write('0123456789'); // 11 bytes: the pipe is now past its mark
  writer.write('a');
  writer.write('é');
  assert.deepEqual(pipe.lines, ['0123456789'], 'nothing more is handed to a full pipe');
  assert.equal(writer.bufferedBytes, 11 + 2 + 3);
  assert.equal(pipe.listenerCount('drain'), 1);
  pipe.drain();
  assert.deepEqual(pipe.lines, ['0123456789', 'a', 'é']);
  assert.equal(writer.bufferedBytes, 5);
  assert.equal(pipe.listenerCount('drain'), 0);
  writer.write('b');
  assert.deepEqual(pipe.lines.at(-1), 'b', 'with the pipe below its mark, lines go straight out again');
});

test('a drain that fills the pipe again leaves the rest queued for the next one', () => {
  const pipe = new FakePipe(4);
  const writer = new QueuedLineWriter(pipe);
  writer.write('full'); // 5 bytes
  for (const line of ['aa', 'bb', 'cc']) writer.write(line);
  pipe.drain(); // 'aa\n' (3) is below 4; 'bb\n' makes 6: full again
  assert.deepEqual(pipe.lines, ['full', 'aa', 'bb']);
  assert.equal(writer.bufferedBytes, 6 + 3);
  assert.equal(pipe.listenerCount('drain'), 1);
  pipe.drain();
  assert.deepEqual(pipe.lines, ['full', 'aa', 'bb', 'cc']);
  assert.equal(writer.bufferedBytes, 3);
});

test('a closed pipe refuses lines', () => {
  const pipe = new FakePipe(10);
  const writer = new QueuedLineWriter(pipe);
  pipe.writable = false;
  assert.equal(writer.write('x'), false);
  assert.equal(pipe.accepted, '');
});

test('queued lines count toward maxBufferedBytes: past it requests fail fast, cancel still queues', async () => {
  const pipe = new FakePipe(64);
  const writer = new QueuedLineWriter(pipe);
  const listener = { listen() {} };
  const rpc = new RpcConnection(listener, writer, protocolValidator(), new ClientLogger(silentLogger), {
    notification() {},
    invalidNotification() {},
    protocolError() {},
  });
  rpc.maxBufferedBytes = 1000;
  const text = 'x'.repeat(200);
  let refused: unknown;
  let sent = 0;
  while (refused === undefined && sent < 100) {
    try {
      // A refusal is a rejected promise from the call itself; an accepted call stays pending.
      await Promise.race([rpc.request('tokenize', { model_id: 'm', text }), Promise.resolve('pending')]);
      sent += 1;
    } catch (error) {
      refused = error;
    }
  }
  assert.ok(refused instanceof RuntimeBackloggedError, String(refused));
  assert.ok(refused.bufferedBytes > 1000 && refused.limitBytes === 1000);
  assert.equal(pipe.lines.length, 1, 'only the first request reached the full pipe');
  assert.ok(sent >= 4 && sent <= 5, `${sent} requests before the limit`);
  void rpc.request('cancel', { stream_id: 's' });
  // Each drain lets one more line out (each fills the small pipe); below the limit again,
  // requests are accepted.
  pipe.drain();
  assert.ok(writer.bufferedBytes <= 1000);
  const again = await Promise.race([rpc.request('runtime/state').then(() => 'answered'), Promise.resolve('pending')]);
  assert.equal(again, 'pending');
  while (writer.bufferedBytes > 0) pipe.drain();
  const methods = pipe.lines.map((line) => (JSON.parse(line) as { method: string }).method);
  assert.deepEqual(methods, [...Array<string>(sent).fill('tokenize'), 'cancel', 'runtime/state'], 'in the order written');
});
