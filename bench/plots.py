"""PNG plots (matplotlib, Agg): upstream calls over time, booking-time CDFs, overhead bars."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.kit.booking_flow import Booking


@dataclass
class Series:
    trainees: int
    variant: str
    start: float
    bookings: list[Booking]
    calls: list[dict[str, Any]]  # what the simulator admitted (/__sim/calls)


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        print("[bench] matplotlib is missing: no plots (pip install matplotlib)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _per_bin(times: Sequence[float], start: float, width: float, bins: int) -> list[int]:
    counts = Counter(int((t - start) // width) for t in times if t >= start)
    return [counts.get(i, 0) for i in range(bins)]


def _rolling_avg(per_second: list[int], window: int) -> list[float]:
    out, total = [], 0
    for i, n in enumerate(per_second):
        total += n - (per_second[i - window] if i >= window else 0)
        out.append(total / window)
    return out


def _calls_axes(ax: Any, s: Series, scale: float, bins: int) -> None:
    width = scale  # one (scaled) second
    kinds = {k: [c["t"] for c in s.calls if c["kind"] == k] for k in ("general", "search")}
    x = list(range(bins))
    general = _per_bin(kinds["general"], s.start, width, bins)
    search = _per_bin(kinds["search"], s.start, width, bins)
    direct = not s.variant.startswith("gateway")
    refused = [
        c.started for b in s.bookings for c in b.calls if c.status == 429
    ] if direct else []  # fmt: skip
    ax.bar(x, general, width=1.0, align="edge", color="#4c72b0", label="general admitted")
    ax.bar(x, search, width=1.0, align="edge", bottom=general, color="#55a868",
           label="search admitted")  # fmt: skip
    if refused:
        stacked = [g + q for g, q in zip(general, search, strict=True)]
        ax.bar(x, _per_bin(refused, s.start, width, bins), width=1.0, align="edge", bottom=stacked,
               color="#c44e52", alpha=0.6, label="refused (429)")  # fmt: skip
    ax.plot(
        [i + 1 for i in x],
        _rolling_avg(general, 10),
        color="black",
        lw=1.2,
        label="general, rolling 10 s avg",
    )
    ax.axhline(10, color="black", ls="--", lw=0.8, label="10/s (100 per 10 s)")
    ax.axhline(5, color="#55a868", ls=":", lw=0.8, label="search 5/s")
    ok = sum(1 for b in s.bookings if b.ok)
    ax.set_title(f"{s.variant}: {ok}/{len(s.bookings)} booked", fontsize=9, loc="left")
    ax.set_ylabel("calls/s")


def peak(series: list[Series], scale: float, results: Path) -> list[str]:
    plt = _pyplot()
    if plt is None or not series:
        return []
    results.mkdir(parents=True, exist_ok=True)
    written = []
    for n in sorted({s.trainees for s in series}):
        group = [s for s in series if s.trainees == n]
        spans = [
            max([*(b.finished for b in s.bookings), *(c["t"] for c in s.calls)]) - s.start
            for s in group
        ]
        bins = max(10, int(max(spans) / scale) + 2)
        fig, axes = plt.subplots(len(group), 1, figsize=(11, 2.6 * len(group)), sharex=True)
        for ax, s in zip(list(axes) if len(group) > 1 else [axes], group, strict=True):
            _calls_axes(ax, s, scale, bins)
        axes_list = list(axes) if len(group) > 1 else [axes]
        axes_list[0].legend(fontsize=7, ncol=3, loc="upper right")
        unit = "s" if scale == 1 else f"s (time x{1 / scale:g}: one bin = {scale:g} s real)"
        axes_list[-1].set_xlabel(f"time since first arrival, {unit}")
        fig.suptitle(f"Upstream calls per second, N={n} trainees")
        fig.tight_layout()
        name = f"peak_calls_N{n}.png"
        fig.savefig(results / name, dpi=110)
        plt.close(fig)
        written.append(name)
        written.append(_cdf(plt, group, n, scale, results))
    return written


def _cdf(plt: Any, group: list[Series], n: int, scale: float, results: Path) -> str:
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s in group:
        times = sorted(b.duration / scale for b in s.bookings if b.ok)
        ys = [(i + 1) / len(s.bookings) for i in range(len(times))]
        ax.step([0.0, *times], [0.0, *ys], where="post", label=s.variant)
    ax.set_xlabel("booking time, s" + ("" if scale == 1 else f" (time x{1 / scale:g})"))
    ax.set_ylabel("share of all bookings done")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"Booking time CDF, N={n} (failed bookings never reach the top)")
    fig.tight_layout()
    name = f"peak_cdf_N{n}.png"
    fig.savefig(results / name, dpi=110)
    plt.close(fig)
    return name


def bars(
    name: str, title: str, groups: list[str], series: dict[str, list[float | None]], ylabel: str,
    results: Path, *, log: bool = False,
) -> str | None:  # fmt: skip
    """Grouped bars: one group per entry of `groups`, one bar per series, values on top."""
    plt = _pyplot()
    if plt is None:
        return None
    results.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        drawn = ax.bar(xs, [v or 0 for v in values], width=width, label=label)
        ax.bar_label(drawn, labels=[_short(v) for v in values], fontsize=6, rotation=90, padding=2)
    if log:
        ax.set_yscale("log")
    ax.margins(y=0.2)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(results / name, dpi=110)
    plt.close(fig)
    return name


def _short(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"
