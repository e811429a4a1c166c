/**
 * Reading a JSON request body field by field: each read checks the type and the bounds and
 * gives a typed value, or throws a 400 that names the field by its path in the request
 * (`messages[2].content[0].text`). Fields nobody reads are ignored, as the APIs' own servers
 * ignore keys they do not know.
 */
import { invalidParam } from './errors.js';

export interface Bounds {
  min?: number;
  max?: number;
}

export class Field {
  constructor(
    readonly raw: unknown,
    /** Its path in the request; '' for the body itself. */
    readonly path: string,
  ) {}

  /** The body of a request. */
  static body(raw: unknown): Field {
    const body = new Field(raw, '');
    if (!isRecord(raw)) throw body.invalid('the request body must be a JSON object');
    return body;
  }

  /** Absent and null are the same to these APIs. */
  get present(): boolean {
    return this.raw !== undefined && this.raw !== null;
  }

  /** A key of this object (which must be one). */
  get(key: string): Field {
    const record = this.record();
    return new Field(Object.hasOwn(record, key) ? record[key] : undefined, this.path ? `${this.path}.${key}` : key);
  }

  /** `read(field)` when the field is present, else undefined. */
  optional<T>(read: (field: Field) => T): T | undefined {
    return this.present ? read(this) : undefined;
  }

  required(): this {
    if (!this.present) throw this.invalid('is required');
    return this;
  }

  string(options: { nonEmpty?: boolean } = {}): string {
    if (typeof this.required().raw !== 'string') throw this.invalid('must be a string');
    if (options.nonEmpty && this.raw === '') throw this.invalid('must not be empty');
    return this.raw as string;
  }

  number(bounds: Bounds = {}): number {
    if (typeof this.required().raw !== 'number' || !Number.isFinite(this.raw)) throw this.invalid('must be a number');
    return this.within(this.raw as number, bounds);
  }

  integer(bounds: Bounds = {}): number {
    if (!Number.isInteger(this.required().raw)) throw this.invalid('must be an integer');
    return this.within(this.raw as number, bounds);
  }

  boolean(): boolean {
    if (typeof this.required().raw !== 'boolean') throw this.invalid('must be a boolean');
    return this.raw as boolean;
  }

  oneOf<const T extends string>(values: readonly T[]): T {
    const value = this.string();
    if (!(values as readonly string[]).includes(value)) {
      throw this.invalid(`must be one of ${values.map((v) => JSON.stringify(v)).join(', ')}, got ${JSON.stringify(value)}`);
    }
    return value as T;
  }

  /** The value as a JSON object, unchecked inside (a JSON Schema, a tool's input). */
  record(): Record<string, unknown> {
    if (!isRecord(this.required().raw)) throw this.invalid('must be an object');
    return this.raw as Record<string, unknown>;
  }

  array(bounds: Bounds = {}): Field[] {
    const raw = this.required().raw;
    if (!Array.isArray(raw)) throw this.invalid('must be an array');
    if (bounds.min !== undefined && raw.length < bounds.min) throw this.invalid(`must have at least ${bounds.min} item(s)`);
    if (bounds.max !== undefined && raw.length > bounds.max) throw this.invalid(`must have at most ${bounds.max} item(s)`);
    return raw.map((item, index) => new Field(item, `${this.path}[${index}]`));
  }

  /** A string, or an array of strings (`stop`, `input`). */
  strings(bounds: Bounds = {}): string[] {
    if (typeof this.required().raw === 'string') return [this.raw as string];
    return this.array(bounds).map((item) => item.string());
  }

  get isString(): boolean {
    return typeof this.raw === 'string';
  }

  get isArray(): boolean {
    return Array.isArray(this.raw);
  }

  invalid(message: string): Error {
    return invalidParam(this.path || 'body', message);
  }

  private within(value: number, { min, max }: Bounds): number {
    if (min !== undefined && value < min) throw this.invalid(`must be >= ${min}, got ${value}`);
    if (max !== undefined && value > max) throw this.invalid(`must be <= ${max}, got ${value}`);
    return value;
  }
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
