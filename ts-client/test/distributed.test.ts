/**
 * A distributed runtime (two ranks over loopback, `hostfile` option) serves like one
 * process; when a rank dies, its streams fail with the group's error, rank 0 exits, and
 * supervision restarts the whole group, models reloaded.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'node:test';

import { type RuntimeStatus } from '../src/index.js';
import { runtimeProcessSpec } from '../src/launch.js';
import { eventually, startEngine, tempDir } from './support/runtime.js';

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** A qwen2 that mlx-lm can split either way (hidden 128, 4 layers). */
async function makeQwen(dir: string): Promise<void> {
  const args = ['make-model', dir, '--arch', 'qwen2', '--hidden', '128', '--layers', '4'];
  const spec = runtimeProcessSpec({ runtimeArgs: args });
  await new Promise<void>((resolve, reject) => {
    const child = spawn(spec.command, spec.args, { env: spec.env, stdio: 'ignore' });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`make-model: ${code}`))));
  });
}

test('a rank killed mid-stream fails the stream; supervision restarts the group', async () => {
  const dir = tempDir();
  const model = join(dir, 'qwen');
  const hostfile = join(dir, 'hosts.json');
  const local = { ssh: '127.0.0.1', ips: ['127.0.0.1'] };
  writeFileSync(hostfile, JSON.stringify({ backend: 'ring', hosts: [local, local] }));
  await makeQwen(model);
  const engine = await startEngine({
    hostfile,
    env: {
      // The ring listens on this port and the next; the restarted group binds them again.
      MLX_SERVING_DISTRIBUTED__PORT: String(await freePort()),
      MLX_SERVING_DISTRIBUTED__EXIT_AFTER_FAILURE_S: '0.5',
      MLX_SERVING_CACHE_DIR: join(dir, 'cache'),
    },
    restart: { initialDelayMs: 50 },
    reloadModelsOnRestart: true,
  });
  engine.on('error', () => {});
  const statuses: RuntimeStatus[] = [];
  engine.on('runtimeStatus', (status) => statuses.push(status));
  try {
    const loaded = await engine.loadModel({
      model_id: 'q',
      local_path: model,
      distributed: { strategy: 'pipeline' },
    });
    assert.equal(loaded.distributed?.strategy, 'pipeline');
    const params = { model_id: 'q', prompt: 'Hello', max_tokens: 12, temperature: 0 };
    const before = await engine.generate(params);
    const info = await engine.runtimeInfo();
    assert.equal(info.distributed?.size, 2);
    const rank1 = info.distributed!.ranks[1]!.pid;

    const stream = engine.createGenerator({ ...params, max_tokens: 4000 });
    const iterator = stream[Symbol.asyncIterator]();
    assert.equal((await iterator.next()).value?.type, 'token');
    process.kill(rank1, 'SIGKILL');
    const failure = await (async () => {
      for (;;) if ((await iterator.next()).done) return 'ended';
    })().catch((e: unknown) => e);
    assert.match(String(failure), /distributed group failed/);

    await eventually(() => statuses.some((s) => s.state === 'ready'), 60_000, 'the group to restart');
    assert.equal(engine.restartCount, 1);
    const again = await engine.generate(params, { timeoutMs: 60_000 });
    assert.deepEqual(again.text, before.text);
    assert.equal((await engine.runtimeInfo()).distributed?.state, 'ok');
  } finally {
    await engine.dispose();
  }
});
