/** How the runtime process is started: which python, which PYTHONPATH, which command. */
import { existsSync } from 'node:fs';
import { delimiter, join, resolve } from 'node:path';

import { packageRoot, sourceCheckoutRuntime } from './paths.js';
import type { ProcessSpec } from './transport.js';

export interface LaunchOptions {
  /** Python executable. Default: env MLX_SERVING_PYTHON, else a venv at ./.venv or
   * ../.venv (from the working directory, then from this package), else `python3`. */
  python?: string;
  /** Directories put in front of PYTHONPATH. Default: env MLX_SERVING_PYTHONPATH
   * (path-delimited), else the repository's `runtime/` when running from a source checkout. */
  extraPythonPath?: string[];
  /** Arguments after `python -m mlx_serving`. */
  runtimeArgs?: string[];
  /** Serve one model across several processes or hosts: an mlx.launch JSON hostfile
   * (`--hostfile`). The spawned runtime is rank 0 and starts the other ranks itself; when
   * a rank fails it exits after a while, and supervision restarts the whole group. */
  hostfile?: string;
  /** Replaces `python -m mlx_serving …` entirely: [executable, ...args]. For wrappers
   * (containers, `uv run`) and for tests that stand in a fake runtime. */
  command?: string[];
  /** Extra environment for the runtime (merged over process.env). */
  env?: Record<string, string | undefined>;
  cwd?: string;
}

export function resolvePython(explicit?: string, env: NodeJS.ProcessEnv = process.env): string {
  if (explicit) return explicit;
  const fromEnv = env['MLX_SERVING_PYTHON'];
  if (fromEnv) return fromEnv;
  const bin = process.platform === 'win32' ? join('Scripts', 'python.exe') : join('bin', 'python');
  const candidates = [
    resolve('.venv'),
    resolve('..', '.venv'),
    resolve(packageRoot(), '.venv'),
    resolve(packageRoot(), '..', '.venv'),
  ];
  for (const venv of candidates) {
    const python = join(venv, bin);
    if (existsSync(python)) return python;
  }
  return process.platform === 'win32' ? 'python' : 'python3';
}

export function pythonPathEntries(explicit?: string[], env: NodeJS.ProcessEnv = process.env): string[] {
  if (explicit) return explicit;
  const fromEnv = env['MLX_SERVING_PYTHONPATH'];
  if (fromEnv) return fromEnv.split(delimiter).filter(Boolean);
  const checkout = sourceCheckoutRuntime();
  return checkout ? [checkout] : [];
}

export function runtimeProcessSpec(options: LaunchOptions = {}): ProcessSpec {
  const base: NodeJS.ProcessEnv = { ...process.env, ...options.env };
  const entries = pythonPathEntries(options.extraPythonPath, base);
  const env: NodeJS.ProcessEnv = { ...base, PYTHONUNBUFFERED: '1' };
  if (entries.length) {
    env['PYTHONPATH'] = [...entries, ...(base['PYTHONPATH'] ? [base['PYTHONPATH']] : [])].join(delimiter);
  }
  if (options.command) {
    const [command, ...args] = options.command;
    if (!command) throw new TypeError('options.command must name an executable');
    return { command, args, env, cwd: options.cwd };
  }
  return {
    command: resolvePython(options.python, base),
    args: ['-m', 'mlx_serving', ...hostfileArgs(options.hostfile), ...(options.runtimeArgs ?? [])],
    env,
    cwd: options.cwd,
  };
}

function hostfileArgs(hostfile: string | undefined): string[] {
  return hostfile ? ['--hostfile', resolve(hostfile)] : [];
}
