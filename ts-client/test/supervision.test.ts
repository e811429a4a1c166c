/**
 * Supervision: a runtime killed with SIGKILL mid-stream fails the stream and the pending
 * requests at once with RuntimeExitedError, comes back (with its models when opted in) and
 * serves again; repeated crashes open the circuit breaker; dispose() ends the process, and
 * once disposed nothing starts again, whenever dispose() came.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  CircuitOpenError,
  createEngine,
  Engine,
  EngineDisposedError,
  RpcError,
  RuntimeExitedError,
  type RuntimeStatus,
} from '../src/index.js';
import { eventually, fakeRuntimeOptions, makeModel, noEos, startEngine } from './support/runtime.js';

const MODEL = 'tiny';

function statusLog(engine: { on(event: 'runtimeStatus', listener: (s: RuntimeStatus) => void): unknown }): RuntimeStatus[] {
  const log: RuntimeStatus[] = [];
  engine.on('runtimeStatus', (status) => log.push(status));
  return log;
}

describe('kill -9 of the runtime mid-stream (Python runtime)', () => {
  test('in-flight work rejects promptly; the runtime restarts with its models and serves', async () => {
    const [modelDir, engine] = await Promise.all([
      makeModel(),
      startEngine({ restart: { initialDelayMs: 50 }, reloadModelsOnRestart: true }),
    ]);
    const crashes: Error[] = [];
    engine.on('error', (error) => crashes.push(error));
    const statuses = statusLog(engine);
    try {
      await engine.loadModel({ model_id: MODEL, local_path: modelDir });
      const firstPid = engine.pid!;

      const generation = engine.createGenerator({
        model_id: MODEL,
        prompt: 'Keep going.',
        max_tokens: 4000,
        temperature: 0.8,
        logit_bias: await noEos(engine, MODEL),
      });
      const iterator = generation[Symbol.asyncIterator]();
      assert.equal((await iterator.next()).value?.type, 'token', 'the stream is running');

      // Freeze the runtime so the next request cannot be answered, then kill it.
      process.kill(firstPid, 'SIGSTOP');
      const pending = engine.tokenize({ model_id: MODEL, text: 'never answered' });
      const streamEnd = (async () => {
        for (;;) if ((await iterator.next()).done) return 'ended';
      })();
      await new Promise((r) => setTimeout(r, 50));
      const killedAt = Date.now();
      process.kill(firstPid, 'SIGKILL');

      const [requestError, streamError] = await Promise.all([
        pending.catch((e: unknown) => e),
        streamEnd.catch((e: unknown) => e),
      ]);
      const elapsed = Date.now() - killedAt;
      assert.ok(requestError instanceof RuntimeExitedError, String(requestError));
      assert.equal(requestError.signal, 'SIGKILL');
      assert.ok(streamError instanceof RuntimeExitedError, String(streamError));
      assert.ok(elapsed < 2_000, `rejected after ${elapsed} ms`);
      assert.ok(crashes.some((e) => e instanceof RuntimeExitedError), 'error event');

      // Served again: requests made now wait for the restart instead of failing.
      const state = await engine.runtimeState({ timeoutMs: 30_000 });
      assert.deepEqual(
        state.loaded_models.map((m) => m.model_id),
        [MODEL],
        'models reloaded',
      );
      assert.notEqual(engine.pid, firstPid);
      assert.equal(engine.restartCount, 1);
      assert.equal(state.restart_count, 1, 'the runtime knows it is a restart');
      const again = await engine.generate({ model_id: MODEL, prompt: 'Hello', max_tokens: 8, temperature: 0 });
      assert.equal(again.stats.tokens_generated > 0, true);
      assert.deepEqual(
        statuses.map((s) => s.state),
        ['exited', 'restarting', 'starting', 'ready'],
      );
    } finally {
      await engine.dispose();
    }
  });
});

describe('repeated kill -9 of the Python runtime, models not reloaded (the default)', () => {
  test('a restart forgets the models; the next crash opens the circuit; after the cool-down it serves', async () => {
    const [modelDir, engine] = await Promise.all([
      makeModel(),
      startEngine({ restart: { maxRestarts: 1, initialDelayMs: 50, cooldownMs: 500, stableAfterMs: 60_000 } }),
    ]);
    engine.on('error', () => {});
    const statuses = statusLog(engine);
    const unloaded: Array<{ model_id: string; reason: string }> = [];
    engine.on('modelUnloaded', (event) => unloaded.push(event));
    const readyCount = () => statuses.filter((s) => s.state === 'ready').length;
    try {
      await engine.loadModel({ model_id: MODEL, local_path: modelDir });

      process.kill(engine.pid!, 'SIGKILL');
      await eventually(() => readyCount() === 1, 30_000, 'the first restart');
      assert.deepEqual(unloaded, [{ model_id: MODEL, reason: 'runtime-exited' }]);
      assert.deepEqual(engine.loadedModels, []);
      assert.deepEqual((await engine.runtimeState()).loaded_models, []);
      const notLoaded = await engine.tokenize({ model_id: MODEL, text: 'x' }).catch((e: unknown) => e);
      assert.ok(notLoaded instanceof RpcError && notLoaded.code === 'ModelNotLoaded', String(notLoaded));

      // A second crash in a row is one more than maxRestarts: the circuit opens.
      process.kill(engine.pid!, 'SIGKILL');
      await eventually(() => statuses.some((s) => s.state === 'circuit-open'), 10_000, 'the circuit to open');
      const started = Date.now();
      const open = await engine.runtimeInfo().catch((e: unknown) => e);
      assert.ok(open instanceof CircuitOpenError, String(open));
      assert.ok(open.lastError instanceof RuntimeExitedError && open.lastError.signal === 'SIGKILL');
      assert.ok(Date.now() - started < 100, 'fails fast');

      // Half-open after the cool-down: the runtime starts, stays up and serves.
      await eventually(() => readyCount() === 2, 30_000, 'the start after the cool-down');
      await engine.loadModel({ model_id: MODEL, local_path: modelDir });
      const served = await engine.generate({ model_id: MODEL, prompt: 'Hello', max_tokens: 4, temperature: 0 });
      assert.ok(served.stats.tokens_generated > 0);
      assert.deepEqual(
        statuses.map((s) => s.state),
        ['exited', 'restarting', 'starting', 'ready', 'exited', 'circuit-open', 'starting', 'ready'],
      );
    } finally {
      await engine.dispose();
    }
  });
});

describe('supervision policies (fake runtime)', () => {
  test('repeated crashes open the circuit breaker, which fails fast, then tries again', async () => {
    const engine = await createEngine(
      fakeRuntimeOptions('crash-after-ready', {
        restart: { maxRestarts: 2, initialDelayMs: 10, cooldownMs: 400, stableAfterMs: 60_000 },
      }),
    );
    engine.on('error', () => {});
    const statuses = statusLog(engine);
    try {
      await eventually(() => statuses.some((s) => s.state === 'circuit-open'), 10_000, 'the circuit to open');
      const open = statuses.find((s) => s.state === 'circuit-open') as Extract<RuntimeStatus, { state: 'circuit-open' }>;
      assert.equal(open.failures, 3);
      assert.equal(statuses.filter((s) => s.state === 'restarting').length, 2);

      const started = Date.now();
      const error = await engine.runtimeState().catch((e: unknown) => e);
      assert.ok(error instanceof CircuitOpenError, String(error));
      assert.equal(error.code, 'CircuitOpen');
      assert.ok(Date.now() - started < 100, 'fails fast');

      // After the cool-down one start is tried (half-open); it crashes again, so it reopens.
      await eventually(() => statuses.filter((s) => s.state === 'circuit-open').length === 2, 5_000, 'the half-open try');
      const afterOpen = statuses.slice(statuses.indexOf(open) + 1).map((s) => s.state);
      assert.deepEqual(afterOpen.slice(0, 2), ['starting', 'ready']);
    } finally {
      await engine.dispose();
    }
  });

  test('with restarts off, a crash leaves the engine stopped and calls fail with the exit', async () => {
    const engine = await createEngine(fakeRuntimeOptions('crash-after-ready', { restart: false }));
    engine.on('error', () => {});
    const statuses = statusLog(engine);
    await eventually(() => statuses.some((s) => s.state === 'stopped'), 5_000, 'the engine to stop');
    const error = await engine.runtimeState().catch((e: unknown) => e);
    assert.ok(error instanceof RuntimeExitedError, String(error));
    assert.equal(error.exitCode, 1);
    await engine.dispose();
    const late = await engine.runtimeState().catch((e: unknown) => e);
    assert.ok(late instanceof EngineDisposedError, String(late));
  });

  test('dispose sends shutdown, and SIGKILLs a runtime that ignores it', async () => {
    const engine = await createEngine(fakeRuntimeOptions('ignore-shutdown', { shutdownTimeoutMs: 300 }));
    const generation = engine.createGenerator({ model_id: 'm', prompt: 'forever' });
    const iterator = generation[Symbol.asyncIterator]();
    await iterator.next();
    const started = Date.now();
    await engine.dispose();
    const elapsed = Date.now() - started;
    assert.ok(elapsed >= 250 && elapsed < 2_000, `disposed after ${elapsed} ms`);
    const error = await iterator.next().catch((e: unknown) => e);
    assert.ok(error instanceof EngineDisposedError, String(error));
    const late = await engine.runtimeState().catch((e: unknown) => e);
    assert.ok(late instanceof EngineDisposedError, String(late));
    await engine.dispose(); // idempotent
  });

  test('a runtime that cannot be spawned fails createEngine with RuntimeExitedError', async () => {
    const error = await createEngine({ python: '/nonexistent/python', logger: { debug() {}, info() {}, warn() {}, error() {} } }).catch(
      (e: unknown) => e,
    );
    assert.ok(error instanceof RuntimeExitedError, String(error));
    assert.match(error.message, /could not be started: .*ENOENT/);
  });
});

function alive(pid: number | undefined): boolean {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('dispose is final (fake runtime)', () => {
  // A restart would follow a crash within 10 ms; the tests wait far longer for one.
  const restart = { initialDelayMs: 10 };

  test("an 'error' listener that disposes after a crash: nothing restarts", async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal', { restart }));
    const statuses = statusLog(engine);
    let disposed: Promise<void> | undefined;
    engine.on('error', () => (disposed ??= engine.dispose()));
    process.kill(engine.pid!, 'SIGKILL');
    await eventually(() => disposed !== undefined, 5_000, 'the error event');
    await disposed;
    await sleep(300);
    assert.deepEqual(
      statuses.map((s) => s.state),
      ['stopped'],
    );
    assert.ok(!alive(engine.pid));
    const late = await engine.runtimeState().catch((e: unknown) => e);
    assert.ok(late instanceof EngineDisposedError, String(late));
  });

  test("dispose() while the status is 'exited': nothing restarts", async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal', { restart }));
    engine.on('error', () => {});
    const statuses = statusLog(engine);
    let disposed: Promise<void> | undefined;
    engine.on('runtimeStatus', (status) => {
      if (status.state === 'exited') disposed ??= engine.dispose();
    });
    process.kill(engine.pid!, 'SIGKILL');
    await eventually(() => disposed !== undefined, 5_000, 'the exited status');
    await disposed;
    await sleep(300);
    assert.deepEqual(
      statuses.map((s) => s.state),
      ['exited', 'stopped'],
    );
    assert.ok(!alive(engine.pid));
  });

  test('dispose() while the first start is probing: start() rejects and no runtime is left', async () => {
    const engine = new Engine(fakeRuntimeOptions('normal', { restart }));
    const statuses = statusLog(engine);
    const starting = engine.start().catch((e: unknown) => e);
    await engine.dispose();
    const error = await starting;
    assert.ok(error instanceof EngineDisposedError, String(error));
    await sleep(300);
    assert.deepEqual(
      statuses.map((s) => s.state),
      ['starting', 'stopped'],
    );
    assert.ok(!alive(engine.pid));
    const again = await engine.start().catch((e: unknown) => e);
    assert.ok(again instanceof EngineDisposedError, String(again));
    assert.ok(!alive(engine.pid));
  });

  test('after a crash and a restart, calls after dispose() fail with EngineDisposedError', async () => {
    const engine = await createEngine(fakeRuntimeOptions('normal', { restart }));
    engine.on('error', () => {});
    const statuses = statusLog(engine);
    process.kill(engine.pid!, 'SIGKILL');
    await eventually(() => statuses.some((s) => s.state === 'ready'), 5_000, 'the restart');
    await engine.dispose();
    const error = await engine.runtimeState().catch((e: unknown) => e);
    assert.ok(error instanceof EngineDisposedError, String(error));
  });
});
