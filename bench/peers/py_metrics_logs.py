#!/usr/bin/python3
"""py_metrics_logs.py - the Python peers of bench_telemetry: prometheus_client
(counter increment, histogram observe) and structlog (one JSON event with six
fields, rendered and written to /dev/null), measured the same way as the C
figures: a warm-up, then several repetitions of many iterations, best taken.

Run with the real interpreter (/usr/bin/python3), not a shim. Prints one line
per figure, "peer NAME VALUE ns/op LIBRARY VERSION", for bench/run to read.
BENCH_QUICK=1 shortens the runs (for a smoke test)."""
import importlib.metadata
import os
import sys
import time

QUICK = os.environ.get("BENCH_QUICK") == "1"
REPS = 3 if QUICK else 7


def best_ns_per_op(fn, iters):
    """fn(iters) runs the operation iters times; the best repetition wins."""
    fn(max(1, iters // 10))  # warm-up
    best = float("inf")
    for _ in range(REPS):
        t0 = time.perf_counter_ns()
        fn(iters)
        dt = time.perf_counter_ns() - t0
        best = min(best, dt / iters)
    return best


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def bench_prometheus():
    import prometheus_client as pc

    reg = pc.CollectorRegistry()
    c = pc.Counter("bench_evaluations_total", "bench counter", registry=reg)
    # The default buckets, as the seed's Histogram('evaluation_duration_seconds')
    # gets (14 finite bounds and +Inf); bench_telemetry.c observes the same 16
    # values into the same bounds.
    h = pc.Histogram("bench_evaluation_duration_seconds", "bench histogram", registry=reg)
    values = [0.003, 0.02, 0.07, 0.3, 0.9, 2.2, 4.0, 8.5, 0.0001, 0.6, 1.7, 12.0, 0.04, 0.15, 3.1, 30.0]

    def inc(n):
        f = c.inc
        for _ in range(n):
            f()

    def observe(n):
        f = h.observe
        v = values
        for i in range(n):
            f(v[i & 15])

    iters = 50_000 if QUICK else 300_000
    ver = version("prometheus_client")
    print(f"peer counter_inc {best_ns_per_op(inc, iters):.1f} ns/op prometheus_client {ver}")
    print(f"peer histogram_observe {best_ns_per_op(observe, iters):.1f} ns/op prometheus_client {ver}")


def bench_structlog():
    import structlog

    out = open(os.devnull, "w")  # noqa: SIM115 - lives for the process
    # The seed's setup: JSON lines with a timestamp and the level, plus bound
    # service and logger names: the fields clearbox puts on every line. The
    # PrintLogger flushes each line, i.e. one write(2) per event as clearbox.
    structlog.configure(
        processors=[
            structlog.stdlib.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )
    log = structlog.get_logger("bench").bind(service="clearbox", logger="bench")

    def event(n):
        info = log.info
        for i in range(n):
            info("evaluation.processing", eval_id="ev-0123456789abcdef", code_length=1234,
                 engine="native", queue_depth=i & 15, worker_id="executor-1",
                 language="python")

    iters = 5_000 if QUICK else 40_000
    print(f"peer log_event {best_ns_per_op(event, iters):.1f} ns/op structlog {version('structlog')}")


def main():
    which = sys.argv[1:] or ["metrics", "logs"]
    if "metrics" in which:
        bench_prometheus()
    if "logs" in which:
        bench_structlog()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
