import ast
from pathlib import Path

import pytest
import yaml

from flows.dag import select_stages, stage_graph, stage_order
from tests.conftest import REPO_ROOT, run


def test_stage_order_comes_from_dvc_yaml(project_copy):
    order = stage_order(project_copy)
    graph = stage_graph(project_copy)
    for upstream, downstream in graph.edges:
        assert order.index(upstream) < order.index(downstream)
    assert order[0] == "download" and order[-1] == "evaluate"
    assert {"preprocess@photos", "preprocess@mnist", "train@swirls", "infer@swirls",
            "train@digits", "infer@digits"} <= set(order)
    # each model's stages hang off its own dataset's preprocess
    assert set(graph.predecessors("train@swirls")) == {"download", "preprocess@photos"}
    assert set(graph.predecessors("train@digits")) == {"download", "preprocess@mnist"}
    assert "train@swirls" in set(graph.predecessors("infer@swirls"))


def test_adding_a_model_adds_its_stages(project_copy):
    params = project_copy / "params.yaml"
    text = params.read_text()
    assert text.count("\nmodels:\n") == 1
    text = text.replace("\nmodels:\n", "\nmodels:\n  second:\n    family: johnson\n    dataset: photos\n"
                                       "    style: {url: assets/styles/swirls.jpg}\n", 1)
    params.write_text(text)
    order = stage_order(project_copy)
    assert order.index("train@second") < order.index("infer@second") < order.index("evaluate")
    graph = stage_graph(project_copy)
    # its own stages only: nothing of another model's is upstream of them
    assert set(graph.predecessors("train@second")) == {"download", "preprocess@photos"}
    assert set(graph.predecessors("infer@second")) == {"download", "preprocess@photos", "train@second"}


def test_order_matches_dvc_dag(project_copy):
    """DVC's own CLI agrees with the graph we read (same stage set)."""
    out = run(["dvc", "dag", "--md"], cwd=project_copy, check=True).stdout
    for name in stage_order(project_copy):
        assert name in out


def test_select_stages():
    order = ["download", "preprocess@p", "train@a", "train@b", "infer@a", "evaluate"]
    assert select_stages(order, ["train"]) == ["train@a", "train@b"]
    assert select_stages(order, ["preprocess", "infer@a"]) == ["preprocess@p", "infer@a"]
    assert select_stages(order, ["evaluate", "download"]) == ["download", "evaluate"]
    with pytest.raises(ValueError, match="unknown stage.*nope"):
        select_stages(order, ["nope"])


STAGE_MODULES = {"download": "tasks.download", "preprocess": "tasks.preprocess", "train": "tasks.train",
                 "infer": "tasks.infer", "evaluate": "tasks.evaluate"}


def _imported_files(module: str, families: list[str]) -> set[str]:
    """The tasks/ and models/ files a stage's module imports, transitively (statically, including
    imports inside functions); for the per-model stages, through any family's module too."""
    def path_of(name: str) -> Path | None:
        p = REPO_ROOT.joinpath(*name.split("."))
        for candidate in (p / "__init__.py", p.with_suffix(".py")):
            if candidate.is_file():
                return candidate
        return None

    todo = [module] + [f"models.{f}.family" for f in families]
    seen: set[Path] = set()
    while todo:
        path = path_of(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]  # a name may be a module
            else:
                continue
            todo += [n for n in names if n.split(".")[0] in ("tasks", "models")]
    return {p.relative_to(REPO_ROOT).as_posix() for p in seen if p.stat().st_size}  # (empty __init__s aside)


@pytest.mark.parametrize("stage", sorted(STAGE_MODULES))
def test_each_stage_lists_the_code_it_imports(stage):
    """dvc.yaml's deps name every module a stage runs, so an edit to one reruns that stage (a
    family's own folder is `models/${item.family}`: any family's files count as listed)."""
    from models.registry import FAMILIES

    spec = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"][stage]
    deps = (spec.get("do") or spec)["deps"]
    families = list(FAMILIES) if stage in ("train", "infer") else []

    def listed(f: str) -> bool:
        if "models/${item.family}" in deps and f.startswith("models/") and f.split("/")[1] in families:
            return True
        return any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)

    assert [f for f in sorted(_imported_files(STAGE_MODULES[stage], families)) if not listed(f)] == []


def test_the_committed_metrics_are_the_ones_dvc_lock_records():
    """metrics/ is git's (cache: false), dvc.lock names its md5s: a lock committed from one run with
    metrics from another would make `dvc status` and `dvc metrics diff` disagree with the files."""
    import hashlib
    lock = yaml.safe_load((REPO_ROOT / "dvc.lock").read_text())
    outs = {out["path"]: out["md5"] for stage in lock["stages"].values()
            for out in stage.get("outs", []) if out["path"].startswith("metrics/")}
    assert "metrics/metrics.json" in outs
    for path, md5 in outs.items():
        assert hashlib.md5((REPO_ROOT / path).read_bytes()).hexdigest() == md5, path
