/**
 * Lines and bytes: spawns the runtime process, splits its stdout into lines (with a size
 * cap) and its stderr into log lines. Nothing here knows JSON-RPC.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { EventEmitter } from 'node:events';

import { QueuedLineWriter, type LineListener, type LineReader, type LineWriter } from './lines.js';
import type { ClientLogger } from './logger.js';

export const DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024;
const HEAD_BYTES = 256;

/**
 * Splits a byte stream into newline-terminated lines without ever buffering more than
 * `maxBytes` of one line: a longer line is skipped to its newline and reported by size.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private size = 0;
  private discarding = 0; // bytes of an oversize line seen so far; 0 when not discarding
  private head: Buffer = Buffer.alloc(0); // the first bytes of the oversize line

  constructor(
    private readonly maxBytes: number,
    private readonly onLine: (line: Buffer) => void,
    /** `head`: the line's first bytes (up to 256), enough to see which request it answers. */
    private readonly onOversize: (size: number, head: Buffer) => void,
  ) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const newline = chunk.indexOf(0x0a, start);
      const piece = newline < 0 ? chunk.subarray(start) : chunk.subarray(start, newline);
      if (this.discarding) {
        this.discarding += piece.length;
      } else if (this.size + piece.length > this.maxBytes) {
        this.discarding = this.size + piece.length;
        this.head = this.headWith(piece);
        this.parts = [];
        this.size = 0;
      } else if (piece.length) {
        this.parts.push(piece);
        this.size += piece.length;
      }
      if (newline < 0) return;
      this.flushLine();
      start = newline + 1;
    }
  }

  private headWith(piece: Buffer): Buffer {
    const head: Buffer[] = [];
    let size = 0;
    for (const part of [...this.parts, piece]) {
      if (size >= HEAD_BYTES) break;
      const taken = part.subarray(0, HEAD_BYTES - size);
      head.push(taken);
      size += taken.length;
    }
    return Buffer.concat(head, size);
  }

  /** End of stream: a last line without its newline still counts. */
  end(): void {
    if (this.size || this.discarding) this.flushLine();
  }

  private flushLine(): void {
    if (this.discarding) {
      const size = this.discarding;
      this.discarding = 0;
      this.onOversize(size, this.head);
      return;
    }
    const line = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    this.onLine(line);
  }
}

export interface ProcessSpec {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string | undefined;
}

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all (e.g. ENOENT for the python path). */
  error?: Error;
}

export interface RuntimeProcessEvents {
  line: [line: string];
  oversize: [size: number, head: string];
  exit: [info: ExitInfo];
}

/** How long to wait, after the process exited, for the rest of its stdout to be read. */
const DRAIN_AFTER_EXIT_MS = 200;

/**
 * One spawned runtime process. Emits `line` per stdout line and `exit` exactly once; as a
 * LineReader and LineWriter it is what an RpcConnection talks through.
 */
export class RuntimeProcess extends EventEmitter<RuntimeProcessEvents> implements LineReader, LineWriter {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly stdin: QueuedLineWriter;
  private readonly tail: string[] = [];
  private exitInfo: ExitInfo | undefined;
  private exitEmitted = false;
  readonly exited: Promise<ExitInfo>;

  constructor(
    spec: ProcessSpec,
    private readonly logger: ClientLogger,
    maxLineBytes = DEFAULT_MAX_LINE_BYTES,
    private readonly tailLines = 40,
  ) {
    super();
    this.exited = new Promise((resolve) => this.once('exit', resolve));
    this.child = spawn(spec.command, spec.args, {
      env: spec.env,
      cwd: spec.cwd,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.stdin = new QueuedLineWriter(this.child.stdin);
    const stdout = new LineSplitter(
      maxLineBytes,
      (line) => this.emit('line', line.toString('utf8')),
      (size, head) => this.emit('oversize', size, head.toString('utf8')),
    );
    this.child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    this.child.stdout.on('end', () => stdout.end());
    const stderr = new LineSplitter(
      64 * 1024,
      (line) => this.onStderr(line.toString('utf8').replace(/\r$/, '')),
      (size) => this.onStderr(`<stderr line of ${size} bytes dropped>`),
    );
    this.child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    this.child.stderr.on('end', () => stderr.end());
    // Writes after the process died fail with EPIPE; the exit handler reports the death.
    this.child.stdin.on('error', (err) => this.logger.debug(`runtime stdin: ${err.message}`));
    this.child.on('error', (err) => {
      // Spawn failure: no 'exit' follows. Other errors (kill failures) are only logged.
      if (this.child.pid === undefined) this.finish({ code: null, signal: null, error: err });
      else this.logger.warn(`runtime process: ${err.message}`);
    });
    this.child.on('exit', (code, signal) => {
      this.exitInfo = { code, signal };
      // Let the stdout already in the pipe be read first, so answers the runtime wrote
      // before it died still arrive; 'close' says all stdio has ended.
      const timer = setTimeout(() => this.finish({ code, signal }), DRAIN_AFTER_EXIT_MS);
      this.child.once('close', () => {
        clearTimeout(timer);
        this.finish({ code, signal });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get hasExited(): boolean {
    return this.exitInfo !== undefined || this.exitEmitted;
  }

  listen(listener: LineListener): void {
    this.on('line', (line) => listener.line(line));
    this.on('oversize', (size, head) => listener.oversize(size, head));
  }

  /** Bytes written but not yet taken by the runtime: queued until the pipe drains. */
  get bufferedBytes(): number {
    return this.stdin.bufferedBytes;
  }

  /** Writes one line (a newline is appended); false when the process is gone. */
  write(line: string): boolean {
    if (this.hasExited) return false;
    return this.stdin.write(line);
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    if (!this.hasExited) this.child.kill(signal);
  }

  /** The last lines the runtime wrote to stderr. */
  stderrTail(): string[] {
    return [...this.tail];
  }

  private onStderr(line: string): void {
    this.tail.push(line);
    if (this.tail.length > this.tailLines) this.tail.shift();
    this.logger.runtime(line);
  }

  private finish(info: ExitInfo): void {
    if (this.exitEmitted) return;
    this.exitEmitted = true;
    this.exitInfo = info;
    this.emit('exit', info);
  }
}
