// Decode throughput through `mlx-serving serve` (the official `openai` client, streaming over
// HTTP) against the typed client on the same model, at 1 and 8 concurrent streams.
//
// usage: node bench/ts_http_bench.mjs [MODEL_DIR] [--tokens N] [--rounds R] [--streams 1,8]
//   (build the client first: cd ts-client && npm run build). Without MODEL_DIR a random-weight
//   model is generated: small models make the per-token cost of each path show.
//
// Each path has a runtime of its own; rounds alternate between them. EOS is banned, so every
// stream makes exactly N tokens. The figure is aggregate tokens per second over the wall time
// from the first request to the last token, the best of R rounds (the least disturbed by
// other work on the machine). Beside it, the CPU time per token of the Node processes, which
// the machine's load does not change much: what the HTTP path costs where cores are scarce.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { createEngine, runtimeProcessSpec } from '../ts-client/dist/index.js';
import OpenAI from '../ts-client/node_modules/openai/index.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { tokens: { type: 'string', default: '256' }, rounds: { type: 'string', default: '8' }, streams: { type: 'string', default: '1,8' } },
});
const tokens = Number(values.tokens);
const rounds = Number(values.rounds);
const concurrency = values.streams.split(',').map(Number);

function run(command, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${command} exited with ${code}`))));
  });
}

let modelDir = positionals[0];
let scratch;
if (!modelDir) {
  scratch = mkdtempSync(join(tmpdir(), 'mlx-serving-bench-'));
  modelDir = join(scratch, 'model');
  const spec = runtimeProcessSpec({ runtimeArgs: ['make-model', modelDir] });
  await run(spec.command, spec.args);
}

const messages = (i) => [{ role: 'user', content: `Tell me a long story, number ${i}.` }];

/** CPU seconds a process has used (Linux: /proc; elsewhere unknown, 0). */
function cpuSeconds(pid) {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // utime + stime, in clock ticks
  } catch {
    return 0;
  }
}

/**
 * Runs `streams` generations at once through `path.one(i)` (each resolves with its token
 * count): tokens per second, and the CPU time per token of this process and of the path's
 * server process (none for the typed client), in microseconds.
 */
async function measure(streams, path) {
  const cpu = process.cpuUsage();
  const serverCpu = path.pid ? cpuSeconds(path.pid) : 0;
  const started = performance.now();
  const counts = await Promise.all(Array.from({ length: streams }, (_, i) => path.one(i)));
  const seconds = (performance.now() - started) / 1000;
  const total = counts.reduce((a, b) => a + b, 0);
  if (total !== streams * tokens) throw new Error(`expected ${streams * tokens} tokens, got ${total}`);
  const used = process.cpuUsage(cpu);
  return {
    rate: total / seconds,
    clientUs: (used.user + used.system) / total,
    serverUs: path.pid ? ((cpuSeconds(path.pid) - serverCpu) * 1e6) / total : 0,
  };
}

/** Bans the model's end of turn, so that every stream runs to max_tokens. */
const logit_bias = await (async () => {
  const engine = await createEngine();
  try {
    await engine.loadModel({ model_id: 'bench', local_path: modelDir });
    const { tokens: eos } = await engine.tokenize({ model_id: 'bench', text: '<|im_end|>' });
    return Object.fromEntries(eos.map((id) => [String(id), -100]));
  } finally {
    await engine.dispose();
  }
})();

/** The typed client: generations read in this process. */
async function typedPath() {
  const engine = await createEngine();
  await engine.loadModel({ model_id: 'bench', local_path: modelDir });
  const one = async (i) => {
    let count = 0;
    const params = { model_id: 'bench', messages: messages(i), max_tokens: tokens, temperature: 0.7, seed: i, logit_bias };
    for await (const chunk of engine.createGenerator(params)) if (chunk.type === 'token') count += 1;
    return count;
  };
  return { one, close: () => engine.dispose() };
}

/** `mlx-serving serve` in a process of its own, read through the openai client. */
async function httpPath() {
  const cli = join(here, '..', 'ts-client', 'dist', 'cli.js');
  const server = spawn(process.execPath, [cli, 'serve', '--port', '0', '--model', `bench=${modelDir}`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const url = await new Promise((resolve, reject) => {
    let out = '';
    server.stdout.on('data', (data) => {
      out += data;
      const match = /listening on (\S+)/.exec(out);
      if (match) resolve(match[1]);
    });
    server.on('exit', (code) => reject(new Error(`serve exited with ${code}`)));
  });
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused' });
  const one = async (i) => {
    const stream = await client.chat.completions.create({
      model: 'bench', messages: messages(i), max_tokens: tokens, temperature: 0.7, seed: i, logit_bias,
      stream: true, stream_options: { include_usage: true },
    });
    let count = 0;
    for await (const chunk of stream) if (chunk.usage) count = chunk.usage.completion_tokens;
    return count;
  };
  return {
    one,
    pid: server.pid,
    close: async () => {
      server.kill('SIGTERM');
      await new Promise((resolve) => server.on('exit', resolve));
    },
  };
}

// Both paths stay up (an idle runtime takes no CPU) and are measured turn about, so that
// the load of a shared machine falls on both alike.
const typed = await typedPath();
const http = await httpPath();
const results = [];
try {
  for (const streams of concurrency) {
    await measure(streams, typed); // warm-up of this batch size
    await measure(streams, http);
    const typedRuns = [];
    const httpRuns = [];
    for (let round = 0; round < rounds; round++) {
      typedRuns.push(await measure(streams, typed));
      httpRuns.push(await measure(streams, http));
      console.error(`  ${streams} stream(s), round ${round + 1}: typed ${typedRuns.at(-1).rate.toFixed(1)}, http ${httpRuns.at(-1).rate.toFixed(1)} tok/s`);
    }
    const best = (runs) => Math.max(...runs.map((r) => r.rate));
    const median = (values) => values.sort((a, b) => a - b)[values.length >> 1];
    results.push({
      streams,
      tokens_per_stream: tokens,
      typed_tok_s: +best(typedRuns).toFixed(1),
      http_tok_s: +best(httpRuns).toFixed(1),
      ratio: +(best(httpRuns) / best(typedRuns)).toFixed(3),
      // Node's CPU per token (medians): the typed client's; the server's and the openai client's.
      typed_client_us_per_token: Math.round(median(typedRuns.map((r) => r.clientUs))),
      http_server_us_per_token: Math.round(median(httpRuns.map((r) => r.serverUs))),
      http_client_us_per_token: Math.round(median(httpRuns.map((r) => r.clientUs))),
    });
  }
} finally {
  await typed.close();
  await http.close();
}
console.log(JSON.stringify(results, null, 2));
if (scratch) rmSync(scratch, { recursive: true, force: true });
