/**
 * The seam between JSON-RPC and whatever carries its lines: RpcConnection reads through a
 * LineReader and writes through a LineWriter, as vscode-jsonrpc's connection takes a
 * MessageReader and a MessageWriter. A runtime process provides both (transport.ts); a test
 * provides an in-memory pair.
 */

/** What a LineReader reports, in the order the lines came. */
export interface LineListener {
  /** One line, without its newline. */
  line(line: string): void;
  /** A line over the reader's size limit, dropped: its byte size and its first bytes
   * (enough to see which request it answers). */
  oversize(size: number, head: string): void;
}

export interface LineReader {
  /** Starts reporting lines to `listener`; called once per connection. */
  listen(listener: LineListener): void;
}

export interface LineWriter {
  /** Writes one line (the writer appends the newline); false when the peer is gone. A
   * line the peer cannot take yet is kept, counted in `bufferedBytes`. */
  write(line: string): boolean;
  /** Bytes written but not yet taken by the peer: how far it has fallen behind. */
  readonly bufferedBytes: number;
}

/** What a QueuedLineWriter writes to: the part of a Node Writable (a pipe) it uses. */
export interface ByteSink {
  /** False once the sink's own buffer is past its high-water mark: wait for 'drain'. */
  write(chunk: Buffer): boolean;
  once(event: 'drain', listener: () => void): unknown;
  readonly writable: boolean;
  /** Bytes the sink has accepted but not yet handed on. */
  readonly writableLength: number;
}

/**
 * A LineWriter over a byte sink that honours its backpressure: once the sink says it is
 * full, lines wait here, in order, and go out on 'drain'. Whatever waits (here and in the
 * sink) is `bufferedBytes`, which RpcConnection bounds (`maxBufferedBytes`): a peer that
 * stops reading makes new requests fail fast instead of growing this process.
 */
export class QueuedLineWriter implements LineWriter {
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private waitingForDrain = false;

  constructor(private readonly sink: ByteSink) {}

  get bufferedBytes(): number {
    return this.sink.writableLength + this.queuedBytes;
  }

  write(line: string): boolean {
    if (!this.sink.writable) return false;
    const bytes = Buffer.from(line + '\n', 'utf8');
    if (this.waitingForDrain) {
      this.queue.push(bytes);
      this.queuedBytes += bytes.length;
    } else if (!this.sink.write(bytes)) {
      this.awaitDrain();
    }
    return true;
  }

  private awaitDrain(): void {
    this.waitingForDrain = true;
    this.sink.once('drain', () => this.flush());
  }

  /** Hands the waiting lines to the sink until it is full again. */
  private flush(): void {
    this.waitingForDrain = false;
    while (this.queue.length) {
      const bytes = this.queue.shift()!;
      this.queuedBytes -= bytes.length;
      if (!this.sink.write(bytes)) {
        this.awaitDrain();
        return;
      }
    }
  }
}
