"""GPU memory used and utilisation of the GPUs this replica may use, read at scrape time.

A Prometheus collector: NVIDIA's NVML is read when Prometheus scrapes, not after requests,
and only for the devices `CUDA_VISIBLE_DEVICES` leaves this process (Jina gives each
diffusion replica its own). Nothing is registered where NVML finds no GPU.
"""

import os

from .names import GPU_MEMORY_USED, GPU_UTILIZATION


def visible_gpus(count: int) -> list[str]:
    """The GPUs this process may use, as NVML indices or UUIDs: `CUDA_VISIBLE_DEVICES`'s list
    (numbers or `GPU-…` UUIDs), or all `count` of them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return [str(k) for k in range(count)]
    return [device.strip() for device in visible.split(",") if device.strip() and device.strip() != "-1"]


class GpuCollector:
    """Gauges of GPU memory used (bytes) and utilisation (0..1) per visible GPU."""

    def __init__(self, labels: dict[str, str], devices: list[str]):
        self.labels = labels
        self.devices = devices

    @classmethod
    def register(cls, registry, labels: dict[str, str]) -> None:
        """Register a collector on `registry` when NVML finds GPUs this process may use."""
        try:
            import pynvml

            pynvml.nvmlInit()
            devices = visible_gpus(pynvml.nvmlDeviceGetCount())
        except Exception:  # no NVIDIA driver, or nvidia-ml-py missing: no GPU gauges
            return
        if devices:
            registry.register(cls(labels, devices))

    def collect(self):
        import pynvml
        from prometheus_client.core import GaugeMetricFamily

        names = [*self.labels, "gpu"]
        memory = GaugeMetricFamily(GPU_MEMORY_USED, "GPU memory used, bytes", labels=names)
        utilization = GaugeMetricFamily(GPU_UTILIZATION, "GPU busy fraction over the last sample period",
                                        labels=names)
        for index, device in enumerate(self.devices):
            handle = (pynvml.nvmlDeviceGetHandleByUUID(device) if device.startswith(("GPU-", "MIG-"))
                      else pynvml.nvmlDeviceGetHandleByIndex(int(device)))
            values = [*self.labels.values(), str(index)]  # the index CUDA gives it in this process
            memory.add_metric(values, pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            utilization.add_metric(values, pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
        yield memory
        yield utilization

    def describe(self):
        return []  # metrics are known only at scrape time; registering must not scrape NVML
