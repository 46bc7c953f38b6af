"""Side-by-side invoke latency of TFLite models with LiteRT (ai_edge_litert + numpy only).

The models are interleaved (rounds of a block of invokes per model, the order reversed every other
round) so a background load drifting over time hits every model alike; quote the ratios to the
first model, not the absolute times.

    python scripts/bench_invoke.py --models float32.tflite int8.tflite --threads 1 --runs 2000

``--no-amx`` (x86-64 Linux, diagnostic) denies this process the AMX tile permission before LiteRT
starts, so XNNPACK falls back from its AMX int8 kernels to AVX512-VNNI ones; run with and without
it to see how much of an int8 model's time the AMX kernels cost on a CPU that has them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from edge.runtime import deny_amx


def _interpreter(path: Path, threads: int, no_delegate: bool, latest: bool):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict = {"model_path": str(path), "num_threads": threads}
    if no_delegate:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if latest:
        kwargs["experimental_default_delegate_latest_features"] = True
    it = Interpreter(**kwargs)
    it.allocate_tensors()
    rng = np.random.default_rng(0)
    for d in it.get_input_details():
        dtype = np.dtype(d["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = rng.integers(info.min, int(info.max) + 1, d["shape"], dtype=dtype)
        else:
            x = rng.uniform(0, 255, d["shape"]).astype(dtype)  # pixel values, as the device feeds
        it.set_tensor(d["index"], x)
    return it


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--models", nargs="+", type=Path, required=True, help="TFLite files (ratios to the first)")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--runs", type=int, default=2000, help="timed invokes per model")
    p.add_argument("--block", type=int, default=50, help="invokes per model per round")
    p.add_argument("--warmup", type=int, default=50, help="untimed invokes per model first")
    p.add_argument("--no-delegate", action="store_true", help="TFLite builtin kernels only, no XNNPACK")
    p.add_argument("--latest", action="store_true", help="XNNPACK with 'latest features' enabled")
    p.add_argument("--no-amx", action="store_true", help="deny XNNPACK the AMX kernels (see above)")
    args = p.parse_args(argv)
    if args.runs < 1 or args.block < 1 or args.threads < 1 or args.warmup < 0:
        p.error("--runs, --block and --threads must be positive, --warmup not negative")
    for m in args.models:
        if not m.is_file():
            p.error(f"{m}: not found")
    if args.no_amx and not deny_amx():
        raise SystemExit("--no-amx: AMX cannot be denied here (needs x86-64 Linux with seccomp)")

    its = [_interpreter(m, args.threads, args.no_delegate, args.latest) for m in args.models]
    for it in its:
        for _ in range(args.warmup):
            it.invoke()
    times: list[list[float]] = [[] for _ in its]
    clock = time.perf_counter
    rounds = -(-args.runs // args.block)
    for r in range(rounds):
        order = range(len(its)) if r % 2 == 0 else reversed(range(len(its)))
        n = min(args.block, args.runs - r * args.block)
        for i in order:
            invoke, ts = its[i].invoke, times[i]
            for _ in range(n):
                t = clock()
                invoke()
                ts.append(clock() - t)
    med = [float(np.median(t)) * 1e3 for t in times]
    p90 = [float(np.percentile(t, 90)) * 1e3 for t in times]
    width = max(len(str(m)) for m in args.models)
    flags = [f"threads={args.threads}", f"{args.runs} invokes each in blocks of {args.block}"]
    flags += [
        f
        for f, on in (("no delegate", args.no_delegate), ("latest", args.latest), ("no AMX", args.no_amx))
        if on
    ]
    print(f"{'model':<{width}}  {'median ms':>9}  {'p90 ms':>7}  {'ratio':>6}   ({', '.join(flags)})")
    for m, a, b in zip(args.models, med, p90, strict=True):
        print(f"{m!s:<{width}}  {a:9.3f}  {b:7.3f}  {a / med[0]:6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
