"""Compact state through ``torch.distributed.checkpoint``: across shardings and formats.

A sharded param's 8-bit state is its codes (a DTensor placed like the param, which DCP
reshards as it reshards the param) and its block scales, one row per shard: each rank's
shard starts a block of its own, so the scales' shape, ``(shards, most blocks a shard
has)``, depends on the sharding it was saved on. ``dcp.load`` loads into the state the
new optimizer made, so it refuses scales of another shape (``Size mismatch …
exp_avg.absmax``), and state of another format under other keys (``exp_avg`` against
``exp_avg.codes`` with ``exp_avg.absmax``: ``Missing key``). :class:`ReshardPlanner` asks
DCP for what was saved instead: the scales whole (a float32 per 256 elements: small), the
codes or float values placed as the new optimizer places its state. The optimizer then
takes them as it takes any checkpoint (``set_optimizer_state_dict`` / ``load_state_dict``):
codes are decoded in the blocks they were saved in (:func:`descent.engine.formats.decode_rows`)
and encoded again in its own, float values are quantized. Re-encoded codes make the
resumed run close to the uninterrupted one, not bit for bit; on the sharding and format
it was saved in, nothing changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from .engine.formats import CODES_SUFFIX, SCALE_SUFFIX

__all__ = ["ReshardPlanner"]


class ReshardPlanner(DefaultLoadPlanner):
    """A ``DefaultLoadPlanner`` for a descent optimizer's state saved on another sharding
    (another world size, FSDP2 ↔ one process) or in another format (8-bit ↔ float32 or
    bfloat16, torch.optim's float32 checkpoints included)::

        state = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
        dcp.load(state, checkpoint_id=path, planner=descent.ReshardPlanner())
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, opt, state["optim"])

    Where the optimizer asks for an entry that was saved otherwise, it is asked for as
    saved: 8-bit block scales (``<state>.absmax``) of another shape whole; a float state
    the checkpoint holds as 8-bit codes (``<state>.codes`` with ``<state>.absmax``) as
    those; 8-bit codes the checkpoint holds as float values as those. Everything else
    loads as with the default planner (its keyword arguments are taken)."""

    def set_up_planner(
        self, state_dict: dict[str, Any], metadata: Any = None, is_coordinator: bool = False
    ) -> None:
        super().set_up_planner(state_dict, metadata, is_coordinator)
        if metadata is None:
            return
        saved = metadata.state_dict_metadata
        for fqn, obj in list(self.state_dict.items()):
            if not isinstance(obj, torch.Tensor) or fqn not in self.state_dict:
                continue
            codes, scales = fqn + CODES_SUFFIX, fqn + SCALE_SUFFIX
            if fqn.endswith(SCALE_SUFFIX) and _tensor(saved, fqn) and saved[fqn].size != obj.size():
                self._put(fqn, fqn, _whole(saved[fqn]))
            elif fqn not in saved and _tensor(saved, codes) and _tensor(saved, scales):
                # float state asked for, 8-bit codes saved: the optimizer decodes them
                if saved[codes].size == obj.size():
                    self._put(fqn, codes, _like(obj, saved[codes]))
                    self._put(fqn, scales, _whole(saved[scales]))
                    self._drop(fqn)
            elif fqn.endswith(CODES_SUFFIX) and fqn not in saved:
                base = fqn[: -len(CODES_SUFFIX)]
                fits = _tensor(saved, base) and saved[base].size == obj.size()
                if fits and base + SCALE_SUFFIX in self.state_dict:
                    # 8-bit codes asked for, float values saved: the optimizer quantizes them
                    self._put(fqn, base, _like(obj, saved[base]))
                    self._drop(fqn)
                    self._drop(base + SCALE_SUFFIX)

    def _put(self, near: str, fqn: str, value: torch.Tensor) -> None:
        """Entry ``fqn`` of the state dict set to ``value`` (when new, beside ``near``)."""
        self.state_dict[fqn] = value
        if not self.flatten_state_dict:
            return
        path = self.mappings.get(fqn)
        if path is None:
            parent = self.mappings[near][:-1]
            prefix = ".".join(map(str, parent))
            path = self.mappings[fqn] = (*parent, fqn[len(prefix) + 1 :] if prefix else fqn)
        set_element(self.original_state_dict, path, value)

    def _drop(self, fqn: str) -> None:
        self.state_dict.pop(fqn, None)
        if not self.flatten_state_dict:
            return
        path = self.mappings.pop(fqn, None)
        if path is not None:
            parent: Any = self.original_state_dict
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]


def _tensor(saved: dict, fqn: str) -> bool:
    return isinstance(saved.get(fqn), TensorStorageMetadata)


def _whole(meta: TensorStorageMetadata) -> torch.Tensor:
    """A plain tensor for the whole of a saved tensor (every rank reads all of it)."""
    return torch.empty(meta.size, dtype=meta.properties.dtype)


def _like(obj: torch.Tensor, meta: TensorStorageMetadata) -> torch.Tensor:
    """A tensor for a saved one of ``obj``'s shape, placed as ``obj`` is (a DTensor reads
    only this rank's part), of the saved dtype."""
    return torch.empty_like(obj, dtype=meta.properties.dtype)
