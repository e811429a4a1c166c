/**
 * The runtime's telemetry on the client side: `runtime/metrics` rendered as Prometheus text
 * exposition (format 0.0.4), and the type of its `runtime.event` notifications.
 *
 * The runtime sends metric families in Prometheus's data model (name, help, one sample per
 * label set; histograms with cumulative buckets ending in "+Inf"), so this renders any family
 * without knowing its name. docs/TELEMETRY.md lists them.
 */
import type { NotificationParams, RuntimeMetrics } from './types/index.js';

/** A `runtime.event` notification: model loaded/unloaded, generation started/completed,
 * error, runtime status (tagged by `event`). */
export type RuntimeEvent = NotificationParams<'runtime.event'>;

/** The Content-Type of `toPrometheus` output, for an HTTP `/metrics` endpoint. */
export const PROMETHEUS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export interface PrometheusOptions {
  /** Labels added to every sample (e.g. `{ instance: 'runtime-1' }`). */
  labels?: Record<string, string>;
}

/** The generated types mark every key of a `dict[str, str]` optional. */
type Labels = Record<string, string | undefined>;

/** Renders `engine.metrics()` as Prometheus text exposition format 0.0.4. */
export function toPrometheus(metrics: RuntimeMetrics, options: PrometheusOptions = {}): string {
  const common = options.labels ?? {};
  const lines: string[] = [];
  const header = (name: string, help: string, type: string) => {
    lines.push(`# HELP ${name} ${escapeHelp(help)}`, `# TYPE ${name} ${type}`);
  };
  for (const family of metrics.counters) {
    header(family.name, family.help, 'counter');
    for (const s of family.samples) lines.push(sampleLine(family.name, { ...common, ...s.labels }, s.value));
  }
  for (const family of metrics.gauges) {
    header(family.name, family.help, 'gauge');
    for (const s of family.samples) lines.push(sampleLine(family.name, { ...common, ...s.labels }, s.value));
  }
  for (const family of metrics.histograms) {
    header(family.name, family.help, 'histogram');
    for (const s of family.samples) {
      const labels = { ...common, ...s.labels };
      for (const bucket of s.buckets) {
        const le = bucket.le === '+Inf' ? '+Inf' : formatNumber(bucket.le);
        lines.push(sampleLine(`${family.name}_bucket`, { ...labels, le }, bucket.cumulative));
      }
      lines.push(sampleLine(`${family.name}_sum`, labels, s.sum));
      lines.push(sampleLine(`${family.name}_count`, labels, s.count));
    }
  }
  return lines.length ? `${lines.join('\n')}\n` : '';
}

function sampleLine(name: string, labels: Labels, value: number): string {
  const pairs = Object.entries(labels)
    .filter((entry): entry is [string, string] => entry[1] !== undefined)
    .map(([k, v]) => `${k}="${escapeLabelValue(v)}"`);
  return `${name}${pairs.length ? `{${pairs.join(',')}}` : ''} ${formatNumber(value)}`;
}

function formatNumber(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}
