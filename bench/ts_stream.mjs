// Decode tok/s of one stream as the TS client sees it (used by bench_throughput.py).
// usage: node bench/ts_stream.mjs MODEL_DIR PROMPT
// Each line read from stdin (a max_tokens) runs one greedy stream; its rate is printed as a
// line of JSON, so the caller can alternate these streams with its other measurements.
import { createInterface } from 'node:readline';
import { createEngine } from '../ts-client/dist/index.js';

const [modelDir, prompt] = process.argv.slice(2);
const engine = await createEngine({});
try {
  await engine.loadModel({ model_id: 'main', local_path: modelDir });
  for await (const line of createInterface({ input: process.stdin })) {
    const stamps = [];
    for await (const chunk of engine.createGenerator({
      model_id: 'main', prompt, max_tokens: Number(line), temperature: 0,
    })) {
      if (chunk.type === 'token') stamps.push(performance.now());
    }
    console.log(JSON.stringify(((stamps.length - 1) * 1000) / (stamps.at(-1) - stamps[0])));
  }
} finally {
  await engine.dispose();
}
