// js_spans.mjs - the JavaScript peer of bench_telemetry's span figure:
// OpenTelemetry's JS SDK (@opentelemetry/sdk-trace-base, versions pinned in
// package.json / package-lock.json), a BatchSpanProcessor with its default
// settings in front of an exporter that does nothing, and per span: start,
// four setAttribute calls (as the seed writes them), end.
//
// The loop yields to the event loop every BATCH spans. Without that the
// processor never gets to hand a batch to the exporter (its bookkeeping runs
// in a promise callback), the queue fills at 2048 and every later span is
// dropped for the cost of a compare - the figure would measure dropping, not
// recording. The export count is checked after a flush so a run that dropped
// spans says so instead of printing a flattering number.
//
// Prints "peer span_start_end VALUE ns/op @opentelemetry/sdk-trace-base VERSION".
// BENCH_QUICK=1 shortens the run.
import { createRequire } from 'node:module';
import { setImmediate as yieldLoop } from 'node:timers/promises';
import { BasicTracerProvider, BatchSpanProcessor } from '@opentelemetry/sdk-trace-base';

const require = createRequire(import.meta.url);
const sdkVersion = require('@opentelemetry/sdk-trace-base/package.json').version;

const QUICK = process.env.BENCH_QUICK === '1';
const REPS = QUICK ? 3 : 7;
const ITERS = QUICK ? 20_000 : 200_000;
const BATCH = 256;

let exported = 0;
const noopExporter = {
  export(spans, done) {
    exported += spans.length;
    done({ code: 0 /* ExportResultCode.SUCCESS */ });
  },
  shutdown() { return Promise.resolve(); },
  forceFlush() { return Promise.resolve(); },
};

const processor = new BatchSpanProcessor(noopExporter);
const provider = new BasicTracerProvider({ spanProcessors: [processor] });
const tracer = provider.getTracer('clearbox-bench');

async function run(n) {
  for (let done = 0; done < n; done += BATCH) {
    const m = Math.min(BATCH, n - done);
    for (let i = 0; i < m; i++) {
      const span = tracer.startSpan('evaluation.execute');
      span.setAttribute('eval_id', 'ev-0123456789abcdef');
      span.setAttribute('code_length', 1234);
      span.setAttribute('language', 'python');
      span.setAttribute('engine', 'native');
      span.end();
    }
    await yieldLoop();
  }
}

async function bestNsPerOp(n) {
  await run(Math.max(BATCH, n / 10)); // warm-up (JIT)
  let best = Infinity;
  for (let r = 0; r < REPS; r++) {
    const t0 = process.hrtime.bigint();
    await run(n);
    const dt = Number(process.hrtime.bigint() - t0);
    best = Math.min(best, dt / n);
  }
  return best;
}

const ns = await bestNsPerOp(ITERS);
const total = Math.max(BATCH, ITERS / 10) + REPS * ITERS;
await provider.forceFlush();
if (exported !== total) {
  console.error(`js_spans: only ${exported} of ${total} spans reached the exporter (dropped)`);
  process.exitCode = 1;
}
console.log(`peer span_start_end ${ns.toFixed(1)} ns/op @opentelemetry/sdk-trace-base ${sdkVersion}`);
await provider.shutdown();
