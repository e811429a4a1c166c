/**
 * Keeps one runtime process alive: starts it and probes readiness with `runtime/info`,
 * notices when it dies (everything in flight is rejected at once), restarts it with
 * exponential backoff, and opens a circuit breaker after too many crashes in a row.
 *
 *   starting ──ready──▶ ready ──exit──▶ waiting (backoff) ──▶ starting …
 *                                         └─ too many crashes ─▶ circuit-open ──cool-down──▶ starting
 */
import { onAbort } from './abort.js';
import { CircuitOpenError, EngineDisposedError, RequestTimeoutError, RuntimeExitedError } from './errors.js';
import type { ProtocolError } from './errors.js';
import type { ClientLogger } from './logger.js';
import { RpcConnection } from './rpc.js';
import { RuntimeProcess, type ExitInfo, type ProcessSpec } from './transport.js';
import type { RuntimeInfo } from './types/index.js';
import type { ProtocolValidator } from './validation.js';

export interface RestartPolicy {
  /** Restart the runtime when it dies (default true). */
  enabled?: boolean;
  /** Crashes in a row that are restarted; one more opens the circuit (default 5). */
  maxRestarts?: number;
  /** Delay before the first restart; doubles (`factor`) per crash in a row (default 250 ms). */
  initialDelayMs?: number;
  maxDelayMs?: number;
  factor?: number;
  /** After this long up, the crash count starts again from zero (default 30 s). */
  stableAfterMs?: number;
  /** How long an open circuit fails calls before one more start is tried (default 60 s). */
  cooldownMs?: number;
}

export type RuntimeStatus =
  | { state: 'starting'; attempt: number }
  | { state: 'ready'; pid: number | undefined; restartCount: number; info: RuntimeInfo }
  | { state: 'exited'; error: RuntimeExitedError }
  | { state: 'restarting'; attempt: number; delayMs: number; error: Error }
  | { state: 'circuit-open'; retryAt: number; failures: number; error: Error }
  | { state: 'stopped'; error?: Error };

/** One runtime process and the JSON-RPC connection over its stdio. */
export interface RuntimeLink {
  readonly process: RuntimeProcess;
  readonly connection: RpcConnection;
}

export interface SupervisorHooks {
  notification(method: string, params: unknown): void;
  invalidNotification(method: string, params: unknown, error: ProtocolError): void;
  protocolError(error: ProtocolError): void;
  /** The runtime died: fail whatever is in flight outside the RPC layer (streams). */
  exited(error: RuntimeExitedError): void;
  /** A restarted runtime answered its probe; bring back what the old one held. */
  restore(link: RuntimeLink): Promise<void>;
  status(status: RuntimeStatus): void;
}

export interface SupervisorOptions {
  spec: ProcessSpec;
  restart: Required<RestartPolicy>;
  startupTimeoutMs: number;
  shutdownTimeoutMs: number;
  maxLineBytes: number;
}

export const DEFAULT_RESTART_POLICY: Required<RestartPolicy> = {
  enabled: true,
  maxRestarts: 5,
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  factor: 2,
  stableAfterMs: 30_000,
  cooldownMs: 60_000,
};

type Phase = 'idle' | 'starting' | 'ready' | 'waiting' | 'circuit-open' | 'stopped' | 'disposing';

interface Gate {
  promise: Promise<RpcConnection>;
  resolve(connection: RpcConnection): void;
  reject(error: Error): void;
}

function gate(): Gate {
  let resolve!: (c: RpcConnection) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<RpcConnection>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // waiters handle it; nobody waiting is fine too
  return { promise, resolve, reject };
}

export class Supervisor {
  private phase: Phase = 'idle';
  private ready: Gate = gate();
  private current: RuntimeLink | undefined; // the newest process, whatever its phase
  private failures = 0;
  private restarts = 0;
  private lastError: Error | undefined;
  private retryAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private stableTimer: NodeJS.Timeout | undefined;
  private disposed: Promise<void> | undefined;
  info: RuntimeInfo | undefined;

  constructor(
    private readonly options: SupervisorOptions,
    private readonly validator: ProtocolValidator,
    private readonly logger: ClientLogger,
    private readonly hooks: SupervisorHooks,
  ) {}

  get pid(): number | undefined {
    return this.current?.process.pid;
  }

  get restartCount(): number {
    return this.restarts;
  }

  get state(): Phase {
    return this.phase;
  }

  /** First start: resolves once the runtime answered `runtime/info`; no retries. */
  async start(): Promise<RuntimeInfo> {
    if (this.isDisposed) throw new EngineDisposedError();
    this.phase = 'starting';
    this.hooks.status({ state: 'starting', attempt: 0 });
    try {
      const link = await this.launch();
      // dispose() ran while the probe was out: it ends this process, nothing becomes ready.
      if (this.isDisposed) throw new EngineDisposedError();
      this.becomeReady(link);
      return this.info!;
    } catch (error) {
      if (this.isDisposed) throw new EngineDisposedError(); // shutdown() owns the phase now
      this.phase = 'stopped';
      this.lastError = error as Error;
      this.ready.reject(error as Error);
      this.hooks.status({ state: 'stopped', error: error as Error });
      throw error;
    }
  }

  /** The ready connection; waits (up to `timeoutMs`) while a restart is under way. */
  async connection(timeoutMs: number, signal?: AbortSignal): Promise<RpcConnection> {
    // Before the phase: a runtime that crashed before dispose() left its error behind.
    if (this.isDisposed) throw new EngineDisposedError();
    switch (this.phase) {
      case 'ready':
        return this.current!.connection;
      case 'disposing':
        throw new EngineDisposedError();
      case 'stopped':
        throw this.lastError ?? new EngineDisposedError();
      case 'circuit-open':
        throw new CircuitOpenError(this.retryAt, this.lastError);
      default:
        return waitFor(this.ready.promise, timeoutMs, 'waiting for the runtime to restart', signal);
    }
  }

  /** Asks the runtime to shut down (streams end, models unload), SIGKILL after the timeout. */
  dispose(): Promise<void> {
    this.disposed ??= this.shutdown();
    return this.disposed;
  }

  /** Once true, never false again: no process is spawned and nothing becomes ready. */
  private get isDisposed(): boolean {
    return this.disposed !== undefined;
  }

  private async shutdown(): Promise<void> {
    this.phase = 'disposing';
    clearTimeout(this.timer);
    clearTimeout(this.stableTimer);
    this.ready.reject(new EngineDisposedError());
    const link = this.current;
    if (link && !link.process.hasExited) {
      const { process, connection } = link;
      const kill = setTimeout(() => process.kill('SIGKILL'), this.options.shutdownTimeoutMs);
      connection
        .request('shutdown', undefined, { timeoutMs: this.options.shutdownTimeoutMs })
        .catch((error: Error) => this.logger.debug(`shutdown request: ${error.message}`));
      await process.exited;
      clearTimeout(kill);
    }
    link?.connection.close(new EngineDisposedError());
    this.phase = 'stopped';
    this.hooks.status({ state: 'stopped' });
  }

  /** Spawns a process and probes it; the connection is ready when this resolves. The
   * runtime reports `restartCount` as runtime/state's `restart_count`. */
  private async launch(restartCount = this.restarts): Promise<RuntimeLink> {
    const spec = this.options.spec;
    const env = { ...spec.env, MLX_SERVING_RESTART_COUNT: String(restartCount) };
    const process = new RuntimeProcess({ ...spec, env }, this.logger, this.options.maxLineBytes);
    const isCurrent = () => this.current === link;
    const connection = new RpcConnection(process, process, this.validator, this.logger, {
      notification: (m, p) => isCurrent() && this.hooks.notification(m, p),
      invalidNotification: (m, p, e) => isCurrent() && this.hooks.invalidNotification(m, p, e),
      protocolError: (e) => isCurrent() && this.hooks.protocolError(e),
    });
    const link: RuntimeLink = { process, connection };
    this.current = link;
    process.once('exit', (info) => this.onExit(link, info));
    try {
      this.info = await connection.request('runtime/info', undefined, { timeoutMs: this.options.startupTimeoutMs });
      connection.maxFrameBytes = this.info.limits.max_frame_bytes;
      return link;
    } catch (error) {
      process.kill('SIGKILL');
      throw error;
    }
  }

  private becomeReady(link: RuntimeLink): void {
    this.phase = 'ready';
    this.ready.resolve(link.connection);
    clearTimeout(this.stableTimer);
    this.stableTimer = setTimeout(() => {
      this.failures = 0;
    }, this.options.restart.stableAfterMs);
    this.stableTimer.unref();
    this.hooks.status({ state: 'ready', pid: link.process.pid, restartCount: this.restarts, info: this.info! });
  }

  private onExit(link: RuntimeLink, info: ExitInfo): void {
    if (this.isDisposed || this.phase === 'stopped') {
      link.connection.close(new EngineDisposedError());
      return;
    }
    const error = new RuntimeExitedError(info.code, info.signal, link.process.stderrTail(), info.error);
    // Rejecting here (not on a timeout) is what keeps callers from hanging on a dead runtime.
    link.connection.close(error);
    if (link !== this.current || this.phase !== 'ready') return; // a start attempt: launch() reports it
    this.logger.warn(error.message.split('\n')[0]!);
    this.ready = gate();
    clearTimeout(this.stableTimer);
    this.hooks.exited(error);
    if (this.isDisposed) return; // an 'error' listener disposed the engine
    this.hooks.status({ state: 'exited', error });
    this.crashed(error);
  }

  private crashed(error: Error): void {
    // A 'runtimeStatus' listener may have disposed the engine: then nothing restarts.
    if (this.isDisposed) return;
    this.lastError = error;
    this.failures += 1;
    const policy = this.options.restart;
    if (!policy.enabled) {
      this.phase = 'stopped';
      this.ready.reject(error);
      this.hooks.status({ state: 'stopped', error });
      return;
    }
    if (this.failures > policy.maxRestarts) {
      this.openCircuit(error);
      return;
    }
    const delayMs = Math.min(policy.initialDelayMs * policy.factor ** (this.failures - 1), policy.maxDelayMs);
    this.phase = 'waiting';
    this.hooks.status({ state: 'restarting', attempt: this.failures, delayMs, error });
    this.timer = setTimeout(() => void this.restart(), delayMs);
  }

  private openCircuit(error: Error): void {
    this.phase = 'circuit-open';
    this.retryAt = Date.now() + this.options.restart.cooldownMs;
    this.ready.reject(new CircuitOpenError(this.retryAt, error));
    this.logger.error(`runtime crashed ${this.failures} times in a row; circuit open until ${new Date(this.retryAt).toISOString()}`);
    this.hooks.status({ state: 'circuit-open', retryAt: this.retryAt, failures: this.failures, error });
    // Half-open: one more start after the cool-down. The crash count is not reset until
    // the runtime stays up, so one more crash opens the circuit again.
    this.timer = setTimeout(() => {
      this.ready = gate();
      void this.restart();
    }, this.options.restart.cooldownMs);
  }

  private async restart(): Promise<void> {
    if (this.isDisposed) return;
    this.phase = 'starting';
    this.hooks.status({ state: 'starting', attempt: this.failures });
    let link: RuntimeLink;
    try {
      link = await this.launch(this.restarts + 1);
      const { process } = link;
      const died = process.exited.then((info) => {
        throw new RuntimeExitedError(info.code, info.signal, process.stderrTail(), info.error);
      });
      await Promise.race([this.hooks.restore(link), died]);
    } catch (error) {
      if (this.phase !== 'starting') return; // disposed meanwhile
      this.logger.warn(`runtime restart failed: ${(error as Error).message.split('\n')[0]}`);
      this.current?.process.kill('SIGKILL');
      this.crashed(error as Error);
      return;
    }
    if (this.phase !== 'starting') return;
    this.restarts += 1;
    this.becomeReady(link);
  }
}

/** `promise`, or a RequestTimeoutError after `timeoutMs` (0: no limit), or the abort reason. */
export function waitFor<T>(promise: Promise<T>, timeoutMs: number, operation: string, signal?: AbortSignal): Promise<T> {
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (!timeoutMs && !signal) return promise;
  return new Promise<T>((resolve, reject) => {
    const timer = timeoutMs ? setTimeout(() => done(() => reject(new RequestTimeoutError(operation, timeoutMs))), timeoutMs) : undefined;
    const unsubscribe = signal ? onAbort(signal, () => done(() => reject(signal.reason))) : undefined;
    const done = (settle: () => void) => {
      clearTimeout(timer);
      unsubscribe?.();
      settle();
    };
    promise.then(
      (value) => done(() => resolve(value)),
      (error: unknown) => done(() => reject(error)),
    );
  });
}
