/** How the runtime process is spawned: the options that become its arguments. */
import assert from 'node:assert/strict';
import { resolve } from 'node:path';
import { test } from 'node:test';

import { runtimeProcessSpec } from '../src/launch.js';

test('a hostfile makes the runtime rank 0 of a distributed group', () => {
  const spec = runtimeProcessSpec({ python: 'python3', hostfile: 'hosts.json', runtimeArgs: ['serve'] });
  assert.deepEqual(spec.args, ['-m', 'mlx_serving', '--hostfile', resolve('hosts.json'), 'serve']);
  assert.deepEqual(runtimeProcessSpec({ python: 'python3' }).args, ['-m', 'mlx_serving']);
});
