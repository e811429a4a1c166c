/** The package as another project loads it by name: from ES modules and from CommonJS. */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { packageRoot } from '../src/paths.js';
import { tempDir } from './support/runtime.js';

const compiledSrc = join(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** A project with mlx-serving in node_modules: the package.json as published, dist/ the compiled src/. */
function consumer(): string {
  const dir = tempDir('mlx-serving-consumer-');
  const installed = join(dir, 'node_modules', 'mlx-serving');
  mkdirSync(installed, { recursive: true });
  copyFileSync(join(packageRoot(), 'package.json'), join(installed, 'package.json'));
  symlinkSync(compiledSrc, join(installed, 'dist'), 'dir');
  return dir;
}

function run(dir: string, file: string, code: string): string {
  writeFileSync(join(dir, file), code);
  return execFileSync(process.execPath, [file], { cwd: dir }).toString().trim();
}

test('import by name', () => {
  const dir = consumer();
  assert.equal(run(dir, 'a.mjs', "import { createEngine } from 'mlx-serving';\nconsole.log(typeof createEngine);\n"), 'function');
});

const canRequireEsm = (process.features as { require_module?: boolean }).require_module === true;

test(
  'require by name gives the same module as import (one copy: instanceof holds across both)',
  { skip: !canRequireEsm && 'this Node cannot require() an ES module (20.19+, 22.12+ can)' },
  () => {
    const dir = consumer();
    const code = [
      "const required = require('mlx-serving');",
      "import('mlx-serving').then((imported) => {",
      '  console.log(typeof required.createEngine, required.Engine === imported.Engine);',
      '});',
    ].join('\n');
    assert.equal(run(dir, 'a.cjs', code), 'function true');
  },
);
