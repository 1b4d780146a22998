"""Spreading batched work over a device's memory, the local devices and several processes.

jaxviz's batched methods (filter patterns above all) run one compiled program per *chunk* of items. This
module decides how large a chunk is, lays a chunk out over every local device, splits the chunks between
processes started with :mod:`jax.distributed`, and keeps finished items on disk so an interrupted run
resumes where it stopped.

- **Chunk size** (:func:`choose_chunk_size`): bytes one item needs (a cost model: the activations the
  program keeps alive, computed from the layer table or measured on the compiled program by
  :func:`measured_bytes_per_item`) against the memory budget of the device (:func:`device_memory_bytes`):
  free device memory on an accelerator, the last-level cache on a CPU. On a CPU, batches past the last-level
  cache run slower and small images already fill a few cores, so CPU chunks stay small
  (:data:`CPU_MAX_CHUNK`) unless the weights dominate the traffic (deep layers at small sizes); on a
  GPU one small image leaves the device idle and chunks are large.
- **Devices** (:func:`local_mesh`, :func:`batch_sharding`): a 1-D :class:`jax.sharding.Mesh` over the
  local devices; the item axis is sharded over it and parameters are replicated, so every device runs its
  slice of the same program.
- **Processes** (:func:`initialize_distributed`, :func:`process_share`, :func:`allgather_items`): each
  process takes every P-th chunk; results are merged with an all-gather (gloo on CPU).
- **Resuming** (:class:`ItemStore`): one ``.npy`` per finished item, written atomically, plus the settings
  that produced them; a re-run loads those and computes the rest.
- **Compilation cache** (:func:`enable_compilation_cache`): XLA's persistent cache under
  ``$JAXVIZ_HOME/xla-cache`` (``~/.cache/jaxviz`` by default), so a second process skips compiling.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from . import xla_cpu
from .atomic import confine, remove_tree, write_bytes
from .errors import JaxvizError

#: Largest chunk per CPU device: larger batches of small images fall out of the last-level cache and run
#: slower (docs/PERFORMANCE.md, item 4).
CPU_MAX_CHUNK = 16
#: Largest chunk per accelerator (beyond this a GPU is long saturated and progress gets coarse).
ACCELERATOR_MAX_CHUNK = 1024
#: Share of an accelerator's free memory one chunk may plan to use.
ACCELERATOR_MEMORY_FRACTION = 0.5
#: Cache budget assumed when the CPU's last-level cache size cannot be read.
DEFAULT_CPU_CACHE_BYTES = 32 * 2**20

BATCH_AXIS = "items"


# ---------------------------------------------------------------------------------------------------------
# Where jaxviz keeps its files


def home() -> Path:
    """jaxviz's own folder: ``$JAXVIZ_HOME``, else ``~/.cache/jaxviz``."""
    env = os.environ.get("JAXVIZ_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxviz"


def enable_compilation_cache(path: str | os.PathLike | None = None, min_compile_time_s: float = 0.5) -> Path | None:
    """Turns on XLA's persistent compilation cache (default ``$JAXVIZ_HOME/xla-cache``).

    Programs that took at least ``min_compile_time_s`` to compile are stored, so a later process running
    the same program (same shapes, jax version and device) loads it instead of compiling again. Safe to
    call more than once; returns the folder, or ``None`` (with the cache left off) if it is not writable.
    """
    folder = Path(path).expanduser() if path is not None else home() / "xla-cache"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(folder, os.W_OK):
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


# ---------------------------------------------------------------------------------------------------------
# Memory budgets and chunk sizes


def cpu_cache_bytes() -> int:
    """Size of the CPU's last-level data cache, read from Linux's sysfs (``DEFAULT_CPU_CACHE_BYTES`` elsewhere)."""
    found = []  # (level, bytes) of every data or unified cache of CPU 0
    try:
        for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
            if (index / "type").read_text().strip() == "Instruction":
                continue
            text = (index / "size").read_text().strip().upper()
            mult = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
            found.append((int((index / "level").read_text()), int(text.rstrip("KMG")) * mult))
    except (OSError, ValueError):
        found = []
    return max(found)[1] if found else DEFAULT_CPU_CACHE_BYTES


def device_memory_bytes(device=None) -> int:
    """The memory one chunk may use on ``device``: free device memory, or the last-level cache on a CPU.

    Accelerators report ``bytes_limit`` and ``bytes_in_use`` through ``device.memory_stats()``; for a CPU
    the budget that matters for speed is the cache, not the RAM.
    """
    device = device or jax.local_devices()[0]
    if device.platform == "cpu":
        return cpu_cache_bytes()
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not implement memory_stats
        stats = {}
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    if not limit:
        return 16 * 2**30  # unknown accelerator: assume a modest 16 GiB card
    return max(int(limit) - int(stats.get("bytes_in_use", 0)), 0)


def choose_chunk_size(bytes_per_item: float, n_items: int, *, shared_bytes: float = 0.0,
                      devices: Sequence | None = None, memory_bytes: int | None = None,
                      platform: str | None = None, max_per_device: int | None = None) -> int:
    """How many items one compiled call should process: a multiple of the number of devices.

    The cost model has two terms: ``bytes_per_item``, the memory each item keeps alive (activations), and
    ``shared_bytes``, what every call reads whatever its size (the weights).

    - Accelerator: as many items as fit in :data:`ACCELERATOR_MEMORY_FRACTION` of the free memory once
      the shared bytes are placed (one small image leaves a GPU idle, so bigger is better).
    - CPU: the chunk grows until the per-item traffic outweighs the shared traffic (``shared_bytes /
      bytes_per_item`` items: deep layers at small sizes are weight-bound, batching amortises the weight
      reads), but never past what fits in the last-level cache (``memory_bytes // bytes_per_item``) nor
      :data:`CPU_MAX_CHUNK`. Shallow layers and large images get 1 (one image already keeps a CPU's
      cores busy), deep layers at small sizes up to the cap.

    Args:
      bytes_per_item: memory one item keeps alive in the program (see :func:`measured_bytes_per_item`).
      n_items: how many items there are in all (no chunk is larger than needed).
      shared_bytes: bytes every call needs whatever its size (weights).
      devices: the devices one chunk is sharded over (default: all local devices).
      memory_bytes: the per-device budget (default :func:`device_memory_bytes` of the first device).
      platform: "cpu", "gpu", "tpu" (default: the devices' platform).
      max_per_device: a cap per device (default :data:`CPU_MAX_CHUNK` on CPU, else
        :data:`ACCELERATOR_MAX_CHUNK`).

    Returns:
      The chunk size: ``per_device × len(devices)``, at least one item per device.
    """
    devices = list(devices) if devices is not None else jax.local_devices()
    n_dev = max(len(devices), 1)
    platform = platform or (devices[0].platform if devices else "cpu")
    if memory_bytes is None:
        memory_bytes = device_memory_bytes(devices[0] if devices else None)
    per_item = max(float(bytes_per_item), 1.0)
    if platform == "cpu":
        cap = max_per_device or CPU_MAX_CHUNK
        fits = int(memory_bytes // per_item)
        amortise = math.ceil(shared_bytes / per_item) if shared_bytes > 0 else 1
        per_device = min(amortise, fits)
    else:
        cap = max_per_device or ACCELERATOR_MAX_CHUNK
        per_device = int((memory_bytes * ACCELERATOR_MEMORY_FRACTION - shared_bytes) // per_item)
    per_device = max(1, min(per_device, cap, math.ceil(max(n_items, 1) / n_dev)))
    return per_device * n_dev


def balanced_chunk(n_items: int, max_chunk: int, n_devices: int = 1) -> int:
    """The chunk size that splits ``n_items`` into as few chunks of at most ``max_chunk`` as possible, evenly.

    16 items with ``max_chunk=11`` give 2 chunks of 8, not 11 + 5 (the short chunk would be padded to 11,
    computing 6 items for nothing). The result is a multiple of ``n_devices``.
    """
    n_items, n_devices = max(int(n_items), 1), max(int(n_devices), 1)
    max_chunk = max(int(max_chunk), 1)
    n_chunks = math.ceil(n_items / max_chunk)
    chunk = math.ceil(n_items / n_chunks)
    return math.ceil(chunk / n_devices) * n_devices


def measured_bytes_per_item(compile_for: Callable[[int], jax.stages.Compiled], sizes=(1, 2)) -> tuple[float, float]:
    """Measures ``(fixed_bytes, bytes_per_item)`` from XLA's memory analysis of a program at two batch sizes.

    ``compile_for(n)`` must return the compiled program for a chunk of ``n`` items. The program's
    temporaries, arguments and outputs at ``sizes[0]`` and ``sizes[1]`` give a line: its slope is the
    per-item cost, its intercept what any chunk needs (weights, workspace).
    """
    totals = []
    for n in sizes:
        mem = compile_for(n).memory_analysis()
        if mem is None:
            raise JaxvizError("this backend does not report memory use; pass chunk_size explicitly")
        totals.append(mem.temp_size_in_bytes + mem.argument_size_in_bytes + mem.output_size_in_bytes)
    slope = max((totals[1] - totals[0]) / (sizes[1] - sizes[0]), 1.0)
    return max(totals[0] - slope * sizes[0], 0.0), slope


def chunks(items: Sequence, size: int) -> list[list]:
    """Consecutive pieces of ``items`` of ``size`` each (the last may be shorter)."""
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def pad_to(items: Sequence, size: int) -> list:
    """``items`` extended to ``size`` by repeating its last element (padding rows are computed, then dropped)."""
    items = list(items)
    return items + [items[-1]] * (size - len(items))


# ---------------------------------------------------------------------------------------------------------
# Devices


def local_devices(devices: Sequence | None = None) -> list:
    """The devices to shard over: ``devices`` if given, else every device this process can address."""
    return list(devices) if devices is not None else list(jax.local_devices())


def local_mesh(devices: Sequence | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh named ``"items"`` over ``devices`` (default: all local devices)."""
    return jax.sharding.Mesh(np.asarray(local_devices(devices)), (BATCH_AXIS,))


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """Leading (item) axis split over the mesh, everything else whole."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
    """A full copy on every device of the mesh (parameters)."""
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


# ---------------------------------------------------------------------------------------------------------
# Processes


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int,
                           timeout_s: int = 60) -> None:
    """Joins a multi-process run (``jax.distributed.initialize``); on CPU the collectives go through gloo.

    Every process calls this first, with the same ``coordinator_address`` (``host:port`` of process 0)
    and ``num_processes``. Each then computes its share of the chunks (:func:`process_share`) and the
    results are merged with :func:`allgather_items`. Like :func:`jaxviz.load`, it first applies jaxviz's
    XLA:CPU setting (:func:`jaxviz.xla_cpu.configure`), since JAX's backend starts here.
    """
    xla_cpu.configure()
    try:
        if jax.config.jax_cpu_collectives_implementation in (None, "", "none"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except AttributeError:  # older/newer jax without this option
        pass
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id,
                               initialization_timeout=timeout_s)


def process_share(n_chunks: int, index: int | None = None, count: int | None = None) -> list[int]:
    """The chunk numbers process ``index`` of ``count`` computes: every ``count``-th, starting at ``index``."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    return list(range(index, n_chunks, count))


def barrier(name: str) -> None:
    """Waits until every process reaches this point (nothing to do in a single process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def allgather_array(x) -> np.ndarray:
    """Every process's ``x`` (same shape everywhere) stacked: ``[process_count, *x.shape]``."""
    x = np.asarray(x)
    if jax.process_count() == 1:
        return x[None]
    return np.asarray(multihost_utils.process_allgather(x)).reshape((jax.process_count(), *x.shape))


def allgather_items(ids: Sequence[int], values: np.ndarray, item_shape: tuple,
                    dtype=np.float32) -> dict[int, np.ndarray]:
    """Merges ``{id: value}`` from every process: each passes its own ``ids`` and ``values[len(ids), …]``.

    In a single process this is just ``dict(zip(ids, values))``. Otherwise every process pads its part
    to the largest share and the parts are exchanged with one all-gather; every process gets everything.
    """
    ids = list(ids)
    values = np.asarray(values, dtype).reshape((len(ids), *item_shape))
    if jax.process_count() == 1:
        return dict(zip(ids, values))
    counts = np.asarray(multihost_utils.process_allgather(np.asarray([len(ids)], np.int32))).reshape(-1)
    width = int(counts.max())
    pad_ids = np.full((width,), -1, np.int64)
    pad_ids[: len(ids)] = ids
    pad_vals = np.zeros((width, *item_shape), dtype)
    pad_vals[: len(ids)] = values
    all_ids = np.asarray(multihost_utils.process_allgather(pad_ids)).reshape(-1)
    all_vals = np.asarray(multihost_utils.process_allgather(pad_vals)).reshape((-1, *item_shape))
    return {int(i): v for i, v in zip(all_ids, all_vals) if i >= 0}


# ---------------------------------------------------------------------------------------------------------
# Resumable storage of finished items


class ItemStore:
    """A folder of finished items, one ``<prefix><id>.npy`` each, tied to the settings that made them.

    ``settings`` (JSON-able) are written to ``settings.json`` on first use; opening the folder again with
    different settings raises, so results of different runs are never mixed. Writes are atomic
    (temporary file + rename), so an interrupted run leaves only whole files.
    """

    def __init__(self, folder: str | os.PathLike, settings: dict | None = None, prefix: str = "item_"):
        self.folder = Path(folder)
        self.prefix = prefix
        self.folder.mkdir(parents=True, exist_ok=True)
        if settings is not None:
            settings = json.loads(json.dumps(settings, default=str))
            path = confine(self.folder, "settings.json")
            if path.exists():
                try:
                    old = json.loads(path.read_text())
                except (OSError, ValueError):
                    old = None
                if old != settings:
                    raise JaxvizError(
                        f"{self.folder} holds results computed with other settings ({old}); "
                        "delete it or choose another output folder"
                    )
            else:
                write_bytes(path, (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode())
        self.settings = settings

    def path(self, item_id: int) -> Path:
        return confine(self.folder, f"{self.prefix}{int(item_id):05d}.npy")

    def __contains__(self, item_id: int) -> bool:
        return self.path(item_id).exists()

    def done(self, ids: Iterable[int]) -> list[int]:
        return [i for i in ids if i in self]

    def missing(self, ids: Iterable[int]) -> list[int]:
        return [i for i in ids if i not in self]

    def save(self, item_id: int, value) -> Path:
        buf = io.BytesIO()
        np.save(buf, np.asarray(value), allow_pickle=False)
        return write_bytes(self.path(item_id), buf.getvalue())

    def load(self, item_id: int) -> np.ndarray:
        return np.load(self.path(item_id), allow_pickle=False)

    def clear(self) -> None:
        """Deletes the stored items and the settings file (and the folder if nothing else is in it)."""
        for p in self.folder.glob(f"{self.prefix}*.npy"):
            remove_tree(self.folder, p.name)
        remove_tree(self.folder, "settings.json")
        try:
            self.folder.rmdir()
        except OSError:
            pass
