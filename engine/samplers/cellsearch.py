"""Cell search: the cell of each target in rows of cumulative cell edges, found with a guide table on the
CPU (one ``bincount``, one linear step and a bisection inside crowded buckets) and with
``torch.searchsorted`` on other devices and for small draws; both give the same cells."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["_bucket_count", "_locate"]  # private to the package: the samplers' shared cell search


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
    row_start = torch.arange(rows, device=device) * width
    if device.type != "cpu" or 4 * u.shape[-1] < width:  # many cores, or too few events for a guide table
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
