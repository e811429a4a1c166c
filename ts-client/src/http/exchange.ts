/**
 * One request and its response, as the API handlers see them: the body read as a Field,
 * an answer in JSON or as an event stream, and a signal that aborts when the client goes
 * away before its answer is complete (which cancels its generation).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

import { HttpError, type FieldNames } from './errors.js';
import type { ServedEngine } from './generation.js';
import { Field } from './params.js';
import { EventStream } from './sse.js';

export class Exchange {
  readonly signal: AbortSignal;
  /** How the handler maps the runtime's field paths back to the request's (errors.ts). */
  fieldNames: FieldNames = (path) => path;
  private events: EventStream | undefined;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly engine: ServedEngine,
    private readonly maxBodyBytes: number,
  ) {
    const controller = new AbortController();
    res.on('close', () => {
      if (!res.writableFinished) controller.abort(new Error('the client closed the connection'));
    });
    this.signal = controller.signal;
  }

  /** The event stream, once the handler opened one (errors then go inside it). */
  get stream(): EventStream | undefined {
    return this.events;
  }

  /** The JSON body; 413 past the size limit (the runtime's own frame limit), 400 if not JSON. */
  async body(): Promise<Field> {
    const declared = Number(this.req.headers['content-length'] ?? 0);
    if (declared > this.maxBodyBytes) throw this.tooLarge();
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of this.req as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.maxBodyBytes) throw this.tooLarge();
      chunks.push(chunk);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (error) {
      throw new HttpError(400, 'invalid_request', `the request body is not valid JSON: ${(error as Error).message}`);
    }
    return Field.body(parsed);
  }

  json(status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (this.res.destroyed) return;
    const text = JSON.stringify(body);
    this.res.writeHead(status, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(text),
      ...headers,
    });
    this.res.end(text);
  }

  text(status: number, body: string, contentType: string): void {
    this.res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    this.res.end(body);
  }

  openStream(): EventStream {
    this.events ??= new EventStream(this.res);
    return this.events;
  }

  private tooLarge(): HttpError {
    // The rest of the body is not read: close the connection after answering.
    this.res.setHeader('connection', 'close');
    return new HttpError(413, 'too_large', `the request body is over ${this.maxBodyBytes} bytes`);
  }
}
