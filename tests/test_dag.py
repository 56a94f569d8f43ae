import pytest

from flows.dag import select_stages, stage_graph, stage_order
from tests.conftest import run


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
