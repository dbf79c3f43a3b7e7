// onnxruntime-web (wasm backend, SIMD, one thread) under node: the wasm32 peer of bench_cpp.py.
//   node ort_web.mjs MODEL.onnx INPUT.npy REPS   -> prints "min_ms <float>"
import { readFileSync } from "node:fs";
import * as ort from "onnxruntime-web";

const [model, input, reps] = process.argv.slice(2);
const npy = readFileSync(input);
const headerLen = npy.readUInt16LE(8);
const header = npy.subarray(10, 10 + headerLen).toString("latin1");
if (!header.includes("'<f4'")) throw new Error(`${input}: expected float32 data, got ${header}`);
const dims = header.match(/\(([^)]*)\)/)[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
const body = npy.subarray(10 + headerLen);
const data = new Float32Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.length));

ort.env.wasm.numThreads = 1;
ort.env.wasm.simd = true;
const session = await ort.InferenceSession.create(readFileSync(model), { executionProviders: ["wasm"] });
const feeds = { [session.inputNames[0]]: new ort.Tensor("float32", data, dims) };
await session.run(feeds);
let best = Infinity;
for (let i = 0; i < Number(reps); i++) {
  const t = performance.now();
  await session.run(feeds);
  best = Math.min(best, performance.now() - t);
}
console.log(`min_ms ${best}`);
