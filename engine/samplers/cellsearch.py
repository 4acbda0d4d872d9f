"""Cell search: the cell of each target in rows of cumulative cell edges, found on the CPU with a guide
table (one ``bincount``, one linear step and a bisection inside crowded buckets) or, for draws too
small to pay for the table, a branch-free bisection; with ``torch.searchsorted`` on other devices.
All give the same cells."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["_bisect", "_bucket_count", "_locate"]  # private to the package: the samplers' shared cell search


def _bucket_count(width: int) -> int:
    """Buckets of the guide table: a power of two (exact bucket arithmetic), ≥ 2 × cells for small
    tables and ≥ cells for large ones (measured fastest: 2048 for 512 cells, 16384 for 128²)."""
    return 1 << max(6, (2 * width - 1 if width <= 4096 else width - 1).bit_length())


def _locate(cum: Tensor, u: Tensor) -> Tensor:
    """Flat indices ``r * M + k`` of the cells with ``cum[r, k] <= u[r, n] < cum[r, k + 1]``.

    Arguments:
        cum: cell edges ``(R, M)``, detached, non-decreasing along each row, ``cum[:, 0] = 0``,
            and ``+inf`` after the last cell that may be chosen (so ``k <= M - 2``).
        u: targets in [0, 1), shape ``(R, N)``.

    Returns:
        ``(R * N,)`` int64 indices into a table of ``R * M`` per-cell values.
    """
    rows, width = cum.shape
    device = cum.device
    if device.type == "cpu" and 4 * u.shape[-1] < width:  # too few events for a guide table
        return _bisect(cum, u)
    row_start = torch.arange(rows, device=device) * width
    if device.type != "cpu":  # many cores
        k = torch.searchsorted(cum, u.contiguous(), right=True) - 1
        return (k + row_start[:, None]).reshape(-1)

    # guide[r, q] = r * M + #{m >= 1 : cum[r, m] < q / K}, q = 0..K: a lower bound on the cell of
    # any u in bucket q (u * K and cum * K are exact, K being a power of two) and an upper bound on
    # the cell of any u in bucket q - 1.
    buckets = _bucket_count(width)
    bucket_start = torch.arange(rows, device=device) * (buckets + 1)
    keys = (cum[:, 1:] * buckets).clamp_(0, buckets).nan_to_num_(buckets).long()  # nan: garbage in, no crash
    keys += bucket_start[:, None]
    counts = torch.bincount(keys.view(-1), minlength=rows * (buckets + 1)).view(rows, buckets + 1)
    guide = counts.cumsum(1).sub_(counts).add_(row_start[:, None]).view(-1)

    # Bucket of each target, with the row offset; exact in float while the flat index < 2^24.
    if rows * (buckets + 1) < 2**24 or u.dtype == torch.float64:
        scaled = (u * buckets).clamp_(0, buckets - 1).floor_()
        bucket = scaled.add_(bucket_start.to(u.dtype)[:, None]).long().view(-1)
    else:
        bucket = ((u * buckets).clamp_(0, buckets - 1).long() + bucket_start[:, None]).view(-1)
    cell = guide.index_select(0, bucket)
    upper_edge = cum.view(-1)[1:]  # upper_edge[r * M + k] = cum[r, k + 1]
    flat_u = u.reshape(-1)
    cell += upper_edge.index_select(0, cell) <= flat_u  # one linear step settles most events
    sel = (upper_edge.index_select(0, cell) <= flat_u).nonzero().squeeze(1)
    if sel.numel():  # buckets holding several cell edges: bisect between the bucket's bounds
        lo, hi, target = cell[sel], guide.index_select(0, bucket[sel] + 1), flat_u[sel]
        for _ in range(int((hi - lo).max()).bit_length()):
            mid = (lo + hi) >> 1
            above = upper_edge.index_select(0, mid) <= target
            lo = torch.where(above, mid + 1, lo)
            hi = torch.where(above, hi, mid)
        cell[sel] = lo
    return cell


def _bisect(cum: Tensor, u: Tensor) -> Tensor:
    """:func:`_locate` by a bisection without branches, all targets one level at a time.

    ``torch.searchsorted`` bisects each target in turn, and its branches are unpredictable for random
    targets. Here each of the log2(M) levels is three vectorised operations over all targets (a
    gather, a comparison and an add), about half the time per target (docs/benchmarks.md). Rows are
    padded with ``+inf`` to a power of two, so that no probe leaves its row.
    """
    rows, width = cum.shape
    levels = max(width - 1, 1).bit_length()
    padded = 1 << levels
    table = (F.pad(cum, (0, padded - width), value=math.inf) if padded != width else cum).reshape(-1)
    flat_u = u.reshape(-1)
    # pos: the flat index of an edge known to be <= u (cum[r, 0] = 0), from the row's start
    pos = (torch.arange(rows, device=cum.device) * padded).repeat_interleave(u.shape[-1])
    probe, above = table.new_empty(flat_u.shape), torch.empty_like(pos)
    for level in range(levels - 1, -1, -1):
        step = 1 << level
        # table[step:][pos] is the edge at pos + step; the comparison written as integers adds without a cast
        torch.index_select(table[step:], 0, pos, out=probe)
        pos.add_(torch.le(probe, flat_u, out=above), alpha=step)
    if padded != width:
        pos = (pos >> levels) * width + (pos & (padded - 1))
    return pos
