"""The machine's CPU: its model and the features that decide the fast paths (read, never assumed).

Machines differ: an AMD EPYC with AVX2 only, one with AVX512-BF16, an Intel Xeon with AMX.
bfloat16 is fast only where the CPU computes it natively; int8 kernels (CTranslate2, oneDNN)
take other paths, with slightly other numbers, on each.

SPEECH2IMAGE_CPU_ISA caps the features reported here (`avx2`: no AVX-512, no bfloat16, no AMX),
so every `auto` choice is made as on such a CPU: how a user pins the paths, and how the
benchmark emulates an older CPU (with oneDNN's and ATen's own caps, set before they load).
"""

import os
import platform

from .errors import ConfigurationError

# the x86 features that choose kernels: bfloat16 (AVX512-BF16, AMX), int8 (VNNI, AMX), the rest
X86_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
ARM_FEATURES = ("asimd", "sve", "bf16", "i8mm")

CPU_ISA_VARIABLE = "SPEECH2IMAGE_CPU_ISA"
# each cap → the x86 features of X86_FEATURES it leaves: an AVX2-only CPU (most laptops, older
# EPYCs), AVX-512 without bfloat16 (Skylake/Cascade Lake Xeons), AVX512-BF16 without AMX (Zen 4)
CPU_ISA_CAPS = {
    "avx2": ("avx2",),
    "avx512": ("avx2", "avx512f", "avx512_vnni"),
    "avx512_bf16": ("avx2", "avx512f", "avx512_vnni", "avx512_bf16"),
}

# what holds each library's own kernels to a cap: oneDNN (PyTorch's convolutions and matmuls,
# CTranslate2's GEMM on AMD, OpenVINO's CPU plugin), ATen's vectorized kernels, CTranslate2, MKL
# (which obeys it on Intel CPUs only). Each library reads it once, as it loads: a child's environment.
EMULATION_VARIABLES = {
    "avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "CT2_FORCE_CPU_ISA": "AVX2",
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "avx512": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "ATEN_CPU_CAPABILITY": "avx512",
               "CT2_FORCE_CPU_ISA": "AVX512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
    "avx512_bf16": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16", "ATEN_CPU_CAPABILITY": "avx512",
                    "CT2_FORCE_CPU_ISA": "AVX512", "MKL_ENABLE_INSTRUCTIONS": "AVX512"},
}


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


def cpu_isa_cap() -> str | None:
    """The cap SPEECH2IMAGE_CPU_ISA sets (a key of CPU_ISA_CAPS), or None: unset or `native`."""
    value = os.environ.get(CPU_ISA_VARIABLE, "").strip().lower() or "native"
    if value == "native":
        return None
    if value not in CPU_ISA_CAPS:
        raise ConfigurationError(f"invalid {CPU_ISA_VARIABLE}={value!r}: allowed native, {', '.join(CPU_ISA_CAPS)}")
    return value


def cpu_features() -> tuple[str, ...]:
    """The features of X86_FEATURES (or ARM_FEATURES) this CPU has, within SPEECH2IMAGE_CPU_ISA's cap."""
    fields = _cpuinfo()
    present = set((fields.get("flags") or fields.get("Features") or "").split())
    cap = cpu_isa_cap()
    x86 = [f for f in X86_FEATURES if f in present and (cap is None or f in CPU_ISA_CAPS[cap])]
    return tuple(x86) + tuple(f for f in ARM_FEATURES if f in present)


def describe_cpu() -> str:
    """One line for benchmark output: model, cores and the features that decide the paths."""
    features = cpu_features()
    cap = cpu_isa_cap()
    capped = f" (capped by {CPU_ISA_VARIABLE}={cap})" if cap else ""
    return f"{cpu_model()}, {os.cpu_count()} cores; {' '.join(features) or 'no AVX2'}{capped}"


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: x86 AVX512-BF16 or AMX (as PyTorch reads
    the CPU; under SPEECH2IMAGE_CPU_ISA, as the capped features say), Arm BF16. Elsewhere
    bfloat16 is emulated and slower than float32."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return "bf16" in cpu_features()
    if cpu_isa_cap() is not None:
        return "avx512_bf16" in cpu_features()  # every AMX CPU has it too
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def emulation_environment(cap: str) -> dict[str, str]:
    """The environment that makes a child process compute as a CPU of kind `cap` (a key of
    CPU_ISA_CAPS) would: every library's kernels and the project's own `auto` choices."""
    return {**EMULATION_VARIABLES[cap], CPU_ISA_VARIABLE: cap}


def emulated_cpu() -> str | None:
    """The kind of CPU this process emulates (its whole :func:`emulation_environment` is set),
    else None: the CPU computes natively (SPEECH2IMAGE_CPU_ISA alone pins only the choices)."""
    cap = cpu_isa_cap()
    if cap and all(os.environ.get(name) == value for name, value in EMULATION_VARIABLES[cap].items()):
        return cap
    return None


def cpu_vendor() -> str:
    """The CPU's vendor id, e.g. "GenuineIntel", "AuthenticAMD" (empty where /proc/cpuinfo has none)."""
    return _cpuinfo().get("vendor_id", "")
