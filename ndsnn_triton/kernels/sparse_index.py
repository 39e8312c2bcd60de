"""Compressed index of a weight mask, for the sparse kernels; values stay in the dense weight.

For a mask viewed as ``[rows, cols]`` (rows = output channels, cols = flattened
``(cin, kh, kw)`` or input features):

* CSR: ``row_ptr [rows+1]``, ``col_idx [cap]`` (column of each kept weight, row-major order),
  ``entry_row [cap]`` (its row) and ``entry_flat [cap]`` (its flat index into the weight);
* ``row_order [rows]``: rows sorted by non-zero count, longest first (Sputnik's row swizzle), so
  programs launched together get similar work;
* transpose (CSC) index for the input gradient and the event-driven weight gradient:
  ``col_ptr [cols+1]``, ``t_row_idx [cap]`` / ``t_col_idx [cap]`` (row and column of each entry in
  column-major order), ``t_entry_flat [cap]`` (its flat index into the weight) and
  ``t_entry_csr [cap]`` (its position in the CSR order), pointing into the same dense weight (no
  second copy of values);
* column *groups* of ``group`` consecutive columns (an input channel's ``kh·kw`` taps; 1 for a
  linear layer): ``group_order [cols/group]``, the groups sorted by kept count, longest first
  (the input gradient's and weight gradient's program order); a group's entries are the CSC
  range ``col_ptr[g·group] .. col_ptr[(g+1)·group]``;
* ``tile_base [rows, ceil(cols / REDUCE_BLOCK)]``: kept entries of each row before each
  ``REDUCE_BLOCK``-column tile (the weight gradient's reduce finds an entry's CSR position from it
  and the mask, with no per-row scan).

Built on the device with cumsum and stable sorts (no ``nonzero``). Buffers are sized at the first
build (``cap`` = that mask's non-zero count; NDSNN's count only falls, RigL/SET keep it) and reused
while the count fits. Sizing them needs the non-zero count on the host: ``MaskedLayer.set_mask``
records it (:func:`note_nnz`) at the synchronisation a mask change makes anyway, so a layer's index
is rebuilt with no further one; a mask changed any other way costs one count per change (recorded
for the ``auto`` dispatch too). Indices are cached per mask tensor and version (:func:`get_index`),
so a changed mask is never served a stale index; each holds only cap-sized buffers, and
``ndsnn_triton.kernels.dispatch.clear_caches()`` frees them all.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor

_CACHE_SIZE = 512
#: columns per tile of :attr:`SparseIndex.tile_base` (the weight-gradient reduce's block)
REDUCE_BLOCK = 256


@dataclass
class SparseIndex:
    rows: int
    cols: int
    cap: int
    row_ptr: Tensor  # int32 [rows + 1]
    col_idx: Tensor  # int32 [cap]
    entry_row: Tensor  # int32 [cap]
    entry_flat: Tensor  # int64 [cap]
    row_order: Tensor  # int32 [rows]
    col_ptr: Tensor  # int32 [cols + 1]
    t_row_idx: Tensor  # int32 [cap]
    t_col_idx: Tensor  # int32 [cap]
    t_entry_flat: Tensor  # int64 [cap]
    t_entry_csr: Tensor  # int32 [cap]
    group: int
    group_order: Tensor  # int32 [cols // group]
    tile_base: Tensor  # int32 [rows, ceil(cols / REDUCE_BLOCK)]


def _true_first(flat: Tensor) -> Tensor:
    """Positions of ``flat``'s True entries in order, then the False ones (a stable sort)."""
    return torch.argsort((~flat).to(torch.uint8), stable=True)


def build_index(mask2d: Tensor, cap: int | None = None, group: int = 1) -> SparseIndex:
    """Build the index of a bool ``[rows, cols]`` mask with room for ``cap`` entries (default: nnz),
    its columns grouped ``group`` at a time (``cols`` must be a multiple of ``group``)."""
    rows, cols = mask2d.shape
    if group < 1 or cols % group:
        raise ValueError(f"build_index: {cols} columns do not split into groups of {group}")
    counts = mask2d.sum(1, dtype=torch.int32)
    col_counts = mask2d.sum(0, dtype=torch.int32)
    if cap is None:
        cap = int(counts.sum())  # the one host synchronisation: sizing the buffers
    cap = max(cap, 1)
    zero = torch.zeros(1, dtype=torch.int32, device=mask2d.device)
    row_ptr = torch.cat([zero, counts.cumsum(0, dtype=torch.int32)])
    col_ptr = torch.cat([zero, col_counts.cumsum(0, dtype=torch.int32)])
    # Entries past the current count are pruned positions (the sort's tail): kernels stop at
    # row_ptr / nnz, and the weight-gradient scatter writes their zero partial sums there.
    # The argsorts span the whole mask: clone the cap-sized head so the cached index does not
    # keep the full sort's storage alive (a 1 %-dense mask would hold 100x what it needs).
    pos = _true_first(mask2d.reshape(-1))[:cap].clone()
    pos_t = _true_first(mask2d.t().reshape(-1))[:cap].clone()
    t_flat = (pos_t % rows) * cols + pos_t // rows
    # CSR position of each CSC entry: kept flat positions come first in `pos`, increasing; the
    # pruned tail is pushed past every flat index so the search sees one sorted array.
    nnz = row_ptr[-1].to(torch.int64)
    slots = torch.arange(cap, device=mask2d.device)
    sorted_kept = torch.where(slots < nnz, pos, rows * cols)
    t_entry_csr = torch.searchsorted(sorted_kept, t_flat).clamp_(max=cap - 1).to(torch.int32)
    group_counts = col_counts.reshape(cols // group, group).sum(1)
    tiles = -(-cols // REDUCE_BLOCK)
    padded = torch.nn.functional.pad(mask2d.to(torch.int32), (0, tiles * REDUCE_BLOCK - cols))
    per_tile = padded.reshape(rows, tiles, REDUCE_BLOCK).sum(2, dtype=torch.int32)
    tile_base = (per_tile.cumsum(1, dtype=torch.int32) - per_tile).contiguous()
    return SparseIndex(
        rows=rows,
        cols=cols,
        cap=cap,
        row_ptr=row_ptr,
        col_idx=(pos % cols).to(torch.int32),
        entry_row=(pos // cols).to(torch.int32),
        entry_flat=pos,
        row_order=torch.argsort(counts, descending=True, stable=True).to(torch.int32),
        col_ptr=col_ptr,
        t_row_idx=(pos_t % rows).to(torch.int32),
        t_col_idx=(pos_t // rows).to(torch.int32),
        t_entry_flat=t_flat,
        t_entry_csr=t_entry_csr,
        group=group,
        group_order=torch.argsort(group_counts, descending=True, stable=True).to(torch.int32),
        tile_base=tile_base,
    )


def note_nnz(mask: Tensor, nnz: int) -> None:
    """Record that ``mask`` (at its current version) keeps ``nnz`` entries, known on the host.

    ``MaskedLayer.set_mask`` calls this, so rebuilding the index after a mask update needs no
    further host synchronisation to size its buffers.
    """
    mask._ndsnn_nnz = (mask._version, int(nnz))


def known_nnz(mask: Tensor) -> int | None:
    """The count :func:`note_nnz` recorded for ``mask``'s current version, else None."""
    hint = getattr(mask, "_ndsnn_nnz", None)
    return hint[1] if hint is not None and hint[0] == mask._version else None


class _IndexCache:
    """Indices keyed by the mask tensor's storage, view and version; holds a reference to the mask
    so its storage cannot be reused by another tensor while the entry lives."""

    def __init__(self) -> None:
        self.entries: OrderedDict[tuple, tuple[int, Tensor, SparseIndex]] = OrderedDict()
        self.builds = 0

    def get(self, mask: Tensor, rows: int, cols: int, group: int = 1) -> SparseIndex:
        key = (
            mask.device,
            mask.data_ptr(),
            mask.storage_offset(),
            tuple(mask.shape),
            tuple(mask.stride()),
            rows,
            cols,
            group,
        )
        version = mask._version
        entry = self.entries.get(key)
        if entry is not None and entry[0] == version:
            self.entries.move_to_end(key)
            return entry[2]
        mask2d = mask.reshape(rows, cols)
        nnz = known_nnz(mask)
        cap = nnz
        if entry is not None:
            if nnz is None:
                nnz = int(mask2d.sum())  # sizing check on a mask change only (no hint recorded)
                note_nnz(mask, nnz)
            cap = entry[2].cap if nnz <= entry[2].cap else nnz
        index = build_index(mask2d, cap, group)
        self.builds += 1
        self.entries[key] = (version, mask, index)
        self.entries.move_to_end(key)
        while len(self.entries) > _CACHE_SIZE:
            self.entries.popitem(last=False)
        return index

    def clear(self) -> None:
        """Drop every index and the masks the entries keep alive."""
        self.entries.clear()


INDEX_CACHE = _IndexCache()


def get_index(mask: Tensor, rows: int, cols: int, group: int = 1) -> SparseIndex:
    """The cached index of ``mask`` viewed as ``[rows, cols]`` (columns grouped ``group`` at a
    time), rebuilt when the mask changed."""
    return INDEX_CACHE.get(mask, rows, cols, group)
