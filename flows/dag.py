"""The stage order, read from dvc.yaml through DVC's own graph (foreach stages expanded).

dvc.yaml is the one DAG: nothing here lists stages by hand.
"""
from __future__ import annotations

import os
from pathlib import Path

import networkx as nx


def _address(stage, repo_root: Path) -> str:
    """The name `dvc repro` takes from the repo root: 'train@swirls', or 'sub/dvc.yaml:stage'."""
    dvcfile = os.path.relpath(stage.dvcfile.path, repo_root)
    return stage.name if dvcfile == "dvc.yaml" else f"{dvcfile}:{stage.name}"


def stage_graph(repo_root: Path) -> nx.DiGraph:
    """Pipeline stages of dvc.yaml as a graph with edges upstream -> downstream."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    repo_root = Path(repo_root).resolve()
    with Repo(str(repo_root)) as repo:
        dvc_graph = repo.index.graph  # DVC's edges point from a stage to the stages it depends on
        graph = nx.DiGraph()
        pipeline = [s for s in dvc_graph.nodes if isinstance(s, PipelineStage)]  # no .dvc files
        graph.add_nodes_from(_address(s, repo_root) for s in pipeline)
        for downstream, upstream in dvc_graph.edges:
            if downstream in pipeline and upstream in pipeline:
                graph.add_edge(_address(upstream, repo_root), _address(downstream, repo_root))
    return graph


def stage_order(repo_root: Path) -> list[str]:
    """Every pipeline stage, upstream first; ties broken by name so the order is stable."""
    return list(nx.lexicographical_topological_sort(stage_graph(repo_root)))


def select_stages(order: list[str], wanted: list[str]) -> list[str]:
    """Keep the stages named in `wanted` (a foreach group name such as 'train' selects every
    train@<style>), in pipeline order. Unknown names are an error that lists the valid ones."""
    groups = {name.split("@")[0] for name in order}
    unknown = [w for w in wanted if w not in order and w not in groups]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has: {', '.join(order)}")
    return [name for name in order if name in wanted or name.split("@")[0] in wanted]
