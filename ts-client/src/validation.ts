/**
 * Validators compiled (ajv, JSON Schema 2020-12) from the generated schemas: the same
 * documents the types in ./types come from, so a frame that passes has the type it claims.
 */
import Ajv2020Module, { type ErrorObject as AjvIssue, type ValidateFunction } from 'ajv/dist/2020.js';

import type { MethodName, NotificationMethod, ValidationIssue } from './types/index.js';
import { envelopeSchema, methodsSchema, notificationsSchema, METHOD_SCHEMA_KEYS, NOTIFICATION_METHODS } from './types/index.js';

// ajv is CommonJS: under NodeNext its default import is the module object.
const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

/**
 * Finish reasons that compat runtimes (kr-serve-mlx) sent and that clients keep accepting
 * (PROTOCOL.md "Notifications"); the schema only lists what this runtime sends.
 */
export const COMPAT_FINISH_REASONS = ['completed', 'no_output'] as const;

export type Issues = ValidationIssue[];

export class ProtocolValidator {
  // strictTypes off: the generated documents' roots list `properties` without `type`.
  private readonly ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false });
  private readonly cache = new Map<string, ValidateFunction>();

  constructor() {
    // OpenAPI-style annotation on tagged unions; validation comes from the anyOf itself.
    this.ajv.addKeyword({ keyword: 'discriminator', schemaType: 'object' });
    this.ajv.addSchema(withoutKey(methodsSchema, 'methods'), 'methods.json');
    this.ajv.addSchema(withoutKey(envelopeSchema, 'error_codes'), 'envelope.json');
    this.ajv.addSchema(widenFinishReasons(notificationsSchema), 'notifications.json');
  }

  /** Issues of a method's params (empty when valid). */
  params(method: MethodName, value: unknown): Issues {
    return this.check(`methods.json#/properties/${pointer(METHOD_SCHEMA_KEYS[method].params)}`, value);
  }

  result(method: MethodName, value: unknown): Issues {
    return this.check(`methods.json#/properties/${pointer(METHOD_SCHEMA_KEYS[method].result)}`, value);
  }

  /** Issues of a notification's params; null when the method is not one the schema knows. */
  notification(method: string, params: unknown): Issues | null {
    if (!(NOTIFICATION_METHODS as readonly string[]).includes(method)) return null;
    return this.check(`notifications.json#/properties/${pointer(method as NotificationMethod)}`, params);
  }

  /** Issues of an envelope frame: 'result', 'error', 'notification', 'error_object'. */
  frame(kind: 'result' | 'error' | 'notification' | 'error_object', value: unknown): Issues {
    return this.check(`envelope.json#/properties/${kind}`, value);
  }

  private check(ref: string, value: unknown): Issues {
    let validate = this.cache.get(ref);
    if (!validate) {
      validate = this.ajv.compile({ $ref: ref });
      this.cache.set(ref, validate);
    }
    return validate(value) ? [] : toIssues(validate.errors ?? []);
  }
}

let shared: ProtocolValidator | undefined;

/** One validator per process: compiling is the expensive part and the schemas never change. */
export function protocolValidator(): ProtocolValidator {
  shared ??= new ProtocolValidator();
  return shared;
}

/** ajv errors → the protocol's issue shape, with dotted paths like the runtime's `field`. */
export function toIssues(errors: AjvIssue[]): Issues {
  const issues = errors.map((e) => {
    let path = jsonPointerToPath(e.instancePath);
    if (e.keyword === 'required') {
      const missing = (e.params as { missingProperty: string }).missingProperty;
      path = path ? `${path}.${missing}` : missing;
    } else if (e.keyword === 'additionalProperties') {
      const extra = (e.params as { additionalProperty: string }).additionalProperty;
      path = path ? `${path}.${extra}` : extra;
    }
    return { path, message: e.message ?? e.keyword, code: e.keyword };
  });
  // anyOf failures repeat the branch errors; keep the most specific (deepest) first.
  return issues.sort((a, b) => b.path.length - a.path.length);
}

function jsonPointerToPath(p: string): string {
  return p
    .split('/')
    .slice(1)
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((s) => (/^\d+$/.test(s) ? `[${s}]` : `.${s}`))
    .join('')
    .replace(/^\./, '');
}

function pointer(key: string): string {
  return key.replace(/~/g, '~0').replace(/\//g, '~1');
}

function withoutKey(doc: Record<string, unknown>, key: string): Record<string, unknown> {
  const copy = { ...doc };
  delete copy[key];
  return copy;
}

function widenFinishReasons(doc: Record<string, unknown>): Record<string, unknown> {
  const copy = structuredClone(doc) as { $defs: { StreamCompleted: { properties: { finish_reason: { enum: string[] } } } } };
  const reasons = copy.$defs.StreamCompleted.properties.finish_reason;
  reasons.enum = [...reasons.enum, ...COMPAT_FINISH_REASONS];
  return copy as unknown as Record<string, unknown>;
}
