"""SWiPe layout geometry: which rank owns which tokens, in plain and in shifted windows.

Pure numpy, no communication, so it can describe paper-scale layouts on a laptop.

Tokens are numbered by their grid position ``g = lat·W + lon``. A rank of the window/sequence group is
``(wp, sp)``; its *home* tokens are the tokens of the windows assigned to ``wp``, in window-major order
(windows sorted, tokens row-major inside a window), and of each window only the ``sp``-th contiguous
1/SP slice. Attention needs whole windows: rank ``(wp, sp)`` then holds every token of the windows of
``wp`` for its 1/SP share of the heads. In a shifted block the windows are those of the grid rolled by
half a window, so the token → window map is different; the router moves tokens between the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from aeris_ds.errors import LayoutError


@dataclass(frozen=True)
class Layout:
    """World = DP × PP × WP × SP; one process is the case where every axis is 1."""

    dp: int = 1
    pp: int = 1
    wp: int = 1
    sp: int = 1

    @property
    def world(self) -> int:
        return self.dp * self.pp * self.wp * self.sp

    @property
    def replica(self) -> int:
        """Ranks holding the same weights of one stage: DeepSpeed's data-parallel axis."""
        return self.dp * self.wp * self.sp

    def coords(self, rank: int) -> dict[str, int]:
        """Rank → coordinates; pipe outermost (DeepSpeed's topology), then dp, wp, sp innermost."""
        pipe, data = divmod(rank, self.replica)
        dp, rest = divmod(data, self.wp * self.sp)
        wp, sp = divmod(rest, self.sp)
        return {"pp": pipe, "dp": dp, "wp": wp, "sp": sp}

    def rank(self, pp: int = 0, dp: int = 0, wp: int = 0, sp: int = 0) -> int:
        return ((pp * self.dp + dp) * self.wp + wp) * self.sp + sp

    def __str__(self) -> str:
        return f"dp={self.dp},pp={self.pp},wp={self.wp},sp={self.sp}"


@dataclass(frozen=True)
class WindowGrid:
    """A lat × lon grid cut into windows and spread over WP × SP ranks."""

    lat: int
    lon: int
    window: tuple[int, int]
    wp: int = 1
    sp: int = 1
    assignment: str = "blocks"  # "blocks": contiguous rectangles of windows; "round_robin"
    lat_mode: str = "mask"  # shifted windows: "mask" wrapped rows at the poles, or "roll" them

    def __post_init__(self) -> None:
        wh, ww = self.window
        if self.lat % wh or self.lon % ww:
            raise LayoutError(f"grid {self.lat}×{self.lon} is not divisible by window {wh}×{ww}")
        if self.n_windows % self.wp:
            raise LayoutError(f"{self.n_windows} windows cannot be split evenly over WP={self.wp} ranks")
        if (wh * ww) % self.sp:
            raise LayoutError(f"{wh * ww} tokens per window cannot be split evenly over SP={self.sp} ranks")
        if self.assignment == "blocks":
            _ = self.block_shape  # raises when the window grid cannot be cut into WP blocks

    @property
    def n_tokens(self) -> int:
        return self.lat * self.lon

    @property
    def window_tokens(self) -> int:
        return self.window[0] * self.window[1]

    @property
    def windows_shape(self) -> tuple[int, int]:
        return self.lat // self.window[0], self.lon // self.window[1]

    @property
    def n_windows(self) -> int:
        rows, cols = self.windows_shape
        return rows * cols

    @property
    def shift(self) -> tuple[int, int]:
        return self.window[0] // 2, self.window[1] // 2

    @cached_property
    def block_shape(self) -> tuple[int, int]:
        """Windows per WP block (rows, cols): the most square factorisation of the window grid over WP."""
        rows, cols = self.windows_shape
        best = None
        for pr in range(1, self.wp + 1):
            if self.wp % pr or rows % pr or cols % (self.wp // pr):
                continue
            br, bc = rows // pr, cols // (self.wp // pr)
            # Fewest tokens on block edges moves least in the shifted block.
            edge = br * self.window[0] + bc * self.window[1]
            if best is None or edge < best[0]:
                best = (edge, (br, bc))
        if best is None:
            raise LayoutError(
                f"window grid {rows}×{cols} cannot be cut into WP={self.wp} equal blocks; "
                "use layout.window_assignment=round_robin"
            )
        return best[1]

    def window_owner(self) -> np.ndarray:
        """WP rank of each window, indexed by window row-major number."""
        rows, cols = self.windows_shape
        if self.assignment == "round_robin":
            return np.arange(rows * cols) % self.wp
        br, bc = self.block_shape
        wr, wc = np.divmod(np.arange(rows * cols), cols)
        return (wr // br) * (cols // bc) + wc // bc

    def window_tokens_ids(self, shifted: bool) -> np.ndarray:
        """[n_windows, window_tokens] grid ids of each window's tokens, row-major inside the window."""
        wh, ww = self.window
        rows, cols = self.windows_shape
        r = np.arange(self.lat).reshape(rows, wh)
        c = np.arange(self.lon).reshape(cols, ww)
        if shifted:
            r = (r + self.shift[0]) % self.lat
            c = (c + self.shift[1]) % self.lon
        ids = r[:, None, :, None] * self.lon + c[None, :, None, :]  # [rows, cols, wh, ww]
        return ids.reshape(rows * cols, wh * ww)

    def attention_ids(self, wp: int, shifted: bool) -> np.ndarray:
        """Tokens rank wp attends over: its windows, whole, window-major; [n_local_windows, window_tokens]."""
        return self.window_tokens_ids(shifted)[self.window_owner() == wp]

    def home_ids(self, wp: int, sp: int) -> np.ndarray:
        """Tokens rank (wp, sp) holds between attention layers: its 1/SP slice of each of its windows."""
        per = self.window_tokens // self.sp
        return self.attention_ids(wp, shifted=False)[:, sp * per : (sp + 1) * per].reshape(-1)

    def lat_lon_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.divmod(ids, self.lon)

    def attention_mask(self, wp: int, shifted: bool) -> np.ndarray | None:
        """Boolean [n_local_windows, T, T] (True = may attend) or None when every pair may attend.

        In "mask" mode a shifted window at the poles holds rows from both ends of the grid; those must
        not attend to each other (Swin's region mask, applied in latitude only: longitude is cyclic).
        """
        if not shifted or self.lat_mode == "roll":
            return None
        ids = self.attention_ids(wp, shifted=True)
        lat, _ = self.lat_lon_of(ids)
        # Rolling by the shift moves rows [0, shift) behind the last row: only the last window row wraps.
        region = lat < self.shift[0]
        mask = region[:, :, None] == region[:, None, :]
        return None if mask.all() else mask

    def window_positions(self) -> np.ndarray:
        """(row, col) of each token inside its window: [window_tokens, 2] (RoPE positions)."""
        wh, ww = self.window
        r, c = np.meshgrid(np.arange(wh), np.arange(ww), indexing="ij")
        return np.stack([r.reshape(-1), c.reshape(-1)], axis=1)

    def read_block(self, wp: int, sp: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lat rows and lon columns a rank must read, and the order that turns that block into home tokens.

        Returns ``(rows, cols, take)`` with ``block.reshape(-1)[take]`` = home tokens in window-major order
        for a block read as ``field[rows][:, cols]``. With contiguous window blocks and SP dividing the
        window height, the block is exactly the rank's tokens: nothing extra is read.
        """
        lat, lon = self.lat_lon_of(self.home_ids(wp, sp))
        rows, row_pos = np.unique(lat, return_inverse=True)
        cols, col_pos = np.unique(lon, return_inverse=True)
        return rows, cols, row_pos * len(cols) + col_pos

    def moved_fraction(self) -> float:
        """Fraction of tokens whose shifted window belongs to another WP rank than their plain one."""
        owner = self.window_owner()
        plain = np.empty(self.n_tokens, dtype=np.int64)
        shifted = np.empty(self.n_tokens, dtype=np.int64)
        plain[self.window_tokens_ids(False)] = owner[:, None]
        shifted[self.window_tokens_ids(True)] = owner[:, None]
        return float(np.mean(plain != shifted))
