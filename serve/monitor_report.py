"""``embedkd monitor report``: the alignment monitor's history over time, as a plot and a summary.

The monitor (:mod:`serve.monitor`) logs each sample it measured in the index's query log with its
student-teacher cosine and top-10 overlap (:func:`serve.querylog.read_monitor_history`), so the history
covers what the log holds: the latest ``--query-log-max`` samples, none with ``--no-query-log``, and
none from before a ``DELETE /admin/query-log``. The rolling figures are trailing means over ``window``
samples, as ``GET /stats`` reports them live (the live window also restarts at a student swap; the
history's does not).

Example::

    summary = monitor_report(MonitorReportConfig(index_dir="runs/idx", output="monitor.png"))
    print("\\n".join(summary.lines()))
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from embedkd.config import option
from embedkd.errors import ConfigError, EmbedkdError
from serve.querylog import QUERY_LOG_FILE, read_monitor_history

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MonitorReportConfig:
    """What ``embedkd monitor report`` reads, how it judges it, and where the plot goes."""

    index_dir: str = option("", "the serving index directory (its query log holds the monitor's history)")
    output: str = option("monitor_report.png", "the plot (PNG)")
    window: int = option(200, "samples in each rolling mean (as the service's --monitor-window)")
    alert: float = option(0.85, "a rolling mean cosine below this counts as degraded (--monitor-alert)")

    def __post_init__(self) -> None:
        if not self.index_dir:
            raise ConfigError("--index-dir is required")
        if self.window < 1:
            raise ConfigError(f"--window must be >= 1, got {self.window}")
        if not -1.0 <= self.alert <= 1.0:
            raise ConfigError(f"--alert must be a cosine in [-1, 1], got {self.alert}")


@dataclass(frozen=True)
class MonitorSummary:
    """The history in a few numbers (means over the first and the last ``window`` samples)."""

    samples: int
    first: str  # ISO time (UTC) of the oldest sample
    last: str
    window: int
    first_window_cosine: float
    last_window_cosine: float
    first_window_overlap: float | None
    last_window_overlap: float | None
    degraded_share: float  # share of samples at which the rolling mean cosine was below ``alert``
    alert: float
    plot: str

    def lines(self) -> list[str]:
        """The summary as a few lines of text."""

        def fmt(value: float | None) -> str:
            return "n/a" if value is None else f"{value:.4f}"

        return [
            f"{self.samples} monitor samples, {self.first} to {self.last}",
            f"mean cosine: first {self.window} samples {fmt(self.first_window_cosine)}, "
            f"last {self.window} {fmt(self.last_window_cosine)}",
            f"top-10 overlap: first {fmt(self.first_window_overlap)}, last {fmt(self.last_window_overlap)}",
            f"degraded (rolling cosine < {self.alert}): {100 * self.degraded_share:.1f}% of samples",
            f"plot: {self.plot}",
        ]

    def to_dict(self) -> dict:
        return asdict(self)


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values at each position, NaNs skipped (NaN where none)."""
    valid = ~np.isnan(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    hi = np.arange(1, len(values) + 1)
    lo = np.maximum(hi - window, 0)
    n = counts[hi] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[hi] - sums[lo]) / n, np.nan)


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def load_history(index_dir: str | Path) -> np.ndarray:
    """The monitor's samples of ``index_dir``: ``(n, 3)`` time, cosine, overlap (see module doc).

    Raises:
        EmbedkdError: no index directory, no query log, or a log with no monitor sample.
    """
    history = read_monitor_history(index_dir)
    if not len(history):
        raise EmbedkdError(
            f"the query log of {index_dir} ({QUERY_LOG_FILE}) holds no monitor samples yet: serve it "
            "with --monitor-sample and send some searches (a DELETE /admin/query-log empties it)"
        )
    return history


def summarize(history: np.ndarray, config: MonitorReportConfig, plot: str = "") -> MonitorSummary:
    """The :class:`MonitorSummary` of ``history`` (rows as :func:`load_history` returns them)."""
    times, cosines, overlaps = history.T
    w = config.window
    rolling = rolling_mean(cosines, w)
    return MonitorSummary(
        samples=len(history),
        first=_iso(times[0]),
        last=_iso(times[-1]),
        window=w,
        first_window_cosine=float(cosines[:w].mean()),
        last_window_cosine=float(cosines[-w:].mean()),
        first_window_overlap=_mean(overlaps[:w]),
        last_window_overlap=_mean(overlaps[-w:]),
        degraded_share=float(np.mean(rolling < config.alert)),
        alert=config.alert,
        plot=plot,
    )


def plot_history(history: np.ndarray, config: MonitorReportConfig, output: Path) -> Path:
    """Per-sample cosine and top-10 overlap with their rolling means over time, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [datetime.fromtimestamp(t, tz=timezone.utc) for t in history[:, 0]]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for ax, values, label in (
        (axes[0], history[:, 1], "student-teacher cosine"),
        (axes[1], history[:, 2], "top-10 overlap"),
    ):
        ax.scatter(times, values, s=6, alpha=0.25, label="per sample")
        ax.plot(times, rolling_mean(values, config.window), label=f"rolling mean ({config.window})")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if np.isnan(values).all():
            ax.text(0.5, 0.5, "not logged", transform=ax.transAxes, ha="center")
    axes[0].axhline(config.alert, color="tab:red", linestyle="--", label=f"alert ({config.alert})")
    axes[0].set_title(f"alignment monitor: {Path(config.index_dir).name} ({len(history)} samples)")
    axes[0].legend(loc="lower left")
    axes[1].set_xlabel("time (UTC)")
    fig.autofmt_xdate()
    fig.tight_layout()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(output, dpi=110)
    except OSError as exc:
        raise EmbedkdError(f"cannot write the plot {output}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return output


def monitor_report(config: MonitorReportConfig) -> MonitorSummary:
    """Plot the monitor's history of ``config.index_dir`` into ``config.output`` and summarize it.

    Raises:
        EmbedkdError: no index directory, no query log (the monitor was off, or ``--no-query-log``), an
            empty one, or an output that cannot be written.
    """
    history = load_history(config.index_dir)
    path = plot_history(history, config, Path(config.output))
    summary = summarize(history, config, str(path))
    logger.info("monitor report of %s: %d samples, plot %s", config.index_dir, len(history), path)
    return summary
