"""Masked 2-D convolution over (usually binary) spike maps: pure-PyTorch references, and the
sparse Triton kernels with their launch plans and launchers (below).

Shapes: ``x [N, Cin, H, W]`` (N = T*B), ``weight``/``mask [Cout, Cin/groups, kh, kw]``,
``y [N, Cout, Hout, Wout]``. The effective weight is ``weight`` with the pruned positions
(``mask == False``) set to zero, whatever the stored value there is.

Dtypes: a spike input ``x`` may be float or compact (int8/uint8/bool, 1 byte per spike). The
*compute dtype* is ``x``'s float dtype (or the weight's for compact ``x``): outputs and input
gradients come in it. The weight may be kept in a wider dtype than the compute dtype (fp32
master weights under bf16 autocast): it is read as it is stored, and the weight (and bias)
gradient comes back in the dtype the caller asks for, normally the weight's.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ndsnn_triton.kernels.launch import (
    KernelLaunch,
    LaunchLimitError,
    check_elements,
    check_grid,
    fit_block,
    plan,
)
from ndsnn_triton.kernels.sparse_index import REDUCE_BLOCK, get_index
from ndsnn_triton.kernels.triton_utils import HAS_TRITON, cdiv, tl, triton
from ndsnn_triton.kernels.work import forward_skips_silent_maps, out_hw


def apply_mask(weight: Tensor, mask: Tensor) -> Tensor:
    """``weight`` with the positions where ``mask`` is False set to exactly zero (a new tensor)."""
    return weight.masked_fill(~mask, 0)


def compute_dtype(x: Tensor, weight: Tensor) -> torch.dtype:
    """The dtype a masked layer computes in: ``x``'s if floating, else (compact spikes) the weight's."""
    return x.dtype if x.is_floating_point() else weight.dtype


def masked_conv2d_ref(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    spikes: Tensor | None = None,
    active: Tensor | None = None,
) -> Tensor:
    """Forward ``y = conv2d(x, weight ⊙ mask) + bias`` in the compute dtype, returned contiguous.

    ``spikes``/``active`` (the compact copy and map activity the sparse kernel may use) do not
    change the result and are ignored here.
    """
    dtype = compute_dtype(x, weight)
    w = apply_mask(weight, mask).to(dtype)
    b = None if bias is None else bias.to(dtype)
    y = F.conv2d(x.to(dtype), w, b, stride, padding, dilation, groups)
    return y.contiguous()


def masked_conv2d_input_grad_ref(
    grad_out: Tensor,
    weight: Tensor,
    mask: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> Tensor:
    """Input gradient ``dX = dY ⊛ (weight ⊙ mask)ᵀ`` of shape ``input_size``, in dY's dtype."""
    # convolution_backward only reads the input's shape for dX: a stride-0 view costs nothing.
    x_shape_only = grad_out.new_empty(1).expand(input_size)
    grad_x = torch.ops.aten.convolution_backward(
        grad_out,
        x_shape_only,
        apply_mask(weight, mask).to(grad_out.dtype),
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [True, False, False],
    )[0]
    return grad_x.contiguous()


def masked_conv2d_weight_grad_ref(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    dense: bool,
    grad_dtype: torch.dtype | None = None,
    has_bias: bool = False,
) -> tuple[Tensor, Tensor]:
    """``(dW, db)``: weight gradient ``dYᵀ ⊛ X``, zero off the mask unless ``dense`` (growth
    steps), and the bias gradient ``Σ dY`` over samples and positions (empty ``[0]`` unless
    ``has_bias``); both computed in dY's dtype and returned in ``grad_dtype`` (default dY's).

    ``x`` may be the int8 copy of binary spikes that the forward saved.
    """
    grad_dtype = grad_out.dtype if grad_dtype is None else grad_dtype
    x = x.to(grad_out.dtype)
    w_shape_only = x.new_empty(1).expand(mask.shape)
    grad_w = torch.ops.aten.convolution_backward(
        grad_out,
        x,
        w_shape_only,
        None,
        stride,
        padding,
        dilation,
        False,
        [0, 0],
        groups,
        [False, True, False],
    )[1]
    if not dense:
        grad_w = grad_w.masked_fill(~mask, 0)
    if has_bias:
        grad_b = grad_out.sum(dim=(0, 2, 3)).to(grad_dtype)
    else:
        grad_b = grad_out.new_empty(0, dtype=grad_dtype)
    return grad_w.to(grad_dtype).contiguous(), grad_b


# ----------------------------------------------------------------------------- Triton kernels
#
# Sparse weights on CUDA cores, "pull" gather, vectorised over kept weights: a program owns ROWS
# output channels (taken in row_order, longest rows first) and a tile of S samples × Q output
# positions of one map. For each of its rows it loads BLOCK_K kept weights at once (their column
# indices as a vector), gathers the shifted inputs as one [BLOCK_K, S, Q] tile (int8 spikes: one
# byte per value) and reduces over the kept weights inside each thread (the tile's first axis
# stays in registers), accumulating in fp32: a row of ~BLOCK_K kept weights costs one iteration,
# not BLOCK_K dependent ones. With the map activity of the input (SKIP), the gathers of a
# (kept weight, sample) pair whose input map is silent are predicated off — one [BLOCK_K, S]
# activity load per iteration, nothing per lane and no branch.
#
# At 1 % density a row holds a few kept weights, so a program's time is a chain of dependent
# loads (index → weight → input), not bandwidth. The gather loops are software-pipelined by hand
# over one flat loop of (row, chunk) items of all the program's rows: item i gathers while item
# i+1's weights (and activity) and item i+2's column indices are in flight.
#
# The input gradient is the same gather over the transpose index: a program owns CHANS input
# channels (longest first) and a tile of input positions, and pulls dY through the channel's kept
# weights (every tap of the channel at once).
#
# The weight gradient is driven by spikes: one program per (sample chunk, input channel) finds
# the chunk's spikes (non-zero inputs; an analog input's values are read back at them) itself — a tile of the int8 input is scanned with a block-wide prefix sum and
# its events (non-zero inputs at positions some tap maps onto the output) are written, packed as
# (sample, row, column) bit fields, to a per-program scratch slot, then read back as a compact
# list — and multiplies each kept weight of the channel with those events only, so its work is
# ∝ kept weights × spikes and no pass over the input runs before it. Extra programs of the same
# launch sum dY per output channel for the bias gradient. Partial sums (per chunk) go to a
# [cap, chunks] fp32 buffer that one more launch reduces in a fixed order, writing the dense
# gradient (zeros off the mask) in its final dtype: deterministic, no float atomics, no fills.
#
# work.py states the executed MACs; with COUNT_WORK the kernels count them (instrumented
# interpreter tests). Grids put position tiles on axis 0 (up to 2³¹ − 1 programs) and channel
# groups on axis 1 (CUDA caps axes 1 and 2 at 65,535). Offsets are int32: the plans refuse
# tensors past that range.


if HAS_TRITON:

    @triton.jit
    def _output_position(th, tw, OH, OW, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr):
        """The output position ``(oh, ow)`` a tap reaches from ``(th, tw)`` = input position +
        padding − tap offset, and whether it exists (in range, on the stride's grid)."""
        if STRIDE_H == 1:
            oh = th
            ok = (th >= 0) & (th < OH)
        else:
            oh = th // STRIDE_H
            ok = (th >= 0) & (th % STRIDE_H == 0) & (oh < OH)
        if STRIDE_W == 1:
            ow = tw
            ok = ok & (tw >= 0) & (tw < OW)
        else:
            ow = tw // STRIDE_W
            ok = ok & (tw >= 0) & (tw % STRIDE_W == 0) & (ow < OW)
        return oh, ow, ok

    @triton.jit
    def _item(i, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K: tl.constexpr):
        """Item ``i`` of a program's flat loop over (row, chunk of BLOCK_K entries) of its rows:
        the chunk's entry indices and mask, the row's tag (its channel) and whether the item is
        the row's last. Past ``total``: an all-masked item."""
        slot = tl.sum((items_end <= i).to(tl.int32), axis=0)
        pick = slots == slot
        first = tl.sum(tl.where(pick, items_end - items_n, 0), axis=0)
        e = (
            tl.sum(tl.where(pick, starts, 0), axis=0)
            + (i - first) * BLOCK_K
            + tl.arange(0, BLOCK_K)
        )
        # past the last item the limit is 0 (a scalar bool & a vector one would not broadcast in
        # the interpreter)
        limit = tl.where(total > i, tl.sum(tl.where(pick, ends, 0), axis=0), 0)
        emask = e < limit
        tag = tl.sum(tl.where(pick, tags, 0), axis=0)
        last = i + 1 == tl.sum(tl.where(pick, items_end, 0), axis=0)
        return e, emask, tag, last

    @triton.jit
    def _items_of(slots, valid, starts, ends, BLOCK_K: tl.constexpr):
        """Per row slot: its items (chunks, at least one so an empty row is written too), their
        running end, and the program's total."""
        items_n = tl.where(valid, tl.maximum((ends - starts + BLOCK_K - 1) // BLOCK_K, 1), 0)
        items_end = tl.cumsum(items_n, axis=0)
        return items_n, items_end, tl.sum(items_n, axis=0)

    @triton.jit
    def _conv_fwd_kernel(
        x_ptr, w_ptr, bias_ptr, row_ptr, col_idx, row_order, active_ptr, y_ptr, work_ptr,
        N, C, H, W, OC, OH, OW, K, KH, KW, QT, pad_h, pad_w, stride_h, stride_w, dil_h, dil_w,
        HAS_BIAS: tl.constexpr, SKIP: tl.constexpr,
        S: tl.constexpr, Q: tl.constexpr, BLOCK_K: tl.constexpr, ROWS: tl.constexpr,
        COUNT_WORK: tl.constexpr,
    ):  # fmt: skip
        tile = tl.program_id(0)
        n = (tile // QT) * S + tl.arange(0, S)  # [S] samples
        q = (tile % QT) * Q + tl.arange(0, Q)  # [Q] output positions of one map
        OHW = OH * OW
        nmask = n < N
        qmask = q < OHW
        ih0 = (q // OW) * stride_h - pad_h
        iw0 = (q % OW) * stride_w - pad_w
        x_n = n * (C * H * W)
        out_mask = nmask[:, None] & qmask[None, :]
        n_q = tl.sum(qmask.to(tl.int32), axis=0)
        # the program's rows (output channels, longest first) and its flat (row, chunk) items
        slots = tl.arange(0, ROWS)
        valid = tl.program_id(1) * ROWS + slots < OC
        tags = tl.load(row_order + tl.program_id(1) * ROWS + slots, mask=valid, other=0)
        starts = tl.load(row_ptr + tags, mask=valid, other=0)
        ends = tl.load(row_ptr + tags + 1, mask=valid, other=0)
        items_n, items_end, total = _items_of(slots, valid, starts, ends, BLOCK_K)
        # Software pipeline: while item i gathers its inputs, item i+1 loads its weights and
        # activity and item i+2 its column indices — no gather waits for an index load.
        e_a, m_a, o_a, last_a = _item(
            0, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K
        )
        k_a = tl.load(col_idx + e_a, mask=m_a, other=0)
        e_b, m_b, o_b, last_b = _item(
            1, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K
        )
        k_b = tl.load(col_idx + e_b, mask=m_b, other=0)
        w_a = tl.load(w_ptr + o_a * K + k_a, mask=m_a, other=0).to(tl.float32)
        live_a = m_a[:, None] & nmask[None, :]  # [BLOCK_K, S]
        if SKIP:
            act = tl.load(
                active_ptr + n[None, :] * C + (k_a // (KH * KW))[:, None], mask=live_a, other=0
            )
            live_a = live_a & (act != 0)
        acc = tl.zeros([S, Q], dtype=tl.float32)
        for i in range(total):
            e_c, m_c, o_c, last_c = _item(
                i + 2, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K
            )
            k_c = tl.load(col_idx + e_c, mask=m_c, other=0)
            w_b = tl.load(w_ptr + o_b * K + k_b, mask=m_b, other=0).to(tl.float32)
            live_b = m_b[:, None] & nmask[None, :]
            if SKIP:
                act = tl.load(
                    active_ptr + n[None, :] * C + (k_b // (KH * KW))[:, None], mask=live_b, other=0
                )
                live_b = live_b & (act != 0)
            # item i: gather the shifted inputs of its kept weights, reduce in registers
            c = k_a // (KH * KW)
            tap = k_a % (KH * KW)
            ih = ih0[None, :] + ((tap // KW) * dil_h)[:, None]  # [BLOCK_K, Q]
            iw = iw0[None, :] + ((tap % KW) * dil_w)[:, None]
            inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W) & qmask[None, :]
            offs = x_n[None, :, None] + (c * (H * W))[:, None, None] + (ih * W + iw)[:, None, :]
            xv = tl.load(x_ptr + offs, mask=live_a[:, :, None] & inside[:, None, :], other=0)
            acc += tl.sum(w_a[:, None, None] * xv.to(tl.float32), axis=0)
            if COUNT_WORK:
                lanes = tl.sum(tl.sum(live_a.to(tl.int32), axis=1), axis=0) * n_q
                tl.atomic_add(work_ptr, lanes.to(tl.int64))
            if last_a:  # the row is complete: write it
                out = acc
                if HAS_BIAS:
                    out += tl.load(bias_ptr + o_a).to(tl.float32)
                y_offs = ((n * OC + o_a) * OHW)[:, None] + q[None, :]
                tl.store(y_ptr + y_offs, out.to(y_ptr.dtype.element_ty), mask=out_mask)
                acc = tl.zeros([S, Q], dtype=tl.float32)
            k_a, m_a, o_a, last_a, w_a, live_a = k_b, m_b, o_b, last_b, w_b, live_b
            k_b, m_b, o_b, last_b = k_c, m_c, o_c, last_c

    @triton.jit
    def _conv_dgrad_kernel(
        dy_ptr, w_ptr, col_ptr, t_row_idx, t_col_idx, group_order, dx_ptr, work_ptr,
        N, C, H, W, OC, OH, OW, K, KH, KW, QT, pad_h, pad_w, dil_h, dil_w,
        STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr, S: tl.constexpr, Q: tl.constexpr,
        BLOCK_K: tl.constexpr, CHANS: tl.constexpr, COUNT_WORK: tl.constexpr,
    ):  # fmt: skip
        tile = tl.program_id(0)
        n = (tile // QT) * S + tl.arange(0, S)  # [S] samples
        q = (tile % QT) * Q + tl.arange(0, Q)  # [Q] input positions of one map
        HW = H * W
        OHW = OH * OW
        nmask = n < N
        qmask = q < HW
        th0 = q // W + pad_h
        tw0 = q % W + pad_w
        dy_n = n * (OC * OHW)
        out_mask = nmask[:, None] & qmask[None, :]
        n_lanes = tl.sum(nmask.to(tl.int32), axis=0) * tl.sum(qmask.to(tl.int32), axis=0)
        # the program's input channels (longest columns first) and its flat (channel, chunk) items
        slots = tl.arange(0, CHANS)
        valid = tl.program_id(1) * CHANS + slots < C
        tags = tl.load(group_order + tl.program_id(1) * CHANS + slots, mask=valid, other=0)
        starts = tl.load(col_ptr + tags * (KH * KW), mask=valid, other=0)
        ends = tl.load(col_ptr + (tags + 1) * (KH * KW), mask=valid, other=0)
        items_n, items_end, total = _items_of(slots, valid, starts, ends, BLOCK_K)
        # Software pipeline: item i+1 loads its transpose-index entries while item i gathers dY.
        t_a, m_a, c_a, last_a = _item(
            0, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K
        )
        o_a = tl.load(t_row_idx + t_a, mask=m_a, other=0)
        k_a = tl.load(t_col_idx + t_a, mask=m_a, other=0)
        acc = tl.zeros([S, Q], dtype=tl.float32)
        for i in range(total):
            t_b, m_b, c_b, last_b = _item(
                i + 1, total, slots, items_end, items_n, starts, ends, tags, BLOCK_K
            )
            o_b = tl.load(t_row_idx + t_b, mask=m_b, other=0)
            k_b = tl.load(t_col_idx + t_b, mask=m_b, other=0)
            # item i: its weights and the dY its taps reach
            wv = tl.load(w_ptr + o_a * K + k_a, mask=m_a, other=0).to(tl.float32)
            tap = k_a - c_a * (KH * KW)
            th = th0[None, :] - ((tap // KW) * dil_h)[:, None]  # [BLOCK_K, Q]
            tw = tw0[None, :] - ((tap % KW) * dil_w)[:, None]
            oh, ow, ok = _output_position(th, tw, OH, OW, STRIDE_H, STRIDE_W)
            ok = ok & m_a[:, None] & qmask[None, :]
            offs = dy_n[None, :, None] + (o_a * OHW)[:, None, None] + (oh * OW + ow)[:, None, :]
            g_v = tl.load(dy_ptr + offs, mask=ok[:, None, :] & nmask[None, :, None], other=0)
            acc += tl.sum(wv[:, None, None] * g_v.to(tl.float32), axis=0)
            if COUNT_WORK:
                tl.atomic_add(work_ptr, (tl.sum(m_a.to(tl.int32), axis=0) * n_lanes).to(tl.int64))
            if last_a:  # the channel is complete: write it
                dx_offs = ((n * C + c_a) * HW)[:, None] + q[None, :]
                tl.store(dx_ptr + dx_offs, acc.to(dx_ptr.dtype.element_ty), mask=out_mask)
                acc = tl.zeros([S, Q], dtype=tl.float32)
            t_a, m_a, c_a, last_a, o_a, k_a = t_b, m_b, c_b, last_b, o_b, k_b

    @triton.jit
    def _bias_partial(
        dy_ptr, out_ptr, o, j, n_lo, n_hi, OC, OHW, CHUNKS, BS: tl.constexpr, BQ: tl.constexpr
    ):
        """``out[o, j] = Σ dY[n, o, :, :]`` over samples ``n_lo ≤ n < n_hi``, in fp32."""
        s_ = tl.arange(0, BS)
        p_ = tl.arange(0, BQ)
        total = tl.zeros([BS, BQ], dtype=tl.float32)
        for s0 in range(n_lo, n_hi, BS):
            for p0 in range(0, OHW, BQ):
                nn = s0 + s_
                pp = p0 + p_
                m = (nn < n_hi)[:, None] & (pp < OHW)[None, :]
                g = tl.load(dy_ptr + ((nn * OC + o) * OHW)[:, None] + pp[None, :], mask=m, other=0)
                total += g.to(tl.float32)
        tl.store(out_ptr + o * CHUNKS + j, tl.sum(tl.sum(total, axis=1), axis=0))

    @triton.jit
    def _wgrad_tile(
        x_ptr, c, C, HW, n_lo, n_hi, tt, n_tiles, q_tiles, TS: tl.constexpr, TQ: tl.constexpr
    ):
        """The input of compaction tile ``tt`` of a chunk: ``[TS, TQ]`` values of channel ``c``
        (zeros past the chunk, the map, or the last tile)."""
        nn = n_lo + (tt // q_tiles) * TS + tl.arange(0, TS)
        pos = (tt % q_tiles) * TQ + tl.arange(0, TQ)
        live = tl.where(n_tiles > tt, n_hi, 0)  # a vector bound: past the last tile, none
        m = (nn < live)[:, None] & (pos < HW)[None, :]
        return tl.load(x_ptr + ((nn * C + c) * HW)[:, None] + pos[None, :], mask=m, other=0)

    @triton.jit
    def _conv_wgrad_kernel(
        dy_ptr, x_ptr, col_ptr, t_row_idx, t_col_idx, t_entry_csr, scratch_ptr, partial_ptr,
        bias_partial_ptr, work_ptr,
        N, C, H, W, OC, OH, OW, SPC, CHUNKS, pad_h, pad_w, dil_h, dil_w,
        KH: tl.constexpr, KW: tl.constexpr, STRIDE_H: tl.constexpr, STRIDE_W: tl.constexpr,
        TS: tl.constexpr, TQ: tl.constexpr,
        BLOCK_E: tl.constexpr, BLOCK_Q: tl.constexpr, BS: tl.constexpr, BQ: tl.constexpr,
        HAS_BIAS: tl.constexpr, BINARY: tl.constexpr, COUNT_WORK: tl.constexpr,
    ):  # fmt: skip
        j = tl.program_id(0)
        c = tl.program_id(1)
        HW = H * W
        OHW = OH * OW
        n_lo = j * SPC
        n_hi = tl.minimum(n_lo + SPC, N)
        if HAS_BIAS and c >= C:
            # bias programs: Σ dY over this chunk's samples and every position of channel o
            _bias_partial(dy_ptr, bias_partial_ptr, c - C, j, n_lo, n_hi, OC, OHW, CHUNKS, BS, BQ)
        else:
            t_lo = tl.load(col_ptr + c * (KH * KW))
            t_hi = tl.load(col_ptr + (c + 1) * (KH * KW))
            scratch = scratch_ptr + (c * CHUNKS + j) * (TS * TQ)
            ts = tl.arange(0, TS)
            tq = tl.arange(0, TQ)
            slot = tl.arange(0, BLOCK_Q)
            # the chunk's tiles of TS samples × TQ positions, walked in one loop
            q_tiles = (HW + TQ - 1) // TQ
            n_tiles = ((n_hi - n_lo + TS - 1) // TS) * q_tiles
            for e0 in range(t_lo, t_hi, BLOCK_E):
                t = e0 + tl.arange(0, BLOCK_E)
                tmask = t < t_hi
                o = tl.load(t_row_idx + t, mask=tmask, other=0)
                tap = tl.load(t_col_idx + t, mask=tmask, other=0) - c * (KH * KW)
                kh_d = (tap // KW) * dil_h
                kw_d = (tap % KW) * dil_w
                dy_o = o * OHW
                acc = tl.zeros(
                    [BLOCK_E, BLOCK_Q], dtype=tl.float32
                )  # summed over events at the end
                # the next tile's input is loaded while this tile's events are gathered: a silent
                # tile costs only its scan
                xv = _wgrad_tile(x_ptr, c, C, HW, n_lo, n_hi, 0, n_tiles, q_tiles, TS, TQ)
                for tt in range(n_tiles):
                    s0 = n_lo + (tt // q_tiles) * TS
                    pos = (tt % q_tiles) * TQ + tq
                    # --- this tile's events: non-zero inputs at usable positions, compacted
                    ih = pos // W
                    iw = pos % W
                    rows = tl.zeros([TQ], dtype=tl.int1)
                    for kh in tl.static_range(KH):
                        uh = ih + pad_h - kh * dil_h
                        rows = rows | ((uh >= 0) & (uh % STRIDE_H == 0) & (uh // STRIDE_H < OH))
                    cols = tl.zeros([TQ], dtype=tl.int1)
                    for kw in tl.static_range(KW):
                        uw = iw + pad_w - kw * dil_w
                        cols = cols | ((uw >= 0) & (uw % STRIDE_W == 0) & (uw // STRIDE_W < OW))
                    flag = ((xv != 0) & (rows & cols & (pos < HW))[None, :]).to(tl.int32)
                    per_row = tl.sum(flag, axis=1)
                    rank = (
                        (tl.cumsum(per_row, axis=0) - per_row)[:, None]
                        + tl.cumsum(flag, axis=1)
                        - flag
                    )
                    packed = (ts[:, None] << 16) | (ih << 8)[None, :] | iw[None, :]
                    tl.store(scratch + rank, packed, mask=flag != 0)
                    n_events = tl.sum(per_row, axis=0)
                    xv = _wgrad_tile(x_ptr, c, C, HW, n_lo, n_hi, tt + 1, n_tiles, q_tiles, TS, TQ)
                    tl.debug_barrier()
                    # --- every kept weight of the channel meets every event of the tile
                    for v0 in range(0, n_events, BLOCK_Q):
                        vmask = v0 + slot < n_events
                        ev = tl.load(scratch + v0 + slot, mask=vmask, other=0)
                        en = s0 + (ev >> 16)
                        th = (
                            ((ev >> 8) & 255)[None, :] + pad_h - kh_d[:, None]
                        )  # [BLOCK_E, BLOCK_Q]
                        tw = (ev & 255)[None, :] + pad_w - kw_d[:, None]
                        oh, ow, ok = _output_position(th, tw, OH, OW, STRIDE_H, STRIDE_W)
                        both = tmask[:, None] & vmask[None, :]
                        g = tl.load(
                            dy_ptr + (en * (OC * OHW))[None, :] + dy_o[:, None] + oh * OW + ow,
                            mask=both & ok,
                            other=0,
                        )
                        if BINARY:  # an event is a 1
                            acc += g.to(tl.float32)
                        else:  # analog input: weigh by the value at the event
                            xe = tl.load(
                                x_ptr + (en * C + c) * HW + ((ev >> 8) & 255) * W + (ev & 255),
                                mask=vmask,
                                other=0,
                            )
                            acc += g.to(tl.float32) * xe.to(tl.float32)[None, :]
                        if COUNT_WORK:
                            tl.atomic_add(
                                work_ptr,
                                tl.sum(tl.sum(both.to(tl.int32), axis=1), axis=0).to(tl.int64),
                            )
                    tl.debug_barrier()  # the next tile's events overwrite the scratch slot
                e_csr = tl.load(t_entry_csr + t, mask=tmask, other=0)
                tl.store(partial_ptr + e_csr * CHUNKS + j, tl.sum(acc, axis=1), mask=tmask)

    @triton.jit
    def _wgrad_reduce_kernel(
        partial_ptr, bias_partial_ptr, mask_ptr, row_ptr, tile_base, grad_ptr, grad_bias_ptr,
        K, TILES, CHUNKS,
        RB: tl.constexpr, CB: tl.constexpr, HAS_BIAS: tl.constexpr,
    ):  # fmt: skip
        tb = tl.program_id(0)
        o = tl.program_id(1)
        k = tb * RB + tl.arange(0, RB)
        inside = k < K
        kept = (tl.load(mask_ptr + o * K + k, mask=inside, other=0) != 0).to(tl.int32)
        first = tl.load(row_ptr + o) + tl.load(tile_base + o * TILES + tb)
        e = first + tl.cumsum(kept, axis=0) - kept
        total = tl.zeros([RB], dtype=tl.float32)
        jj = tl.arange(0, CB)
        for j0 in range(0, CHUNKS, CB):
            m = (kept != 0)[:, None] & (j0 + jj < CHUNKS)[None, :]
            part = tl.load(partial_ptr + e[:, None] * CHUNKS + (j0 + jj)[None, :], mask=m, other=0)
            total += tl.sum(part, axis=1)
        tl.store(grad_ptr + o * K + k, total.to(grad_ptr.dtype.element_ty), mask=inside)
        if HAS_BIAS and tb == 0:
            b = tl.zeros([CB], dtype=tl.float32)
            for j0 in range(0, CHUNKS, CB):
                b += tl.load(
                    bias_partial_ptr + o * CHUNKS + j0 + jj, mask=j0 + jj < CHUNKS, other=0
                )
            tl.store(grad_bias_ptr + o, tl.sum(b, axis=0).to(grad_bias_ptr.dtype.element_ty))


# ----------------------------------------------------------------------------- launch plans

_I32 = "i32"
#: lanes (kept weights × positions) one gather iteration of the forward / input gradient holds:
#: 8 per thread on 4 warps (the input gradient stays under 64 registers; the forward is capped, below)
GATHER_TILE = 1024
#: kept weights per gather iteration: the power of two at or above a row's (column's) mean kept
#: count, within these bounds
MIN_BLOCK_K, MAX_BLOCK_K = 2, 4
#: largest position tile of the forward / input gradient
MAX_POSITIONS = 512
#: programs a forward / input-gradient launch aims for before it folds several channels into one
#: program (16 per SM on 132 SMs): short programs left on their own would pay their position
#: arithmetic and launch-slot latency once per channel
CHANNEL_FOLD_PROGRAMS = 4224
#: most channels one forward / input-gradient program handles
MAX_CHANNELS_PER_PROGRAM = 8
#: weight gradient: input positions one compaction tile scans; events per gather block; kept
#: weights per gather block (bounds); programs the launch aims for; most sample chunks
WGRAD_TILE = 256
#: lanes of one event gather (kept weights × events): 4 per thread on 4 warps
WGRAD_GATHER = 512
MIN_BLOCK_E, MAX_BLOCK_E = 4, 8
WGRAD_PROGRAMS = 2048
MAX_CHUNKS = 64
#: largest map the weight gradient's packed events address (8-bit row and column fields) and the
#: most samples a compaction tile holds (16-bit sample field)
MAX_EVENT_MAP = 256
#: register caps (per thread, ptxas ``maxnreg``). Left to itself ptxas gives the pipelined
#: forward's widest tiles and the weight gradient's stride-2 and many-sample tiles 70–95
#: registers (31–44 % occupancy). The forward at 72 keeps 7 blocks of 4 warps per SM (44 %)
#: without spilling (at 64 it would spill up to 56 B); the weight gradient at 64 keeps half
#: occupancy for at most 24 B of spill in some tiles (tests/test_aot_compile.py bounds both)
FWD_MAX_REGISTERS = 72
WGRAD_MAX_REGISTERS = 64
#: chunks the weight-gradient reduce sums per iteration (REDUCE_BLOCK × 4 partial sums in flight)
REDUCE_CHUNKS = 4
#: warps of every conv kernel (4: 128 threads)
CONV_NUM_WARPS = 4
#: compile options pinned per kernel, so results do not follow Triton's changing defaults. The
#: conv kernels accumulate ``acc += w·x`` with fused multiply-adds (one rounding per term).
CONV_FP_FUSION = True
#: software-pipelining depth of the gather loops (Triton's default, stated explicitly)
CONV_NUM_STAGES = 3


def _ptr(dtype: torch.dtype) -> torch.dtype:
    """The element dtype a tensor is passed to the kernels as (bool spikes travel as int8)."""
    return torch.int8 if dtype == torch.bool else dtype


def _pow2_at_least(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def kept_block(mean_kept: float, largest: int = MAX_BLOCK_K, smallest: int = MIN_BLOCK_K) -> int:
    """Kept weights per gather iteration for rows (columns) holding ``mean_kept`` on average."""
    return max(smallest, min(largest, _pow2_at_least(max(1, round(mean_kept)))))


def position_tile(maps: int, positions: int, lanes: int) -> tuple[int, int]:
    """``(S, Q)``: a tile of ``S`` samples × ``Q`` positions of one map holding ``lanes`` lanes
    (powers of two; ``Q`` covers the map where it fits, ``S`` no more samples than exist)."""
    q = min(_pow2_at_least(positions), lanes)
    s = min(max(1, lanes // q), _pow2_at_least(maps))
    return s, q


def _gather_plan(
    maps: int, positions: int, channels: int, mean_kept: float
) -> tuple[int, int, int, int, tuple[int, int], int]:
    """``(BLOCK_K, S, Q, channels per program, grid, QT)`` of a forward / input-gradient launch."""
    block_k = kept_block(mean_kept)
    lanes = min(MAX_POSITIONS, GATHER_TILE // block_k)
    # smaller tiles (not below one warp's 32 lanes) where the launch would not fill the GPU
    while lanes > 32 and cdiv(maps * positions, lanes) * channels < CHANNEL_FOLD_PROGRAMS // 4:
        lanes //= 2
    s, q = position_tile(maps, positions, lanes)
    qt = cdiv(positions, q)
    tiles = cdiv(maps, s) * qt
    fold = 1
    while (
        fold < MAX_CHANNELS_PER_PROGRAM
        and tiles * cdiv(channels, 2 * fold) >= CHANNEL_FOLD_PROGRAMS
    ):
        fold *= 2
    return block_k, s, q, fold, (tiles, cdiv(channels, fold)), qt


def _scalars(*names: str) -> dict[str, str]:
    return dict.fromkeys(names, _I32)


_GEOMETRY_SCALARS = ("N", "C", "H", "W", "OC", "OH", "OW")
#: the forward's and input gradient's further scalars (stride: the input gradient's constexpr)
_CONV_SCALARS = ("K", "KH", "KW", "QT", "pad_h", "pad_w", "dil_h", "dil_w")


@plan("conv_fwd")
def conv_fwd_plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    x_dtype: torch.dtype,
    w_dtype: torch.dtype,
    y_dtype: torch.dtype,
    has_bias: bool,
    skip: bool,
    cap: int,
    count_work: bool = False,
) -> KernelLaunch:
    """The forward's launch for ``x [N, C, H, W]`` and ``weight [OC, C, KH, KW]`` (groups = 1)
    whose mask keeps ``cap`` weights; ``skip``: map activity is given (and the maps are large
    enough for it to pay, :func:`~ndsnn_triton.kernels.work.forward_skips_silent_maps`);
    ``count_work`` compiles in the executed-MAC counter (tests only)."""
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d (Triton forward)"
    check_elements(name, x=n * c * h * w, weight=oc * c * kh * kw, output=n * oc * oh * ow)
    block_k, s, q, rows, grid, qt = _gather_plan(n, oh * ow, oc, cap / max(oc, 1))
    check_grid(name, grid)
    return KernelLaunch(
        name="conv_fwd",
        kernel=_conv_fwd_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "x_ptr": _ptr(x_dtype),
            "w_ptr": w_dtype,
            "bias_ptr": w_dtype,
            "row_ptr": torch.int32,
            "col_idx": torch.int32,
            "row_order": torch.int32,
            "active_ptr": torch.int8,
            "y_ptr": y_dtype,
            "work_ptr": torch.int64,
        },
        scalars=_scalars(*_GEOMETRY_SCALARS, *_CONV_SCALARS, "stride_h", "stride_w"),
        constexprs={
            "HAS_BIAS": bool(has_bias),
            "SKIP": bool(skip) and forward_skips_silent_maps(oh * ow),
            "S": s,
            "Q": q,
            "BLOCK_K": block_k,
            "ROWS": rows,
            "COUNT_WORK": bool(count_work),
        },
        num_warps=CONV_NUM_WARPS if s * q >= 128 else max(1, s * q // 32),
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
        values={"QT": qt},
        max_registers=FWD_MAX_REGISTERS,
    )


@plan("conv_dgrad")
def conv_dgrad_plan(
    input_size: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    dy_dtype: torch.dtype,
    w_dtype: torch.dtype,
    cap: int,
    count_work: bool = False,
) -> KernelLaunch:
    """The input gradient's launch: ``dY [N, OC, OH, OW]`` (``dy_dtype``) to ``dX`` of
    ``input_size`` in the same dtype, through a mask keeping ``cap`` weights."""
    n, c, h, w = input_size
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d_input_grad (Triton)"
    check_elements(
        name, grad_input=n * c * h * w, weight=oc * c * kh * kw, grad_out=n * oc * oh * ow
    )
    block_k, s, q, chans, grid, qt = _gather_plan(n, h * w, c, cap / max(c, 1))
    check_grid(name, grid)
    return KernelLaunch(
        name="conv_dgrad",
        kernel=_conv_dgrad_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "dy_ptr": dy_dtype,
            "w_ptr": w_dtype,
            "col_ptr": torch.int32,
            "t_row_idx": torch.int32,
            "t_col_idx": torch.int32,
            "group_order": torch.int32,
            "dx_ptr": dy_dtype,
            "work_ptr": torch.int64,
        },
        scalars=_scalars(
            *_GEOMETRY_SCALARS, "K", "KH", "KW", "QT", "pad_h", "pad_w", "dil_h", "dil_w"
        ),
        constexprs={
            "STRIDE_H": int(stride[0]),
            "STRIDE_W": int(stride[1]),
            "S": s,
            "Q": q,
            "BLOCK_K": block_k,
            "CHANS": chans,
            "COUNT_WORK": bool(count_work),
        },
        num_warps=CONV_NUM_WARPS if s * q >= 128 else max(1, s * q // 32),
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
        values={"QT": qt},
    )


def wgrad_chunks(n: int, c: int, ts: int) -> tuple[int, int]:
    """``(chunks, samples per chunk)`` of the weight gradient over ``n`` samples and ``c`` input
    channels: enough chunks per channel to offer :data:`WGRAD_PROGRAMS` programs, at most
    :data:`MAX_CHUNKS`, each a whole number of ``ts``-sample compaction tiles."""
    if n == 0:
        return 0, 1
    chunks = max(1, min(MAX_CHUNKS, cdiv(n, ts), cdiv(WGRAD_PROGRAMS, max(c, 1))))
    per_chunk = cdiv(cdiv(n, chunks), ts) * ts
    return cdiv(n, per_chunk), per_chunk


@plan("conv_wgrad")
def conv_wgrad_plan(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    cap: int,
    dy_dtype: torch.dtype,
    x_dtype: torch.dtype,
    has_bias: bool = False,
    count_work: bool = False,
) -> KernelLaunch:
    """The event-driven weight gradient's launch over the ``cap`` index entries of a ``w_shape``
    mask: one program per (sample chunk, input channel), plus one per (chunk, output channel)
    for the bias; partial sums ``[cap, chunks]`` fp32 (``values["CHUNKS"]``)."""
    n, c, h, w = x_shape
    oc, _, kh, kw = w_shape
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    name = "ndsnn::masked_conv2d_weight_grad (Triton)"
    if max(h, w) > MAX_EVENT_MAP:
        raise LaunchLimitError(
            f"{name}: input maps of {h}×{w} exceed the {MAX_EVENT_MAP}×{MAX_EVENT_MAP} its packed "
            "events address; use backend 'torch' (backend 'auto' runs cuDNN)"
        )
    tile = fit_block(max(n, 1) * h * w, 32, WGRAD_TILE)
    ts, tq = position_tile(n, h * w, tile)
    chunks, per_chunk = wgrad_chunks(n, c, ts)
    check_elements(
        name,
        input=n * c * h * w,
        grad_out=n * oc * oh * ow,
        partial_sums=chunks * max(cap, 1),
        event_scratch=chunks * c * ts * tq,
    )
    grid = (chunks, c + (oc if has_bias else 0))
    check_grid(name, grid)
    bs, bq = position_tile(per_chunk, oh * ow, fit_block(max(n, 1) * oh * ow, 32, WGRAD_TILE))
    block_e = kept_block(cap / max(c, 1), MAX_BLOCK_E, MIN_BLOCK_E)
    return KernelLaunch(
        name="conv_wgrad",
        kernel=_conv_wgrad_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "dy_ptr": dy_dtype,
            "x_ptr": _ptr(x_dtype),
            "col_ptr": torch.int32,
            "t_row_idx": torch.int32,
            "t_col_idx": torch.int32,
            "t_entry_csr": torch.int32,
            "scratch_ptr": torch.int32,
            "partial_ptr": torch.float32,
            "bias_partial_ptr": torch.float32,
            "work_ptr": torch.int64,
        },
        scalars=_scalars(*_GEOMETRY_SCALARS, "SPC", "CHUNKS", "pad_h", "pad_w", "dil_h", "dil_w"),
        constexprs={
            "KH": int(w_shape[2]),
            "KW": int(w_shape[3]),
            "STRIDE_H": int(stride[0]),
            "STRIDE_W": int(stride[1]),
            "TS": ts,
            "TQ": tq,
            "BLOCK_E": block_e,
            "BLOCK_Q": WGRAD_GATHER // block_e,
            "BS": bs if has_bias else 1,  # the bias programs' tile (unused without a bias)
            "BQ": bq if has_bias else 1,
            "HAS_BIAS": bool(has_bias),
            "BINARY": not x_dtype.is_floating_point,
            "COUNT_WORK": bool(count_work),
        },
        num_warps=CONV_NUM_WARPS,
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
        values={"SPC": per_chunk, "CHUNKS": chunks},
        max_registers=WGRAD_MAX_REGISTERS,
    )


@plan("wgrad_reduce")
def wgrad_reduce_plan(
    w_shape: Sequence[int], chunks: int, grad_dtype: torch.dtype, has_bias: bool
) -> KernelLaunch:
    """The weight gradient's reduce: ``[cap, chunks]`` partial sums to the dense ``w_shape``
    gradient (zeros off the mask) in ``grad_dtype``, and the bias gradient; one program per
    (:data:`~ndsnn_triton.kernels.sparse_index.REDUCE_BLOCK` columns, row)."""
    oc = int(w_shape[0])
    k = 1
    for d in w_shape[1:]:
        k *= int(d)
    name = "ndsnn::masked_conv2d_weight_grad (Triton reduce)"
    check_elements(name, weight=oc * k)
    grid = (cdiv(k, REDUCE_BLOCK), oc)
    check_grid(name, grid)
    return KernelLaunch(
        name="wgrad_reduce",
        kernel=_wgrad_reduce_kernel if HAS_TRITON else None,
        grid=grid,
        pointers={
            "partial_ptr": torch.float32,
            "bias_partial_ptr": torch.float32,
            "mask_ptr": torch.int8,
            "row_ptr": torch.int32,
            "tile_base": torch.int32,
            "grad_ptr": grad_dtype,
            "grad_bias_ptr": grad_dtype,
        },
        scalars=_scalars("K", "TILES", "CHUNKS"),
        constexprs={
            "RB": REDUCE_BLOCK,
            "CB": min(REDUCE_CHUNKS, _pow2_at_least(max(chunks, 1))),
            "HAS_BIAS": bool(has_bias),
        },
        num_warps=CONV_NUM_WARPS,
        num_stages=CONV_NUM_STAGES,
        enable_fp_fusion=CONV_FP_FUSION,
    )


# ----------------------------------------------------------------------------- launchers


def _counter(work: Tensor | None, like: Tensor) -> Tensor:
    """The executed-MAC counter to pass (any int64 tensor when not counting: never touched)."""
    if work is None:
        return like.new_empty(1, dtype=torch.int64)
    if work.dtype != torch.int64 or work.numel() < 1 or work.device != like.device:
        raise ValueError("work counter must be an int64 tensor on the output's device")
    return work


def hands_to_reference(groups: int, dense: bool = False) -> bool:
    """Whether a Triton launcher runs the reference (cuDNN) instead of a kernel: grouped
    convolutions, and dense weight gradients (growth steps). ``auto`` never prices these."""
    return groups != 1 or bool(dense)


def _as_int8(x: Tensor) -> Tensor:
    x = x.contiguous()
    return x.view(torch.int8) if x.dtype in (torch.bool, torch.uint8) else x


def masked_conv2d_triton(
    x: Tensor,
    weight: Tensor,
    mask: Tensor,
    bias: Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    spikes: Tensor | None = None,
    active: Tensor | None = None,
    work: Tensor | None = None,
) -> Tensor:
    """Forward on the sparse kernel (groups = 1; others fall back to the reference).

    ``spikes``: an int8 copy of ``x`` (binary spikes) the kernel reads instead of ``x``;
    ``active``: int8 ``[N, C]``, non-zero where input map ``(n, c)`` holds a spike — with it the
    kernel skips silent maps. ``work``: an int64 ``[1]`` tensor the kernel adds its executed MACs
    to (instrumented runs).
    """
    if hands_to_reference(groups):
        return masked_conv2d_ref(x, weight, mask, bias, stride, padding, dilation, groups)
    n, c, h, w = x.shape
    oc, _, kh, kw = weight.shape
    index = get_index(mask, oc, c * kh * kw, kh * kw)
    xs = _as_int8(x if spikes is None else spikes)
    launch = conv_fwd_plan(
        x.shape, weight.shape, stride, padding, dilation, xs.dtype, weight.dtype,
        compute_dtype(x, weight), bias is not None, active is not None, index.cap, work is not None,
    )  # fmt: skip
    oh, ow = out_hw(h, w, kh, kw, stride, padding, dilation)
    y = torch.empty((n, oc, oh, ow), dtype=compute_dtype(x, weight), device=x.device)
    if y.numel() == 0:
        return y
    wc = weight.contiguous()
    mask8 = mask.contiguous().view(torch.int8)  # stands in for an absent activity (never read)
    launch.run(
        xs, wc, wc if bias is None else bias, index.row_ptr, index.col_idx, index.row_order,
        mask8 if active is None else active.contiguous(), y, _counter(work, y),
        n, c, h, w, oc, oh, ow, c * kh * kw, kh, kw, launch.values["QT"], padding[0], padding[1],
        stride[0], stride[1], dilation[0], dilation[1],
    )  # fmt: skip
    return y


def masked_conv2d_input_grad_triton(
    grad_out: Tensor,
    weight: Tensor,
    mask: Tensor,
    input_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    work: Tensor | None = None,
) -> Tensor:
    """Input gradient through the transpose index, in dY's dtype (groups = 1; others: reference)."""
    if hands_to_reference(groups):
        return masked_conv2d_input_grad_ref(
            grad_out, weight, mask, input_size, stride, padding, dilation, groups
        )
    n, c, h, w = input_size
    oc, _, kh, kw = weight.shape
    _, _, oh, ow = grad_out.shape
    index = get_index(mask, oc, c * kh * kw, kh * kw)
    launch = conv_dgrad_plan(
        input_size, weight.shape, stride, padding, dilation, grad_out.dtype, weight.dtype,
        index.cap, work is not None,
    )  # fmt: skip
    dx = torch.empty((n, c, h, w), dtype=grad_out.dtype, device=grad_out.device)
    if dx.numel() == 0:
        return dx
    launch.run(
        grad_out.contiguous(), weight.contiguous(), index.col_ptr, index.t_row_idx,
        index.t_col_idx, index.group_order, dx, _counter(work, dx),
        n, c, h, w, oc, oh, ow, c * kh * kw, kh, kw, launch.values["QT"], padding[0], padding[1],
        dilation[0], dilation[1],
    )  # fmt: skip
    return dx


def masked_conv2d_weight_grad_triton(
    grad_out: Tensor,
    x: Tensor,
    mask: Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
    dense: bool,
    grad_dtype: torch.dtype | None = None,
    has_bias: bool = False,
    work: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """``(dW, db)`` as :func:`masked_conv2d_weight_grad_ref`: the weight gradient at the kept
    positions driven by the input's spikes, and the bias gradient, in two launches (partial sums,
    then one deterministic reduce that writes the dense gradient in ``grad_dtype``); ``work`` as
    for the forward.

    Dense weight gradients (growth steps) and grouped convolutions use the reference (cuDNN).
    """
    if hands_to_reference(groups, dense):
        return masked_conv2d_weight_grad_ref(
            grad_out, x, mask, stride, padding, dilation, groups, dense, grad_dtype, has_bias
        )
    grad_dtype = grad_out.dtype if grad_dtype is None else grad_dtype
    n, c, h, w = x.shape
    oc, _, kh, kw = mask.shape
    _, _, oh, ow = grad_out.shape
    device = grad_out.device
    if n * oh * ow == 0 or mask.numel() == 0:  # nothing to sum: zeros
        grad_b = torch.zeros(oc if has_bias else 0, dtype=grad_dtype, device=device)
        return torch.zeros(mask.shape, dtype=grad_dtype, device=device), grad_b
    grad_w = torch.empty(mask.shape, dtype=grad_dtype, device=device)
    grad_b = torch.empty(oc if has_bias else 0, dtype=grad_dtype, device=device)
    index = get_index(mask, oc, c * kh * kw, kh * kw)
    xs = _as_int8(x)
    launch = conv_wgrad_plan(
        x.shape, mask.shape, stride, padding, dilation, index.cap, grad_out.dtype, xs.dtype,
        has_bias, work is not None,
    )  # fmt: skip
    chunks = launch.values["CHUNKS"]
    reduce = wgrad_reduce_plan(mask.shape, chunks, grad_dtype, has_bias)
    # every (kept entry, chunk) slot is written by the launch: no zero fill
    partial = torch.empty((index.cap, chunks), dtype=torch.float32, device=device)
    bias_partial = torch.empty((oc if has_bias else 1, chunks), dtype=torch.float32, device=device)
    tile = launch.constexprs["TS"] * launch.constexprs["TQ"]
    scratch = torch.empty(chunks * c * tile, dtype=torch.int32, device=device)
    launch.run(
        grad_out.contiguous(), xs, index.col_ptr, index.t_row_idx, index.t_col_idx,
        index.t_entry_csr, scratch, partial, bias_partial, _counter(work, partial),
        n, c, h, w, oc, oh, ow, launch.values["SPC"], chunks, padding[0], padding[1],
        dilation[0], dilation[1],
    )  # fmt: skip
    reduce.run(
        partial, bias_partial, mask.contiguous().view(torch.int8), index.row_ptr, index.tile_base, grad_w,
        grad_b if has_bias else grad_w, c * kh * kw, index.tile_base.shape[1], chunks,
    )  # fmt: skip
    return grad_w, grad_b
