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
