"""Benchmark of the SPT network: size, FLOPs, and CPU/GPU throughput of prediction.

Prints one table: the default network's parameter count and forward FLOPs per spectrum,
the machine's measured matrix-multiply peak, and the throughput of a single forward
pass and of Monte Carlo dropout prediction (T passes) at a given batch size, both with
the shared deterministic prefix (what `astro_spt.nn.mc_predict` does) and naively as T
full forward passes, for both dropout placements.

Run: ``python benchmarks/bench_nn.py [--batch 256] [--samples 100] [--device cpu]``
"""

import argparse
import platform
import time

import torch

from astro_spt.nn import SpectralTransformer, mc_predict
from astro_spt.nn.mc import _draw_masks


def best_time(fn, repeat, sync, clock=time.perf_counter):
    fn()  # warm-up
    sync()
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        sync()
        times.append(clock() - t0)
    return min(times)


def matmul_peak(device, sync, n=2048):
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    seconds = best_time(lambda: a @ b, 5, sync)
    return 2 * n**3 / seconds


def gemm_shapes(net, batch, n_samples):
    """(rows, inputs, outputs) of the matrix products of `mc_predict` on ``batch`` rows.

    The linear layers of `forward_shared` run on ``batch`` rows, those of
    `forward_stochastic` on ``batch * n_samples``; layers with fewer than 16 outputs
    (the last of the head) are left out, as no BLAS runs them near its peak.
    """
    shared = net.hparams["dropout_position"] == "head"
    shapes = set()
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features >= 16:
            if name.startswith("scatter_head"):
                continue
            rows = batch if shared and not name.startswith("head") else batch * n_samples
            shapes.add((rows, module.in_features, module.out_features))
    return sorted(shapes)


def gemm_peak(shapes, device, sync, repeat=5, clock=time.perf_counter):
    """Best fp32 rate (FLOP/s) of ``x @ W.T + b`` over ``shapes``, and its shape."""
    rates = {}
    for rows, n_in, n_out in shapes:
        x = torch.randn(rows, n_in, device=device)
        weight = torch.randn(n_out, n_in, device=device)
        bias = torch.randn(n_out, device=device)
        seconds = best_time(
            lambda x=x, w=weight, b=bias: torch.nn.functional.linear(x, w, b), repeat, sync, clock
        )
        rates[(rows, n_in, n_out)] = 2 * rows * n_in * n_out / seconds
    shape = max(rates, key=rates.get)
    return rates[shape], shape


def naive_mc(net, x, n_samples, seed):
    """T full forward passes with the same masks as mc_predict (the cost it avoids)."""
    layers = net.stochastic_layers()
    # the T masks of the seed, the same for every spectrum: row i T + t gets mask t
    masks = torch.from_numpy(_draw_masks(seed, n_samples, layers))
    masks = masks.to(x.device).repeat(len(x), 1)
    start = 0
    for layer in layers:
        layer.mask = masks[:, start : start + layer.n_units]
        start += layer.n_units
    try:
        with torch.no_grad():
            return net(x.repeat_interleave(n_samples, dim=0))
    finally:
        for layer in layers:
            layer.mask = None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    peak = matmul_peak(device, sync)
    x = torch.randn(args.batch, 143, device=device)
    t = args.samples
    rows = []
    for position in ("head", "all"):
        torch.manual_seed(0)
        net = SpectralTransformer(dropout_position=position).to(device).eval()
        flops = net.forward_flops()

        def forward(net=net):
            with torch.no_grad():
                net(x)

        seconds = best_time(forward, args.repeat, sync)
        rows.append((position, "forward (T=1)", seconds, args.batch / seconds, flops * args.batch))
        seconds = best_time(lambda net=net: mc_predict(net, x, t, seed=0), args.repeat, sync)
        shared_seconds = seconds
        # work actually done: the shared prefix once, the stochastic rest T times
        work = net.forward_flops(t) * args.batch
        rows.append((position, f"MC T={t}, shared prefix", seconds, args.batch / seconds, work))
        seconds = best_time(lambda net=net: naive_mc(net, x, t, 0), 1, sync)
        rows.append((position, f"MC T={t}, T full passes", seconds, args.batch / seconds, work))
        rows.append(
            (position, "  saving of the shared prefix", seconds / shared_seconds, None, None)
        )

    print(
        f"# SPT network benchmark ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}, torch {torch.__version__})"
    )
    print()
    net = SpectralTransformer()
    print(f"parameters:                  {net.count_parameters():,}")
    print(f"forward FLOPs per spectrum:  {net.forward_flops() / 1e6:.1f} MFLOP")
    print(f"matmul peak (2048² fp32):    {peak / 1e9:.1f} GFLOP/s")
    print()
    print(f"| dropout | mode (batch {args.batch}) | seconds | spectra/s | GFLOP/s | of peak |")
    print("|---|---|---|---|---|---|")
    for position, mode, seconds, rate, work in rows:
        if rate is None:
            print(f"| {position} | {mode} | ×{seconds:.1f} faster | | | |")
            continue
        achieved = f"{work / seconds / 1e9:.1f}" if work else ""
        ratio = f"{work / seconds / peak:.0%}" if work else ""
        print(f"| {position} | {mode} | {seconds:.3f} | {rate:,.0f} | {achieved} | {ratio} |")


if __name__ == "__main__":
    main()
