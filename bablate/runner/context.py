"""The handle a study writes its run directory through: :class:`RunContext` (log lines,
report text, figures, checkpoints and the report itself); the directory's layout is
:mod:`bablate.runner.rundir`'s."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import io
import json
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bablate import io as bbio
from bablate import markdown as md
from bablate import statefile
from bablate.errors import RunError
from bablate.runner.rundir import (
    FIGURES_DIR,
    LOG_FILE,
    RESULTS_FILE,
    STATE_DIR,
    STATE_SUFFIX,
    flatten,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclasses.dataclass
class RunContext:
    """What a study's ``run(config, ctx)`` uses to write into its run directory.

    Attributes:
      workdir: the run directory.
      writer: False on every process but the first in a multi-host job, where all processes
        compute the same run and only process 0 writes files.
      config_hash: `config_hash` of the run's config; checkpoints are stamped with it and a
        checkpoint stamped with another hash is never loaded.
    """

    workdir: Path
    writer: bool = True
    config_hash: str | None = None
    _items: list[tuple[str, str, str]] = dataclasses.field(default_factory=list, repr=False)
    _warnings: list[str] = dataclasses.field(default_factory=list, repr=False)

    def log(self, msg: str, console: bool = True) -> None:
        """Prints a timestamped line to stderr (unless ``console=False``) and appends it to
        ``log.txt``."""
        line = f"[{datetime.datetime.now():%H:%M:%S}] {msg}"
        if console:
            from tqdm.auto import tqdm  # writes above any active progress bar

            tqdm.write(line, file=sys.stderr)
        if self.writer:
            self.workdir.mkdir(parents=True, exist_ok=True)
            with open(self.workdir / LOG_FILE, "a", encoding="utf-8") as f:
                f.write(line + "\n")

    def warning(self, message: str, category: str = "UserWarning", where: str = "") -> None:
        """Records a warning: a ``warning:`` line in ``log.txt`` (and on stderr) and an entry
        of report.md's Warnings section. Every warning a run issues through Python's
        ``warnings`` arrives here (see `run_one`); a study may also call it directly."""
        text = " ".join(str(message).split())  # one line, whatever the message's layout
        entry = f"{category}: {text}" + (f" (at {where})" if where else "")
        self._warnings.append(entry)
        self.log(f"warning: {entry}")

    @contextlib.contextmanager
    def recording_warnings(self):
        """Within it, every warning shown (the filters decide which, as outside) goes to
        :meth:`warning` instead of stderr's two-line form, with the line it names."""
        def show(message, category, filename, lineno, file=None, line=None):
            self.warning(str(message), category.__name__, f"{_short_path(filename)}:{lineno}")

        with warnings.catch_warnings():  # restores showwarning (and the filters) on exit
            warnings.showwarning = show
            yield

    def text(self, markdown: str) -> None:
        """Appends a markdown paragraph or section to ``report.md`` (in order of calls)."""
        self._items.append(("text", markdown.strip(), ""))

    def figure(self, fig, name: str, caption: str) -> Path:
        """Saves a matplotlib figure as ``figures/<name>.png``, closes it, adds it to the report.

        Args:
          fig: a ``matplotlib.figure.Figure``.
          name: file stem, letters, digits, ``_ . -`` only; unique within the run.
          caption: one or two sentences on what the figure shows (goes under it in report.md).

        Returns:
          The path of the PNG file.
        """
        _check_name(name, "figure name")
        if any(kind == "figure" and n == name for kind, n, _ in self._items):
            raise ValueError(f"figure {name!r} was already saved in this run; use another name")
        path = self.workdir / FIGURES_DIR / f"{name}.png"
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        if self.writer:
            bbio.atomic_write_bytes(path, buf.getvalue())
        self._items.append(("figure", name, caption.strip()))
        return path

    def save_state(self, name: str, pytree: Any) -> None:
        """Atomically checkpoints a pytree (e.g. trained params) as ``state/<name>.msgpack``.

        The tree may hold arrays (numpy or jax; saved as numpy), numbers, strings, None and
        dicts / lists / tuples of them. The file is data only (see `statefile`) and is
        stamped with the run's config hash. PRNG key arrays cannot be stored directly: save
        ``jax.random.key_data(key)`` instead.
        """
        _check_name(name, "state name")
        jax = sys.modules.get("jax")  # without jax loaded the tree holds no jax arrays
        # The tree is checked, not rebuilt: jax.tree.map would sort every dict's keys, and a
        # resumed run would then write its results in another order than a fresh one.
        if jax is not None and any(
                isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                for x in jax.tree.leaves(pytree)):
            raise TypeError(f"state {name!r}: PRNG keys cannot be saved; save "
                            "jax.random.key_data(key) and rebuild the key with "
                            "jax.random.wrap_key_data")
        data = statefile.dumps(pytree, self.config_hash, f"state {name!r}")
        if self.writer:
            bbio.atomic_write_bytes(self.state_path(name), data)

    def state_path(self, name: str) -> Path:
        """Where ``save_state(name, ...)`` writes."""
        return self.workdir / STATE_DIR / f"{name}{STATE_SUFFIX}"

    def load_state(self, name: str, like: Any = None) -> Any | None:
        """The pytree saved by ``save_state(name, ...)`` (numpy leaves), or None if none was.

        A checkpoint stamped with another config's hash is ignored (None, with a log line).
        Pickled checkpoints of older versions (``state/<name>.pkl``) are never read.

        Args:
          name: the name given to ``save_state``.
          like: what the checkpoint must hold (see `bablate.statefile.mismatch`), e.g.
            ``{"params": initial_params, "history": dict}``: the same keys, arrays of the same
            shapes and kinds, finite floats, and no all-zero array where ``like``'s is
            nonzero. None loads whatever the file holds.

        Raises:
          RunError: the checkpoint exists but is not a valid state file, or does not hold what
            ``like`` describes (names the file, what is wrong and suggests ``--overwrite``).
        """
        _check_name(name, "state name")
        path = self.state_path(name)
        if not path.exists():
            if (self.workdir / STATE_DIR / f"{name}.pkl").exists():
                self.log(f"ignoring {STATE_DIR}/{name}.pkl: pickle checkpoints are never "
                         "loaded (they can run code); recomputing")
            return None
        try:
            if not path.is_file():
                raise statefile.StateFormatError("it is not a file")
            tree, stamp = statefile.loads(path.read_bytes())
        except statefile.StateFormatError as e:
            raise RunError(_refusal(path, f"is corrupt ({e})")) from e
        if stamp != self.config_hash:
            self.log(f"ignoring {STATE_DIR}/{path.name}: it was saved by a run of another config")
            return None
        problem = None if like is None else statefile.mismatch(tree, like)
        if problem is not None:
            raise RunError(_refusal(path, f"does not hold what this run saves ({problem})"))
        return tree

    def load_or_compute(self, name: str, compute: Callable[[], Any], like: Any = None
                        ) -> tuple[Any, bool]:
        """The checkpoint ``name`` if the run saved one (see :meth:`load_state`), else
        ``compute()``'s tree, saved as ``name`` (see :meth:`save_state`) and returned as computed.

        Returns:
          ``(tree, reused)``: ``reused`` is True when the tree came from the checkpoint (its
          leaves are then numpy arrays).
        """
        saved = self.load_state(name, like=like)
        if saved is not None:
            return saved, True
        tree = compute()
        self.save_state(name, tree)
        return tree, False

    def render_report(self, title: str, config: Mapping, results: Mapping, footer: str = "") -> str:
        """The report.md text: title, key numbers, the study's sections and figures, config."""
        lines = [f"# {title}", ""]
        scalars = {k: v for k, v in results.items()
                   if v is None or isinstance(v, (bool, int, float, str))}
        if scalars:
            lines += ["| result | value |", "|---|---|"]
            lines += [md.row([k, _fmt_cell(v)]) for k, v in list(scalars.items())[:30]]
            lines += ["", f"All numbers: [{RESULTS_FILE}]({RESULTS_FILE}).", ""]
        if self._warnings:
            lines += ["## Warnings", "", f"The run issued {len(self._warnings)} warning(s) "
                      f"(also in [{LOG_FILE}]({LOG_FILE})):", ""]
            lines += [f"- {md.cell(w)}" for w in self._warnings] + [""]
        n_fig = 0
        for kind, a, b in self._items:
            if kind == "text":
                lines += [a, ""]
            else:
                n_fig += 1
                lines += [f"![{a}]({FIGURES_DIR}/{a}.png)", "",
                          f"*Figure {n_fig}: {b}*", ""]
        lines += ["<details><summary>Config</summary>", "", "| key | value |", "|---|---|"]
        lines += [md.row([f"`{k}`", _fmt_cell(v)]) for k, v in flatten(config).items()]
        lines += ["", "</details>", ""]
        if footer:
            lines += [footer, ""]
        return "\n".join(lines)


# The fix for saved state a run cannot resume from (a corrupt checkpoint, say).
RESTART_FIX = "rerun with --overwrite to start this run afresh"


def _refusal(path: Path, what: str) -> str:
    """The one-line refusal of a checkpoint that cannot be resumed from."""
    return f"checkpoint {str(path)!r} {what}; {RESTART_FIX}"


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"{what} {name!r} must be letters, digits, '_', '.' or '-' "
                         "(it becomes a file name)")


def _short_path(filename: str) -> str:
    """A warning's file as a reader finds it: relative to the directory holding the bablate
    package (``bablate/studies/...``) or to the working directory, else as given."""
    path = Path(filename)
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        with contextlib.suppress(ValueError, OSError):
            return str(path.resolve().relative_to(base))
    return filename


def _fmt_cell(v: Any) -> str:
    """A value's text for a report table (md.row escapes it)."""
    return f"{v:.6g}" if isinstance(v, float) else json.dumps(v) if not isinstance(v, str) else v
