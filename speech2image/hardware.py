"""The machine's CPU: its model and the features that decide the fast paths (read, never assumed).

Machines differ: an AMD EPYC with AVX2 only, one with AVX512-BF16, an Intel Xeon with AMX.
bfloat16 is fast only where the CPU computes it natively; int8 kernels (CTranslate2, oneDNN)
take other paths, with slightly other numbers, on each.
"""

import os
import platform

# the x86 features that choose kernels: bfloat16 (AVX512-BF16, AMX), int8 (VNNI, AMX), the rest
X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
ARM_FEATURES = ("asimd", "sve", "bf16", "i8mm")


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (empty where there is none)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    if fields:
                        break
                    continue
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Platinum 8488C"."""
    fields = _cpuinfo()
    return fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()


def cpu_features() -> tuple[str, ...]:
    """The features of X86_FEATURES (or ARM_FEATURES) this CPU has."""
    fields = _cpuinfo()
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    return tuple(f for f in X86_FEATURES + ARM_FEATURES if f in present)


def describe_cpu() -> str:
    """One line for benchmark output: model, cores and the features that decide the paths."""
    features = cpu_features()
    return f"{cpu_model()}, {os.cpu_count()} cores; {' '.join(features) or 'no AVX2'}"


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: x86 AVX512-BF16 or AMX (as PyTorch reads
    the CPU), Arm BF16. Elsewhere bfloat16 is emulated and slower than float32."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in cpu_features()
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)
