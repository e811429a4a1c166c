/**
 * `mlx-serving serve`: an OpenAI- and Anthropic-compatible HTTP server over one engine, on
 * Node's own `http`. This module owns the transport concerns (routing, the API key, request
 * bodies, errors, its own metrics); openai.ts and anthropic.ts own each API's shapes. Every
 * generation goes through the engine, so concurrent requests share the runtime's batch.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

import { silentLogger, type Logger } from '../logger.js';
import { PROMETHEUS_CONTENT_TYPE, toPrometheus } from '../metrics.js';
import type { CounterFamily, RuntimeMetrics } from '../types/index.js';
import { anthropicErrors, anthropicModels, messages } from './anthropic.js';
import { HttpError, httpErrorOf, retryAfter, type ErrorDialect } from './errors.js';
import { Exchange } from './exchange.js';
import type { ServedEngine } from './generation.js';
import { chatCompletions, completions, embeddings, openaiErrors, openaiModel, openaiModels } from './openai.js';

export interface HttpServerOptions {
  /** When set, every route but /health needs it, as `Authorization: Bearer KEY` (OpenAI)
   * or `x-api-key: KEY` (Anthropic). */
  apiKey?: string;
  /** Request log (debug) and failures (warn). */
  logger?: Logger;
  /** Largest request body; default the runtime's `limits.max_frame_bytes`, else 16 MiB. */
  maxBodyBytes?: number;
}

interface Route {
  /** The API whose error shape this route answers with. */
  errors: ErrorDialect;
  /** Served without the API key. */
  open?: boolean;
  handle(exchange: Exchange): Promise<void>;
}

const DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024;

export class HttpServer {
  readonly server: Server;
  private readonly keyDigest: Buffer | undefined;
  private readonly logger: Logger;
  private readonly routes: Map<string, Route>;
  /** Answers by route and status, for /metrics. */
  private readonly answered = new Map<string, number>();
  private inFlight = 0;

  constructor(
    private readonly engine: ServedEngine,
    private readonly options: HttpServerOptions = {},
  ) {
    this.logger = options.logger ?? silentLogger;
    this.keyDigest = options.apiKey ? digest(options.apiKey) : undefined;
    this.routes = new Map<string, Route>([
      ['GET /health', { errors: openaiErrors, open: true, handle: (ex) => this.health(ex) }],
      ['GET /metrics', { errors: openaiErrors, handle: (ex) => this.metrics(ex) }],
      ['GET /v1/models', { errors: openaiErrors, handle: (ex) => (isAnthropic(ex.req) ? anthropicModels(ex) : openaiModels(ex)) }],
      ['POST /v1/chat/completions', { errors: openaiErrors, handle: chatCompletions }],
      ['POST /v1/completions', { errors: openaiErrors, handle: completions }],
      ['POST /v1/embeddings', { errors: openaiErrors, handle: embeddings }],
      ['POST /v1/messages', { errors: anthropicErrors, handle: messages }],
    ]);
    // Streams are many small writes: send each at once (Nagle would hold them back).
    this.server = createServer({ noDelay: true }, (req, res) => void this.dispatch(req, res));
  }

  /** Listens (default 127.0.0.1:8080: loopback only); resolves with the server's base URL. */
  async listen(port = 8080, host = '127.0.0.1'): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    return this.url;
  }

  get url(): string {
    const address = this.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    return `http://${host}:${address.port}`;
  }

  /** Stops accepting connections and ends the open ones (their streams are cancelled). */
  async close(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeAllConnections();
    await closed;
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const path = (req.url ?? '/').split('?')[0]!;
    const { key, route } = this.route(req.method ?? 'GET', path);
    const errors = route?.errors ?? (isAnthropic(req) ? anthropicErrors : openaiErrors);
    const exchange = new Exchange(req, res, this.engine, this.maxBodyBytes());
    this.inFlight += 1;
    try {
      if (!route) throw this.unrouted(req.method ?? 'GET', path);
      if (!route.open) this.authorize(req);
      await route.handle(exchange);
    } catch (error) {
      // Nothing may escape: the request handler's promise has nobody to reject to.
      await this.fail(exchange, errors, error).catch(() => res.destroy());
    } finally {
      this.inFlight -= 1;
      const label = `${key}\u0000${res.statusCode}`;
      this.answered.set(label, (this.answered.get(label) ?? 0) + 1);
      this.logger.debug(`${req.method} ${path} ${res.statusCode} ${(performance.now() - started).toFixed(1)} ms`);
    }
  }

  private route(method: string, path: string): { key: string; route: Route | undefined } {
    const key = `${method} ${path}`;
    const route = this.routes.get(key);
    if (route) return { key, route };
    if (method === 'GET' && path.startsWith('/v1/models/')) {
      const handle = (ex: Exchange) => openaiModel(ex, modelIdOf(path.slice('/v1/models/'.length)));
      return { key: 'GET /v1/models/{id}', route: { errors: openaiErrors, handle } };
    }
    return { key: 'other', route: undefined };
  }

  private unrouted(method: string, path: string): HttpError {
    const allowed = [...this.routes.keys()].filter((k) => k.endsWith(` ${path}`)).map((k) => k.split(' ')[0]!);
    if (allowed.length) {
      const allow = allowed.join(', ');
      return new HttpError(405, 'invalid_request', `${method} is not allowed on ${path}; use ${allow}`, null, { allow });
    }
    return new HttpError(404, 'not_found', `no route ${method} ${path}`);
  }

  /** The key is compared as SHA-256 digests: constant time, whatever the lengths. */
  private authorize(req: IncomingMessage): void {
    if (!this.keyDigest) return;
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    const header = req.headers['x-api-key'];
    const given = bearer ?? (typeof header === 'string' ? header : undefined);
    if (given === undefined || !timingSafeEqual(digest(given.trim()), this.keyDigest)) {
      throw new HttpError(401, 'authentication', given === undefined ? 'an API key is required' : 'invalid API key');
    }
  }

  private async fail(exchange: Exchange, errors: ErrorDialect, error: unknown): Promise<void> {
    const { res } = exchange;
    const failure = httpErrorOf(error, exchange.fieldNames);
    if (failure.status >= 500) this.logger.warn(`${exchange.req.method} ${exchange.req.url}: ${failure.message}`);
    if (res.destroyed) return; // the client left; nobody to tell
    const stream = exchange.stream;
    if (stream) {
      const { event, data } = errors.streamEvent(failure);
      await stream.send(data, event);
      stream.end();
      return;
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    exchange.json(failure.status, errors.body(failure), failure.headers);
  }

  private maxBodyBytes(): number {
    return this.options.maxBodyBytes ?? this.engine.info?.limits.max_frame_bytes ?? DEFAULT_MAX_BODY_BYTES;
  }

  // -- routes of the server itself -------------------------------------------------------

  /** 200 while the runtime answers, 503 (with why) while it does not. */
  private async health(exchange: Exchange): Promise<void> {
    try {
      const state = await this.engine.runtimeState({ timeoutMs: 5_000, signal: exchange.signal });
      exchange.json(200, {
        status: 'ok',
        models: state.loaded_models.map((m) => m.model_id),
        active_streams: state.active_streams,
      });
    } catch (error) {
      exchange.json(503, { status: 'unavailable', error: (error as Error).message }, retryAfter(1));
    }
  }

  /** The runtime's metrics and the server's own, as Prometheus text. */
  private async metrics(exchange: Exchange): Promise<void> {
    const runtime = await this.engine.metrics({ signal: exchange.signal });
    exchange.text(200, toPrometheus(runtime) + toPrometheus(this.ownMetrics()), PROMETHEUS_CONTENT_TYPE);
  }

  private ownMetrics(): RuntimeMetrics {
    const requests: CounterFamily = {
      name: 'mlx_serving_http_requests_total',
      help: 'HTTP requests answered, by route and status.',
      samples: [...this.answered].map(([label, value]) => {
        const [route, status] = label.split('\u0000') as [string, string];
        return { labels: { route, status }, value };
      }),
    };
    const inFlight = {
      name: 'mlx_serving_http_requests_in_flight',
      help: 'HTTP requests being answered now (streams included).',
      samples: [{ labels: {}, value: this.inFlight }],
    };
    return { collector: 'native', counters: [requests], gauges: [inFlight], histograms: [] };
  }
}

/** An HTTP server over the engine; call `listen()` to serve. */
export function createHttpServer(engine: ServedEngine, options: HttpServerOptions = {}): HttpServer {
  return new HttpServer(engine, options);
}

/** Anthropic's SDK sends its API version on every request; OpenAI's clients do not. */
function isAnthropic(req: IncomingMessage): boolean {
  return req.headers['anthropic-version'] !== undefined;
}

function modelIdOf(escaped: string): string {
  try {
    return decodeURIComponent(escaped);
  } catch {
    throw new HttpError(400, 'invalid_request', `the model id ${JSON.stringify(escaped)} is not valid percent-encoding`);
  }
}

function digest(key: string): Buffer {
  return createHash('sha256').update(key).digest();
}
