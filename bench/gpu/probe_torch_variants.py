"""Where johnson's inference time goes on a GPU: eager precision/layout variants, a CUDA profile of
two of them at 1080p, and static torch.compile. Results: bench/gpu/h200-2026-11-29-probe.json and the
GPU section of bench/RESULTS.md (they decided runtime/torch_backend.py's CUDA settings).

    OUT=/tmp/probe PYTHONPATH=. COMPILE_S=150 python bench/gpu/probe_torch_variants.py   # on the GPU
    DEV=cpu OUT=/tmp/probe COMPILE_S=1 PYTHONPATH=. python bench/gpu/probe_torch_variants.py   # smoke run
"""
import copy
import json
import os
import time
from pathlib import Path

import torch
from torch import nn

sync = (lambda: None) if os.environ.get("DEV") == "cpu" else (lambda: torch.cuda.synchronize())
from stylestream.models import build_model, inference_model

OUT = os.environ["OUT"]
res = {}

dev = os.environ.get("DEV", "cuda")
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
base = inference_model(build_model("johnson")).eval().to(dev)


def log(*a):
    print(*a, flush=True)


def timeit(fn, x, reps=20, warm=3):
    with torch.inference_mode():
        for _ in range(warm):
            fn(x)
        sync()
        ts = []
        for _ in range(reps):
            if dev == "cpu":
                t0 = time.perf_counter(); fn(x); ts.append((time.perf_counter() - t0) * 1e3); continue
            s = torch.cuda.Event(enable_timing=True); e = torch.cuda.Event(enable_timing=True)
            s.record(); fn(x); e.record(); torch.cuda.synchronize()
            ts.append(s.elapsed_time(e))
    ts.sort()
    return ts[len(ts) // 2] / x.shape[0]


class INorm(nn.Module):
    """InstanceNorm over H, W computed in float32 without leaving channels_last."""
    def __init__(self, m):
        super().__init__(); self.w = m.weight; self.b = m.bias; self.eps = m.eps
    def forward(self, x):
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, correction=0)
        scale = self.w.float().view(1, -1, 1, 1) * torch.rsqrt(var + self.eps)
        return (xf * scale + (self.b.float().view(1, -1, 1, 1) - mean * scale)).to(x.dtype)


def swap_norm(m):
    m = copy.deepcopy(m)
    for name, child in list(m.named_modules()):
        for cn, c in list(child.named_children()):
            if isinstance(c, nn.InstanceNorm2d):
                setattr(child, cn, INorm(c))
    return m


def make(variant):
    m = base
    cl = "cl" in variant
    if "inorm" in variant:
        m = swap_norm(m)
    if "pure16" in variant:
        m = copy.deepcopy(m).half()
    if "purebf" in variant:
        m = copy.deepcopy(m).bfloat16()
    if cl:
        m = m.to(memory_format=torch.channels_last)
    ac = "ac" in variant
    dt = torch.float16 if "pure16" in variant else torch.bfloat16 if "purebf" in variant else torch.float32
    def fn(x, m=m):
        x = x.to(dt)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        if ac:
            with torch.autocast(dev, dtype=torch.bfloat16):
                return m(x).float()
        return m(x).float()
    return fn, m


sizes = [(1080, 1920, 1), (720, 1280, 8), (480, 640, 1)] if dev == "cuda" else [(36, 64, 1)]
variants = ["fp32", "ac_cl", "ac", "ac_cl_inorm", "purebf_cl", "pure16_cl", "pure16_cl_inorm", "fp32_cl"]
for v in variants:
    fn, _ = make(v)
    for h, w, b in sizes:
        x = torch.rand(b, 3, h, w, device=dev) * 255
        try:
            ms = timeit(fn, x)
        except Exception as e:  # noqa: BLE001 -- a variant that fails is reported, the rest go on
            ms = repr(e)[:200]
        res[f"{v} {w}x{h} b{b}"] = ms
        log(f"{v:18s} {w}x{h} b{b}: {ms}")

# numeric check: inorm swap vs original in fp32
with torch.inference_mode():
    x = torch.rand(1, 3, 240, 320, device=dev) * 255
    d = (make("fp32_inorm")[0](x) - make("fp32")[0](x)).abs().max().item()
    res["inorm_fp32_maxdiff"] = d
    log("inorm swap max diff fp32", d)

# profiler of the served variant at 1080p
from torch.profiler import ProfilerActivity, profile

for v in ["ac_cl", "pure16_cl_inorm"]:
    fn, _ = make(v)
    x = torch.rand(1, 3, *((1080, 1920) if dev == "cuda" else (36, 64)), device=dev) * 255
    with torch.inference_mode():
        fn(x); sync()
        with profile(activities=[ProfilerActivity.CUDA if dev == 'cuda' else ProfilerActivity.CPU]) as prof:
            for _ in range(5):
                fn(x)
            sync()
    t = prof.key_averages().table(sort_by="cuda_time_total" if dev == "cuda" else "cpu_time_total", row_limit=18)
    log(f"--- profile {v} 1080p b1 (5 runs)\n" + t)
    Path(OUT, f"profile_{v}.txt").write_text(t)

# compiled variants (time budget)
t_end = time.monotonic() + float(os.environ.get("COMPILE_S", "200"))
for v, mode in [("pure16_cl_inorm", None), ("ac_cl", None)]:
    fn, m = make(v)
    mc = torch.compile(m, dynamic=False, mode=mode)
    cl = "cl" in v
    dt = torch.float16 if "pure16" in v else torch.float32
    def cfn(x, mc=mc, v=v, cl=cl, dt=dt):
        x = x.to(dt)
        if cl:
            x = x.contiguous(memory_format=torch.channels_last)
        if "ac" in v:
            with torch.autocast(dev, dtype=torch.bfloat16):
                return mc(x).float()
        return mc(x).float()
    for h, w, b in ([(1080, 1920, 1), (720, 1280, 8)] if dev == "cuda" else [(36, 64, 1)]):
        if time.monotonic() > t_end:
            log("compile: out of time"); break
        x = torch.rand(b, 3, h, w, device=dev) * 255
        t0 = time.monotonic()
        try:
            with torch.inference_mode():
                cfn(x); sync()
            first = time.monotonic() - t0
            ms = timeit(cfn, x)
        except Exception as e:  # noqa: BLE001 -- a variant that fails is reported, the rest go on
            first, ms = None, repr(e)[:300]
        res[f"compiled[{mode}] {v} {w}x{h} b{b}"] = {"ms": ms, "first_s": first}
        log(f"compiled[{mode}] {v} {w}x{h} b{b}: {ms} ms/frame (first {first} s)")
    Path(OUT, "probe.json").write_text(json.dumps(res, indent=1))  # after each compile: a timeout keeps it
Path(OUT, "probe.json").write_text(json.dumps(res, indent=1))
log("done")
