/**
 * RpcConnection on an in-memory line pair, without a process: answers matched by id in any
 * order, timeouts and aborts, late answers to abandoned ids, oversize lines, protocol
 * violations, refusals before sending, and close() with requests pending.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  InvalidParamsError,
  ProtocolError,
  RequestTimeoutError,
  RequestTooLargeError,
  RpcError,
  RuntimeBackloggedError,
  RuntimeExitedError,
} from '../src/errors.js';
import { ClientLogger, silentLogger } from '../src/logger.js';
import { RpcConnection } from '../src/rpc.js';
import { protocolValidator } from '../src/validation.js';
import { MemoryLines } from './support/lines.js';

interface Seen {
  notifications: Array<[string, unknown]>;
  invalid: Array<[string, ProtocolError]>;
  protocolErrors: ProtocolError[];
}

function connect(): { lines: MemoryLines; rpc: RpcConnection; seen: Seen } {
  const lines = new MemoryLines();
  const seen: Seen = { notifications: [], invalid: [], protocolErrors: [] };
  const rpc = new RpcConnection(lines, lines, protocolValidator(), new ClientLogger(silentLogger), {
    notification: (method, params) => seen.notifications.push([method, params]),
    invalidNotification: (method, _params, error) => seen.invalid.push([method, error]),
    protocolError: (error) => seen.protocolErrors.push(error),
  });
  return { lines, rpc, seen };
}

const tokens = (n: number) => ({ tokens: [n], token_strings: [String(n)] });

/** Settles after the microtasks queued so far (and the promise callbacks they queue). */
const tick = () => new Promise((resolve) => setImmediate(resolve));

test('requests are framed with fresh ids and answered by id, in any order', async () => {
  const { lines, rpc, seen } = connect();
  const first = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  const second = rpc.request('tokenize', { model_id: 'm', text: 'b' });
  const third = rpc.request('runtime/state');
  assert.deepEqual(
    lines.written.map((f) => [f.jsonrpc, f.id, f.method]),
    [
      ['2.0', 1, 'tokenize'],
      ['2.0', 2, 'tokenize'],
      ['2.0', 3, 'runtime/state'],
    ],
  );
  assert.deepEqual(lines.written[0]!.params, { model_id: 'm', text: 'a' });
  assert.ok(!('params' in lines.written[2]!), 'a call without params sends none');
  assert.equal(rpc.pendingCount, 3);
  const thirdFails = assert.rejects(third, (e: unknown) => e instanceof RpcError && e.rpcCode === -32099 && e.message === 'busy');
  lines.result(2, tokens(2));
  lines.error(3, -32099, 'busy');
  lines.result(1, tokens(1));
  assert.deepEqual(await second, tokens(2));
  assert.deepEqual(await first, tokens(1));
  await thirdFails;
  assert.equal(rpc.pendingCount, 0);
  assert.deepEqual(seen.protocolErrors, []);
});

test('an error answer becomes its typed error', async () => {
  const { lines, rpc } = connect();
  const invalid = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  lines.error(lines.lastId, -32602, 'text: too long', {
    type: 'ValidationError',
    field: 'text',
    issues: [{ path: 'text', message: 'too long', code: 'too_long' }],
  });
  await assert.rejects(invalid, (e: unknown) => e instanceof InvalidParamsError && e.field === 'text' && e.source === 'runtime');
  const missing = rpc.request('tokenize', { model_id: 'x', text: 'a' });
  lines.error(lines.lastId, -32005, 'model x is not loaded', { type: 'ApplicationError', model_id: 'x' });
  await assert.rejects(missing, (e: unknown) => e instanceof RpcError && e.code === 'ModelNotLoaded');
});

test('a request times out, and its late result goes to onLateResult, not to protocolError', async () => {
  const { lines, rpc, seen } = connect();
  const late: unknown[] = [];
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' }, { timeoutMs: 5, onLateResult: (r) => late.push(r) });
  await assert.rejects(call, (e: unknown) => e instanceof RequestTimeoutError && e.operation === 'tokenize' && e.timeoutMs === 5);
  assert.equal(rpc.pendingCount, 0);
  lines.result(1, tokens(1));
  assert.deepEqual(late, [tokens(1)]);
  // Once only: a second answer to the same id is a violation.
  lines.result(1, tokens(1));
  assert.equal(seen.protocolErrors.length, 1);
  assert.match(seen.protocolErrors[0]!.message, /unknown request id 1/);
});

test('an answer in time clears the timeout', async () => {
  const { lines, rpc } = connect();
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' }, { timeoutMs: 20 });
  lines.result(1, tokens(1));
  assert.deepEqual(await call, tokens(1));
  await new Promise((r) => setTimeout(r, 30)); // a timer left behind would reject nothing, but must not throw
});

test('an aborted request rejects with the reason; a late error answer to it is dropped quietly', async () => {
  const { lines, rpc, seen } = connect();
  const controller = new AbortController();
  const late: unknown[] = [];
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' }, { signal: controller.signal, onLateResult: (r) => late.push(r) });
  const reason = new Error('stop');
  controller.abort(reason);
  await assert.rejects(call, (e: unknown) => e === reason);
  lines.error(1, -32099, 'too late');
  assert.deepEqual(late, []);
  assert.deepEqual(seen.protocolErrors, []);
  // An already aborted signal: nothing is written.
  await assert.rejects(rpc.request('runtime/state', undefined, { signal: controller.signal }), (e: unknown) => e === reason);
  assert.equal(lines.written.length, 1);
});

test('only the newest 1024 abandoned ids are remembered', async () => {
  const { lines, rpc, seen } = connect();
  const controller = new AbortController();
  const calls = Array.from({ length: 1025 }, () =>
    rpc.request('runtime/state', undefined, { signal: controller.signal }).catch(() => undefined),
  );
  controller.abort(new Error('stop'));
  await Promise.all(calls);
  lines.result(2, {}); // still remembered: dropped (its result is not even validated)
  assert.equal(seen.protocolErrors.length, 0);
  lines.result(1, {}); // forgotten: a violation
  assert.equal(seen.protocolErrors.length, 1);
  assert.match(seen.protocolErrors[0]!.message, /unknown request id 1/);
});

test('an oversize line fails the request its head names; one naming none is a protocol error', async () => {
  const { lines, rpc, seen } = connect();
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  const other = rpc.request('tokenize', { model_id: 'm', text: 'b' });
  lines.oversize(20_000_000, '{"jsonrpc":"2.0","id":1,"result":{"tokens":[1,2,3');
  await assert.rejects(call, (e: unknown) => e instanceof ProtocolError && /20000000 bytes/.test(e.message));
  assert.equal(rpc.pendingCount, 1);
  lines.oversize(20_000_000, '{"jsonrpc":"2.0","method":"stream.chunk","params":{');
  assert.equal(seen.protocolErrors.length, 1);
  assert.match(seen.protocolErrors[0]!.message, /maxLineBytes/);
  lines.result(2, tokens(2));
  assert.deepEqual(await other, tokens(2));
});

test('lines that are not frames are protocol errors and poison nothing after them', async () => {
  const { lines, rpc, seen } = connect();
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  lines.send('not json');
  lines.send('[1,2]');
  lines.send('{"jsonrpc":"2.0"}');
  lines.send('   '); // blank lines are skipped
  lines.error(null, -32700, 'parse error');
  lines.result(99, tokens(99));
  assert.deepEqual(
    seen.protocolErrors.map((e) => e.message.split(':')[0]),
    [
      'runtime wrote a stdout line that is not JSON',
      'runtime wrote a frame that is not an object',
      'runtime wrote a frame with neither id nor method',
      'runtime rejected a frame (id null)',
      'answer to unknown request id 99',
    ],
  );
  lines.result(1, tokens(1));
  assert.deepEqual(await call, tokens(1));
});

test('a result that breaks its schema fails its request with the issues', async () => {
  const { lines, rpc, seen } = connect();
  const call = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  lines.result(1, { tokens: ['one'] });
  await assert.rejects(call, (e: unknown) => e instanceof ProtocolError && /invalid tokenize result/.test(e.message) && e.issues.length > 0);
  const envelope = rpc.request('tokenize', { model_id: 'm', text: 'a' });
  lines.send({ jsonrpc: '2.0', id: 2 }); // neither result nor error
  await assert.rejects(envelope, (e: unknown) => e instanceof ProtocolError && /invalid answer to tokenize/.test(e.message));
  assert.deepEqual(seen.protocolErrors, []);
});

test('notifications go to their handler: valid, invalid, unknown', () => {
  const { lines, seen } = connect();
  lines.notify('stream.chunk', { stream_id: 's', token: 'a', token_id: 1 });
  lines.notify('stream.chunk', { stream_id: 's', token: 'a', token_id: 'one' });
  lines.notify('some.future.notification', { anything: true });
  lines.send({ jsonrpc: '2.0', method: 7 });
  assert.deepEqual(seen.notifications, [['stream.chunk', { stream_id: 's', token: 'a', token_id: 1 }]]);
  assert.deepEqual(
    seen.invalid.map(([method]) => method),
    ['stream.chunk'],
  );
  assert.equal(seen.protocolErrors.length, 1);
  assert.match(seen.protocolErrors[0]!.message, /invalid notification frame/);
});

test('close() rejects what is pending and every later request; nothing more is written', async () => {
  const { lines, rpc } = connect();
  const calls = [rpc.request('tokenize', { model_id: 'm', text: 'a' }), rpc.request('runtime/state', undefined, { timeoutMs: 10 })];
  const exited = new RuntimeExitedError(1, null, ['boom']);
  rpc.close(exited);
  await Promise.all(calls.map((call) => assert.rejects(call, (e: unknown) => e === exited)));
  assert.equal(rpc.pendingCount, 0);
  rpc.close(new Error('second close is ignored'));
  await assert.rejects(rpc.request('runtime/info'), (e: unknown) => e === exited);
  assert.equal(lines.written.length, 2);
  await new Promise((r) => setTimeout(r, 20)); // the cleared timeout does not fire
});

test('a request over the peer frame limit is refused before it is written', async () => {
  const { lines, rpc } = connect();
  rpc.maxFrameBytes = 300;
  // 120 two-byte characters: short in UTF-16 units, over the limit in UTF-8 bytes.
  const text = 'é'.repeat(120);
  await assert.rejects(
    rpc.request('tokenize', { model_id: 'm', text }),
    (e: unknown) => e instanceof RequestTooLargeError && e.limitBytes === 300 && e.bytes > 300,
  );
  assert.equal(lines.written.length, 0);
  void rpc.request('tokenize', { model_id: 'm', text: 'é' });
  assert.equal(lines.written.length, 1);
});

test('past maxBufferedBytes new requests fail fast, except cancel', async () => {
  const { lines, rpc } = connect();
  rpc.maxBufferedBytes = 1000;
  lines.bufferedBytes = 1000; // at the limit still goes out
  void rpc.request('runtime/state');
  lines.bufferedBytes = 1001;
  await assert.rejects(
    rpc.request('tokenize', { model_id: 'm', text: 'a' }),
    (e: unknown) => e instanceof RuntimeBackloggedError && e.bufferedBytes === 1001 && e.limitBytes === 1000,
  );
  void rpc.request('cancel', { stream_id: 's' });
  assert.deepEqual(
    lines.written.map((f) => f.method),
    ['runtime/state', 'cancel'],
  );
  await tick();
});
