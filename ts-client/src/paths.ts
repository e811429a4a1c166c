import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The directory holding this package's package.json (the module runs from dist/ when
 * installed and from build/src/ under the tests, so it is found by walking up). */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const parent = dirname(dir);
    if (parent === dir) throw new Error('mlx-serving: package.json not found above ' + import.meta.url);
    dir = parent;
  }
}

/** `runtime/` of the repository when this package runs from a source checkout, else null. */
export function sourceCheckoutRuntime(): string | null {
  const runtime = resolve(packageRoot(), '..', 'runtime');
  return existsSync(join(runtime, 'mlx_serving', '__init__.py')) ? runtime : null;
}

/** `protocol/schemas/` of the repository (only present in a source checkout). */
export function schemaSourceDir(): string {
  return resolve(packageRoot(), '..', 'protocol', 'schemas');
}
