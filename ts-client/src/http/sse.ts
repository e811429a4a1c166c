/**
 * A server-sent event stream on one response: `event:` / `data:` frames, with backpressure
 * (a client that reads slowly pauses the writer instead of growing the socket's buffer).
 * Frames written in one turn of the event loop (the tokens of one batch step) leave in one
 * socket write.
 */
import type { ServerResponse } from 'node:http';

export class EventStream {
  private corked = false;

  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // Proxies (nginx) would otherwise buffer the stream.
      'x-accel-buffering': 'no',
    });
  }

  /** False once the client went away; sends are then dropped. */
  get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  /** One event of JSON data (`event` names it, as Anthropic's API does). */
  send(data: unknown, event?: string): Promise<void> {
    return this.sendRaw(JSON.stringify(data), event);
  }

  /** A data line as is: JSON already serialized, or OpenAI's closing `[DONE]`. */
  sendRaw(data: string, event?: string): Promise<void> {
    return this.write(`${event ? `event: ${event}\n` : ''}data: ${data}\n\n`);
  }

  end(): void {
    if (this.open) this.res.end();
  }

  private write(frame: string): Promise<void> {
    if (!this.open) return Promise.resolve();
    if (!this.corked) {
      this.corked = true;
      this.res.cork();
      // After the microtasks of this turn, which write the rest of the batch.
      process.nextTick(() => {
        this.corked = false;
        this.res.uncork();
      });
    }
    if (this.res.write(frame)) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.res.off('drain', done);
        this.res.off('close', done);
        resolve();
      };
      this.res.on('drain', done);
      this.res.on('close', done);
    });
  }
}
