"""Every neural agent trained a few hundred updates on the GPU, beside the same on one CPU thread.

    python benchmarks/gpu_check.py [--agents fisor a2pr doc dt td3bc] [--updates 200] [--devices cpu cuda]

For a machine with a GPU (it never runs in CI): each agent of ``agent_speed.py`` (FISOR, A2PR, TD3+BC
at their papers' batch sizes on synthetic data of their tasks' shapes; DoC's and the Decision
Transformer's sequence forms at the official sizes) is built on each device, warmed up (5 updates)
and timed over ``--updates`` updates: updates per second on each device, CPU milliseconds per update
(the CPU's cost; on the GPU, what the host spends launching work), peak memory, and the GPU's
speed-up. The CPU trains with one torch thread, as the runner does. BARFI is not here: its linear
policy's updates are a small share of its time, which goes to playing episodes (``barfi_speed.py``).
Prints a Markdown table for RESULTS. ``--devices cpu cpu`` runs the script where there is no GPU
(a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from agent_speed import AGENTS, BUILDERS, peak_memory, reset_peak, timed_updates  # benchmarks/agent_speed.py


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", nargs="+", default=list(AGENTS), choices=AGENTS)
    parser.add_argument("--updates", type=int, default=200, help="timed updates per agent and device")
    parser.add_argument("--devices", nargs=2, default=["cpu", "cuda"], metavar=("BASELINE", "ACCELERATOR"))
    args = parser.parse_args()
    if args.updates < 1:
        parser.error(f"--updates must be >= 1, got {args.updates}")
    if "cuda" in args.devices and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device here (torch sees none); run it on a machine with a GPU, "
                 "or with --devices cpu cpu to check the script")
    torch.set_num_threads(1)
    devices = [torch.device(d) for d in args.devices]
    names = [torch.cuda.get_device_name(d) if d.type == "cuda" else "one CPU thread" for d in devices]
    print(f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}: {names[0]} against {names[1]}, "
          f"{args.updates} timed updates each\n")
    print(f"| agent | {args.devices[0]} updates/s | {args.devices[1]} updates/s | speed-up | CPU ms per update "
          f"({args.devices[0]} / {args.devices[1]}) | peak memory ({args.devices[1]}) |")
    print("|---|---|---|---|---|---|")
    for agent in dict.fromkeys(args.agents):
        rates, cpu, memory = [], [], ""
        for device in devices:
            before = reset_peak(device)
            trainee = BUILDERS[agent](device)
            timed_updates(trainee, 5, device)  # warm-up (CUDA kernels, allocator)
            trainee.cpu_ms.clear()
            rates.append(timed_updates(trainee, args.updates, device))
            cpu.append(trainee.cpu_ms[-1])
            memory = peak_memory(device, before)
            del trainee
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print(f"| {agent} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[1] / rates[0]:.1f}x | {cpu[0]:.1f} / {cpu[1]:.1f} "
              f"| {memory} |", flush=True)


if __name__ == "__main__":
    main()
