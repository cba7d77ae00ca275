"""The experiment's CPU arithmetic, pinned so that a run trains the same bytes on x86-64 CPUs with
AVX2 of one vendor: it held across AMD EPYC machines (finding 24 in docs/miniature.md), and an
Intel Xeon makes other bytes, the same alone under every played variation but twice other ones
again inside the test suite, for a reason not found (findings 31-33).

MKL honours ``MKL_CBWR=AVX2`` on Intel CPUs only; on others it runs its AUTO branch (its
conditional numerical reproducibility documentation says so), so AMD and Intel machines take
different matrix-product paths. The branch MKL documents as giving both the same results is
``COMPATIBLE`` (SSE2), which made the training stages 1.35-1.75 times slower here (finding 32):
too slow for a 30-minute budget.

torch chooses its kernels by the machine: ATen's vectorised loops by instruction set (AVX-512
or AVX2), oneDNN's convolutions by instruction set, MKL's matrix products by vendor and
instruction set, and the thread count splits the work. Each choice rounds differently, and
thousands of training steps turn the rounding into other models (finding 23). Pinned means:
ATen's AVX2 loops (``ATEN_CPU_CAPABILITY``), MKL's AVX2 code path (its conditional numerical
reproducibility, ``MKL_CBWR``), no oneDNN (convolutions fall back to ATen's own, which use
MKL), and two threads. The environment variables are read when torch loads, so they must be set
before the process imports it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

PINNED_ENVIRONMENT = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}
PINNED_CAPABILITY = "AVX2"
PINNED_THREADS = 2


class ArithmeticNotPinned(RuntimeError):
    """torch in this process runs kernels other than the pinned ones."""


def with_pinned_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """environ with the variables that pin ATen's and MKL's kernels (for a new process)."""
    return {**environ, **PINNED_ENVIRONMENT}


def environment_is_pinned(environ: Mapping[str, str]) -> bool:
    return all(environ.get(key) == value for key, value in PINNED_ENVIRONMENT.items())


def kernels_pinned(capability: str) -> bool:
    """Whether a torch that runs `capability` kernels in this environment has the pinned ones."""
    return capability == PINNED_CAPABILITY and environment_is_pinned(os.environ)


@contextmanager
def pinned_arithmetic(threads: int = PINNED_THREADS) -> Iterator[None]:
    """Inside: oneDNN off and `threads` torch threads; both restored after. Refuses a process
    whose ATen kernels are not AVX2 (no AVX2 on this CPU, or torch loaded before the pin)."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if not kernels_pinned(capability):
        raise ArithmeticNotPinned(
            f"pinned arithmetic needs torch loaded with {PINNED_ENVIRONMENT} on an x86-64 CPU with AVX2, "
            f"and this process runs {capability} kernels: either this CPU lacks AVX2, or torch was loaded "
            "before those variables were set (vlm2vla-experiment sets them first). Pass --kernels native "
            "to run with torch's own kernels (the run's bytes then depend on this machine)")
    previous = torch.get_num_threads(), torch.backends.mkldnn.enabled
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False  # not mkldnn.flags(): it also sets oneDNN's TF32 switch, with a warning
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.backends.mkldnn.enabled = previous[1]


def arithmetic_record() -> dict[str, Any]:
    """What the run's rounding depends on, for the report: pinned runs with the same threads are
    meant to match to the byte on any AVX2 machine; native ones only on the same machine."""
    import torch

    record = {"cpu_capability": torch.backends.cpu.get_cpu_capability(), "onednn": torch.backends.mkldnn.enabled,
              "mkl_cbwr": os.environ.get("MKL_CBWR", ""), "torch_threads": torch.get_num_threads()}
    record["pinned"] = kernels_pinned(record["cpu_capability"]) and not record["onednn"]
    return record
