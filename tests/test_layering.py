"""The layering of the packages: every module imports, imports form no cycle, each floor imports only from
itself and the floors below it, and only `assets/` imports Dagster. Imports inside functions count too: a lazy
import that reaches up a floor or closes a cycle still couples the modules."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# bottom up: a module imports from its own floor and the ones below it, never from one above
FLOORS = ("pipeline", "quality", "engine", "training", "evaluation", "assets")
# Evaluation judges with the reward models training fits: it may load them, read the record a judge leaves when the
# traffic had too little data to train it (its minimums, fixes and metrics row), and read its command line as the
# training stages read theirs; it reaches nothing else of training; what both need lives in `engine`.
EVALUATION_USES_OF_TRAINING = {
    "training.rewards.reward_model": {"load_reward_model"},
    "training.rewards.judge_minimums": {"NOT_TRAINED_ROW", "JudgeMinimums", "PAIRWISE_FIX", "POINTWISE_FIX"},
    "training.policy.stage_config": {"parse_config"},
}
WHOLE_MODULE = "*"


def _modules() -> dict[str, Path]:
    out = {}
    for package in FLOORS:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _known(target: str, modules) -> str:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target


def _imports(name: str, source: str, is_package: bool = False, modules=MODULES) -> dict[str, set[str]]:
    """Project modules that `name` imports anywhere in its body, each with the names it takes from them
    (`WHOLE_MODULE` for `import m` and for a submodule taken whole by `from package import m`)."""
    found: dict[str, set[str]] = {}

    def add(target: str, what: str) -> None:
        target = _known(target, modules)
        if target and target != name:
            found.setdefault(target, set()).add(what)

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, WHOLE_MODULE)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    add(full, WHOLE_MODULE)
                add(base, alias.name)
    return found


IMPORTS = {name: _imports(name, path.read_text(), path.name == "__init__.py") for name, path in MODULES.items()}
GRAPH = {name: set(imported) for name, imported in IMPORTS.items()}


def layering_violations(imports: dict[str, dict[str, set[str]]]) -> list[str]:
    """Each import that reaches up a floor, or from evaluation into training beyond the reward-model loading API."""
    out = []
    for name, imported in sorted(imports.items()):
        floor = FLOORS.index(name.split(".")[0])
        for target, names in sorted(imported.items()):
            target_floor = FLOORS.index(target.split(".")[0])
            if target_floor > floor:
                out.append(f"{name} imports {target}: {FLOORS[floor]} sits below {FLOORS[target_floor]}")
            elif (FLOORS[floor], FLOORS[target_floor]) == ("evaluation", "training"):
                beyond = names - EVALUATION_USES_OF_TRAINING.get(target, set())
                if beyond:
                    out.append(f"{name} takes {sorted(beyond)} from {target}: evaluation only loads reward models")
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_sees_a_lazy_cycle():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle():
    assert _cycles(GRAPH) == []


def test_only_assets_import_dagster():
    offenders = []
    for name, path in MODULES.items():
        if name.split(".")[0] == "assets":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offenders += [f"{name}: {n}" for n in names if n.split(".")[0] in ("dagster", "dagster_pipes")]
    # training stages report to Dagster through the Pipes protocol package, which is not Dagster itself
    assert [o for o in offenders if "dagster_pipes" not in o] == []


def test_each_floor_imports_only_itself_and_the_floors_below():
    assert layering_violations(IMPORTS) == []


def _planted(name: str, source: str) -> list[str]:
    """The violations of a module `name` of the project whose body is `source`."""
    return layering_violations({name: _imports(name, source)})


LAZY = "def f():\n    from {module} import {name}\n"


@pytest.mark.parametrize(
    "name, module, attr",
    [
        ("training.policy.planted", "evaluation.style_monitor", "monitor"),  # training into evaluation
        ("engine.planted", "training.policy.models", "CHAT_TEMPLATE"),  # the shared floor into training
        ("engine.planted", "evaluation.steerability", "score_responses"),  # the shared floor into evaluation
        ("pipeline.planted", "quality.outcomes", "CRITICAL"),  # pipeline is the ground floor
        ("quality.planted", "engine.style", "count_emoji"),  # quality sits below the shared floor
        ("evaluation.planted", "assets.definitions", "defs"),  # only assets sees assets
        ("evaluation.planted", "training.policy.candidates", "generate_candidates"),  # beyond the loading API
        ("evaluation.planted", "training.rewards", "reward_model"),  # a whole module is more than the API
    ],
)
def test_a_planted_import_breaks_the_layering(name, module, attr):
    for source in (f"from {module} import {attr}\n", LAZY.format(module=module, name=attr)):
        found = _planted(name, source)
        assert found and all(f.startswith(name) for f in found), found
    assert _planted(name, f"import {module}\n")


def test_evaluation_may_load_reward_models_and_read_its_command_line():
    source = LAZY.format(module="training.rewards.reward_model", name="load_reward_model")
    source += LAZY.format(module="training.policy.stage_config", name="parse_config")
    assert _planted("evaluation.planted", source) == []
    assert _imports("evaluation.planted", source) == {
        "training.rewards.reward_model": {"load_reward_model"},
        "training.policy.stage_config": {"parse_config"},
    }


def test_relative_imports_resolve_to_project_modules():
    found = _imports("engine.planted", "from .style import count_emoji\nfrom . import cards\n")
    assert found == {"engine.style": {"count_emoji"}, "engine.cards": {WHOLE_MODULE}, "engine": {"cards"}}


@pytest.mark.timeout(300)
def test_every_module_imports_in_a_fresh_interpreter():
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *sorted(MODULES)], cwd=ROOT, capture_output=True, text=True, timeout=280
    )
    assert done.returncode == 0, done.stderr[-3000:]
