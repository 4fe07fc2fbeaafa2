"""Where evaluation tasks come from, and the checks that refuse a bad task before any job starts.

Tasks are lm-eval's own (by name), the workbench's shipped ones (./shipped), and the task YAML files
a user puts in `<home>/tasks` or in a folder of WORKBENCH_TASK_ROOTS; a later folder's task overrides an
earlier one of the same name. lm-eval itself skips a YAML it cannot parse with a debug log line, so
the user's files are parsed here too, to name the broken file and line.
"""

from __future__ import annotations

import difflib
import functools
import logging
from pathlib import Path

import yaml
from lm_eval.tasks import TaskManager
from lm_eval.tasks._yaml_loader import load_yaml

from workbench import hub
from workbench.errors import InputError
from workbench.settings import Settings

SHIPPED = Path(__file__).resolve().parent / "shipped"
_IGNORED_PARTS = {"__pycache__", ".ipynb_checkpoints"}  # as lm-eval's own index walks folders


class _NoFlagAdvice(logging.Filter):
    """lm-eval warns, on every load of a task with a `custom_dataset` (the shipped ones), about a
    command-line flag that does not exist here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(_NoFlagAdvice())


def task_roots(settings: Settings) -> list[Path]:
    """The folders of task YAMLs, in lm-eval's order of precedence (later ones win)."""
    home_tasks = settings.home_dir / "tasks"
    home_tasks.mkdir(exist_ok=True)
    return [SHIPPED, home_tasks, *(Path(p).expanduser().resolve() for p in settings.task_roots)]


def task_manager(settings: Settings, registered: bool = True, names: list[str] | None = None) -> TaskManager:
    """lm-eval's task index over its own tasks (unless `registered` is off, or `names` are all the
    workbench's) and the workbench's folders. Checks the user's folders first: a YAML there that
    does not parse is an InputError naming it. Indexing lm-eval's own tasks takes seconds, so an
    index is kept while no YAML in the folders changes, and skipped when not needed."""
    roots = task_roots(settings)
    stamp = tuple(stamp for root in roots[1:] for stamp in check_yaml_files(root))
    folders = tuple(str(root) for root in roots if root.is_dir())
    if registered and names is not None and set(names) <= set(_index(folders, False, stamp).all_tasks):
        registered = False  # a worker starting an evaluation of shipped tasks is spared the seconds
    return _index(folders, registered, stamp)


@functools.lru_cache(maxsize=4)
def _index(include_path: tuple[str, ...], registered: bool, stamp: tuple) -> TaskManager:
    # `stamp` (every YAML's path, size and time) is part of the key: a file added or edited reindexes.
    return TaskManager(include_path=list(include_path), include_defaults=registered)


def check_yaml_files(root: Path) -> list[tuple[str, int, int]]:
    """Parse every YAML under `root` as lm-eval reads them (`!function` left unresolved, includes
    followed), so a broken one is refused by file and line instead of silently missing. Answers each
    file's path, size and modification time."""
    if not root.is_dir():
        return []
    stamps = []
    for path in sorted(root.rglob("*.yaml")):
        if _IGNORED_PARTS.intersection(path.parts):
            continue
        try:
            load_yaml(path, resolve_func=False)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path} line {mark.line + 1}" if mark is not None else str(path)
            problem = getattr(exc, "problem", None) or str(exc)
            raise InputError("tasks", f"{where}: the task file does not parse: {problem}") from None
        except (OSError, ValueError) as exc:  # a missing include, an include cycle, not a mapping
            raise InputError("tasks", f"{path}: the task file cannot be read: {exc}") from None
        info = path.stat()
        stamps.append((str(path), info.st_size, info.st_mtime_ns))
    return stamps


def check_tasks(names: list[str], manager: TaskManager, *, offline: str | None = None) -> dict[str, str]:
    """Refuse, naming the task, a name lm-eval does not know or a task that cannot be built here: its
    data cannot be had (no network and nothing cached), its code does not import. Building loads each
    task's data, so this costs what the job's own start would. `offline` (`offline_for(settings)`)
    says why `datasets` must read its local cache only, without asking the hub. Answers the output type
    of each task built (groups expanded), so that nothing loads them again."""
    known = set(manager.all_tasks)
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise InputError("tasks", f"unknown task {name!r}{hint}")
    output_types = {}
    for name in names:
        try:
            with hub.datasets_offline(offline is not None):
                loaded = manager.load([name])["tasks"]
        except ConnectionError as exc:  # what `datasets` raises offline for data it has not cached
            why = f"its data is not in the local datasets cache, and {offline}" if offline else _reason(exc)
            raise InputError("tasks", f"task {name!r} cannot be loaded: {why}") from None
        except Exception as exc:  # lm-eval and a task's own code raise anything
            raise InputError("tasks", f"task {name!r} cannot be loaded: {_reason(exc)}") from None
        output_types |= {str(task_name): task.OUTPUT_TYPE for task_name, task in loaded.items()}
    return output_types


def needing_scores(output_types: dict[str, str]) -> list[str]:
    """The tasks (of `check_tasks`' answer) that score log-likelihoods, which a remote provider cannot
    give: all but generate_until."""
    return sorted(name for name, kind in output_types.items() if kind != "generate_until")


# Any public dataset serves to see whether the hub answers (a missing one answers too); this is the
# data of lm-eval's ARC tasks.
_PROBE = "allenai/ai2_arc"


def offline_for(settings: Settings) -> str | None:
    """Why task data must come from the local datasets cache only, or None when the hub may be asked.
    An unreachable hub counts (one short request): otherwise `datasets` retries for some 20 s."""
    why = hub.offline_reason(settings, "dataset")
    if why is None and hub.lookup(_PROBE, "dataset", settings.hub_timeout_s)[0] == "unreachable":
        why = "the Hugging Face hub could not be reached"
    return why


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]
