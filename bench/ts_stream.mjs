// Decode tok/s of one stream as the TS client sees it (used by bench_throughput.py).
// usage: node bench/ts_stream.mjs MODEL_DIR PROMPT MAX_TOKENS REPEAT
import { createEngine } from '../ts-client/dist/index.js';

const [modelDir, prompt, maxTokens, repeat] = process.argv.slice(2);
const engine = await createEngine({});
try {
  await engine.loadModel({ model_id: 'main', local_path: modelDir });
  const rates = [];
  for (let i = 0; i <= Number(repeat); i++) {
    const stamps = [];
    for await (const chunk of engine.createGenerator({
      model_id: 'main', prompt, max_tokens: Number(maxTokens), temperature: 0,
    })) {
      if (chunk.type === 'token') stamps.push(performance.now());
    }
    rates.push(((stamps.length - 1) * 1000) / (stamps.at(-1) - stamps[0]));
  }
  console.log(JSON.stringify(Math.max(...rates.slice(1))));
} finally {
  await engine.dispose();
}
