/**
 * An in-memory line pair for RpcConnection: what the connection writes is kept as parsed
 * frames, and the test plays the runtime by feeding lines back. No process, no pipe, so the
 * order of answers and the moment of each one are the test's to choose.
 */
import type { LineListener, LineReader, LineWriter } from '../../src/lines.js';

export interface WrittenFrame {
  jsonrpc: string;
  id: number;
  method: string;
  params?: unknown;
}

export class MemoryLines implements LineReader, LineWriter {
  readonly written: WrittenFrame[] = [];
  /** What the writer reports as not yet taken by the peer; tests set it. */
  bufferedBytes = 0;
  /** False once the peer is "gone": writes are refused. */
  open = true;
  private listener: LineListener | undefined;

  listen(listener: LineListener): void {
    if (this.listener) throw new Error('listen() called twice');
    this.listener = listener;
  }

  write(line: string): boolean {
    if (!this.open) return false;
    this.written.push(JSON.parse(line) as WrittenFrame);
    return true;
  }

  // -- the runtime's side -----------------------------------------------------------------

  /** One stdout line as is (a frame is serialized first). */
  send(frame: unknown): void {
    this.reader.line(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  result(id: unknown, result: unknown): void {
    this.send({ jsonrpc: '2.0', id, result });
  }

  error(id: unknown, code: number, message: string, data?: unknown): void {
    this.send({ jsonrpc: '2.0', id, error: data === undefined ? { code, message } : { code, message, data } });
  }

  notify(method: string, params: unknown): void {
    this.send({ jsonrpc: '2.0', method, params });
  }

  oversize(size: number, head: string): void {
    this.reader.oversize(size, head);
  }

  /** The id of the newest request written. */
  get lastId(): number {
    const last = this.written.at(-1);
    if (!last) throw new Error('nothing written yet');
    return last.id;
  }

  private get reader(): LineListener {
    if (!this.listener) throw new Error('nobody listens');
    return this.listener;
  }
}
