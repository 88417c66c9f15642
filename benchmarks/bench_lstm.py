"""LSTM inference throughput (pixel-steps per second per core) next to the matrix-multiply bound.

A *pixel-step* is one pixel advanced by one day. Rows:

* ``lstm module``: the network of :mod:`globalflux.models.lstm` (``nn.LSTM`` hidden 128 + head)
  in eval mode on a (pixels, days, inputs) batch, no gradient.
* ``lstm_chunk``: the unit task of ``predict_cube`` (numpy in and out, asinh/min-max scaling,
  state in and out, inverse transform): what a Dask task really costs.
* ``gate matmul bound``: only the four gate products of every step, one
  ``(B, in + hidden) @ (in + hidden, 4 * hidden)`` matmul per day (torch.mm), the floor any LSTM
  implementation pays; its pixel-steps/s is the measured upper bound for the rows above. On CPU
  ``of bound`` is relative to it.
* On CUDA (rows run automatically when ``torch.cuda.is_available()``), with TF32 enabled for
  matmuls and cuDNN: the same rows (``lstm_chunk`` with ``device="cuda"``: numpy in and out), the
  measured TF32 gate matmul, and ``TF32 peak bound``: the GPU's dense TF32 tensor-core peak
  (datasheet value for known GPUs, or ``--tf32-peak`` TFLOP/s) divided by the gate FLOPs of one
  pixel-step (``2 * (in + hidden) * 4 * hidden``). On CUDA ``of bound`` is relative to that peak.

Per-core numbers divide by the torch thread count. The machine may be shared: the context line
records the load.

Run: ``python benchmarks/bench_lstm.py [--quick] [--tf32-peak TFLOPS]``
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


#: dense (no sparsity) TF32 tensor-core peaks, TFLOP/s, from the vendors' datasheets
TF32_PEAK_TFLOPS = {"H200": 494.7, "H100 SXM": 494.7, "H100 NVL": 417.5, "H100 PCIe": 378.0,
                    "H100": 378.0, "A100": 156.0, "A30": 82.0, "A10": 62.5, "L40S": 183.0,
                    "L40": 90.5, "L4": 60.0, "RTX 4090": 82.6, "RTX A6000": 77.4}


def tf32_peak(name: str) -> float | None:
    """Dense TF32 peak (FLOP/s) of a GPU by its CUDA device name, or None when unknown."""
    for key in sorted(TF32_PEAK_TFLOPS, key=len, reverse=True):
        if key.lower() in name.lower():
            return TF32_PEAK_TFLOPS[key] * 1e12
    return None


def bench(device: str, threads: int, pixels: int, days: int, n_in: int, hidden: int,
          repeat: int, peak: float | None = None) -> list[dict]:
    import torch

    from globalflux.models.lstm import EffluxLSTM, LSTMWeights, Scaler, lstm_chunk

    torch.set_num_threads(threads)
    rows = []
    n_dyn, n_stat = 4, n_in - 4
    net = EffluxLSTM(n_dyn, n_stat, hidden, 0.2).eval().to(device)
    x = torch.randn(pixels, days, n_dyn, device=device)
    s = torch.randn(pixels, n_stat, device=device)

    def run_module():
        with torch.no_grad():
            net(x, s)
        _sync(device)

    t = _best(run_module, repeat)
    per = threads if device == "cpu" else 1
    rows.append(("lstm module", t))

    if True:  # the Dask task: numpy in/out, scaling, state; the network on `device`
        sd = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        w = LSTMWeights(sd, Scaler(np.zeros(n_dyn), np.ones(n_dyn), np.zeros(n_dyn)),
                        Scaler(np.zeros(n_stat), np.ones(n_stat), np.zeros(n_stat)),
                        Scaler(np.zeros(1), np.ones(1), np.zeros(1)), hidden, n_dyn, n_stat)
        side = int(np.sqrt(pixels))
        ny, nx = side, pixels // side
        rng = np.random.default_rng(0)
        drv = [rng.normal(size=(days, ny, nx)) for _ in range(n_dyn)]
        sta = tuple(rng.normal(size=(ny, nx)) for _ in range(n_stat))
        mask = np.ones((ny, nx), bool)

        def run_chunk():
            lstm_chunk(w, mask, sta, None, *drv, batch_pixels=pixels, torch_threads=threads,
                       device=device)
            _sync(device)

        tc = _best(run_chunk, repeat)
        rows.append(("lstm_chunk (predict_cube task)", tc * pixels / (ny * nx)))

    a = torch.randn(pixels, n_in + hidden, device=device)
    b = torch.randn(n_in + hidden, 4 * hidden, device=device)

    def run_mm():
        for _ in range(days):
            torch.mm(a, b)
        _sync(device)

    tm = _best(run_mm, repeat)
    flops = 2.0 * pixels * days * (n_in + hidden) * 4 * hidden
    if device == "cuda":
        rows.append(("gate matmul, measured (TF32)", tm))
        if peak:
            tm = flops / peak
            rows.append(("TF32 peak bound", tm))
    else:
        rows.append(("gate matmul bound", tm))
    out = []
    for name, sec in rows:
        ps = pixels * days / sec
        out.append({"device": device, "threads": threads if device == "cpu" else "-",
                    "pixels": pixels, "days": days, "what": name, "seconds": sec,
                    "pixel_steps_per_s": ps, "per_core": ps / per,
                    "gate_gflops": flops / sec / 1e9, "of_bound": tm / sec})
    return out


def main(argv=None) -> int:
    import torch

    import globalflux

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--tf32-peak", type=float, default=None,
                   help="dense TF32 peak of the GPU in TFLOP/s (default: datasheet value by name)")
    p.add_argument("--inputs", type=int, default=21,
                   help="inputs per step: drivers + statics (the COSORE recipe has 4 + 17)")
    args = p.parse_args(argv)
    days = 90 if args.quick else 365
    pix_list = (1024,) if args.quick else (1024, 4096)
    repeat = 1 if args.quick else 3
    ncores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# globalflux {globalflux.__version__}, torch {torch.__version__}, numpy {np.__version__}, "
          f"Python {platform.python_version()}")
    print(f"# CPU: {_cpu_name()}, {ncores} logical cores, load average (1 min) {load:.2f} "
          "(shared machine: other jobs may run)")
    print(f"# LSTM hidden {args.hidden}, {args.inputs} inputs per step, {days} days per sequence; "
          "best of %d runs" % repeat)
    rows = []
    for threads in sorted({1, ncores}):
        for pixels in pix_list:
            rows += bench("cpu", threads, pixels, days, args.inputs, args.hidden, repeat)
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        peak = args.tf32_peak * 1e12 if args.tf32_peak else tf32_peak(name)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"# CUDA: {name}, TF32 on; dense TF32 peak "
              + (f"{peak / 1e12:.1f} TFLOP/s" if peak else "unknown (pass --tf32-peak): "
                 "of bound is relative to the measured TF32 gate matmul"))
        for pixels in (4096, 65536):
            rows += bench("cuda", 1, pixels, days, args.inputs, args.hidden, repeat, peak)
    else:
        print("# CUDA: not available on this machine")
    hdr = (f"{'device':6} {'thr':>3} {'pixels':>6} {'days':>4} {'what':32} {'seconds':>8} "
           f"{'pixel-steps/s':>14} {'per core':>12} {'gate GFLOP/s':>12} {'of bound':>8}")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(f"{r['device']:6} {r['threads']!s:>3} {r['pixels']:>6} {r['days']:>4} {r['what']:32} "
              f"{r['seconds']:>8.4f} {r['pixel_steps_per_s']:>14.3e} {r['per_core']:>12.3e} "
              f"{r['gate_gflops']:>12.2f} {r['of_bound']:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
