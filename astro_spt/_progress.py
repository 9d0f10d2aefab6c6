"""The one progress bar of `astro_spt` (a shared utility): tqdm on standard error.

``progress=None`` (auto) shows a bar on a terminal once a run has taken
``AUTO_DELAY_S`` seconds, so short runs stay silent and a notebook or a log file gets
none; ``True`` shows one at once, anywhere; ``False`` never.
"""

import sys

__all__ = ["AUTO_DELAY_S", "progress_bar"]

#: Seconds a run goes without a bar when ``progress=None``.
AUTO_DELAY_S = 2.0


class _NoBar:
    """What `progress_bar` gives when no bar is shown: the same methods, doing nothing."""

    def update(self, n=1):
        pass

    def close(self):
        pass


def stderr_is_terminal() -> bool:
    """Whether standard error is a terminal (where a bar can redraw itself)."""
    return hasattr(sys.stderr, "isatty") and sys.stderr.isatty()


def progress_bar(total: int, *, progress: bool | None, unit: str, desc: str, initial: int = 0):
    """A progress bar of ``total`` items of ``unit``, or a stand-in that shows nothing.

    Parameters
    ----------
    total : int
        Number of items the run will count (e.g. spectra).
    progress : bool or None
        ``True`` shows the bar now, ``False`` never, ``None`` on a terminal after
        ``AUTO_DELAY_S`` seconds.
    unit, desc : str
        What is counted (singular: ``"spectrum"``), and what the run does.
    initial : int, optional
        Items already done (a resumed run).

    Returns
    -------
    object
        A `tqdm.tqdm` (``update(n)``, ``close()``), or an object with the same methods.

    Examples
    --------
    >>> from astro_spt._progress import progress_bar
    >>> bar = progress_bar(300, progress=False, unit="spectrum", desc="estimating")
    >>> bar.update(64)  # shows nothing
    >>> bar.close()
    """
    if progress is False or (progress is None and not stderr_is_terminal()):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=f" {unit}",
        unit_scale=False,
        delay=0 if progress else AUTO_DELAY_S,
        file=sys.stderr,
        dynamic_ncols=True,
    )
