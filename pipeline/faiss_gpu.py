"""FAISS on the GPUs this process sees, with the CPU as the fallback.

`faiss-gpu` and `faiss-cpu` both install the `faiss` module, so callers import `faiss` the same way in both;
this module is the one place that asks how many GPUs FAISS has and moves indexes onto them:

- one GPU: the index is cloned onto it;
- several: the index is sharded over all of them (each GPU holds 1/N of the vectors and searches its part;
  results are merged), so an index larger than one card still fits and every card works on every query;
- none, or `use_gpu=False`: the CPU index is returned unchanged.

k-means (`faiss.Kmeans(gpu=N)`) uses all N GPUs through the same count.
"""

from __future__ import annotations

from functools import cache


def gpu_count(use_gpu: bool = True) -> int:
    """GPUs FAISS can use; 0 with faiss-cpu, without a GPU, or when `use_gpu` is False."""
    import faiss

    if not use_gpu or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())


def kmeans_gpu_arg(use_gpu: bool = True) -> int | bool:
    """`faiss.Kmeans`'s `gpu` argument: the number of GPUs to use, or False for the CPU."""
    return gpu_count(use_gpu) or False


@cache
def _resources(device: int):
    """One `StandardGpuResources` per card and process: creating one reserves scratch memory and streams."""
    import faiss

    return faiss.StandardGpuResources()


def to_gpus(index, *, use_gpu: bool = True, nprobe: int | None = None):
    """`index` on every visible GPU (one: cloned; several: sharded), or unchanged when there is none.

    `nprobe` (IVF indexes) is set on the result, since a GPU copy keeps its own search parameters.
    """
    import faiss

    n = gpu_count(use_gpu)
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = nprobe
    if n == 0:
        return index
    options = faiss.GpuMultipleClonerOptions() if n > 1 else faiss.GpuClonerOptions()
    if n > 1:
        # sharded clones answer with the CPU index's positions (flat shards are re-offset ranges, IVF shards
        # keep the stored ids), so callers read results the same way on any number of cards
        options.shard = True
        resources = [_resources(d) for d in range(n)]
        vector = faiss.GpuResourcesVector()
        devices = faiss.Int32Vector()
        for d, res in enumerate(resources):
            vector.push_back(res)
            devices.push_back(d)
        gpu_index = faiss.index_cpu_to_gpu_multiple(vector, devices, index, options)
    else:
        gpu_index = faiss.index_cpu_to_gpu(_resources(0), 0, index, options)
    if nprobe is not None and hasattr(index, "nprobe"):
        faiss.GpuParameterSpace().set_index_parameter(gpu_index, "nprobe", nprobe)
    return gpu_index
