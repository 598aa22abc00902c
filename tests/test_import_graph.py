"""The importers' graph stage: rewrites that keep what the graph computes and make the written spec readable."""

from __future__ import annotations

import cnndsl
from cnndsl.importers import import_graph
from cnndsl.importers.graph import INPUT, Graph, Location, Step, Unit, chain_concats, fuse_followers


def _dense_graph(layers: int) -> Graph:
    """DenseNet's wiring as torch.fx sees it: before each layer, a concat of the input and every layer so far."""
    graph = Graph("Dense", "a test", "image", (8, 6, 6))
    features = [INPUT]
    for k in range(layers):
        if len(features) > 1:
            source = graph.add(Unit(Location("t", k), "cat", list(features), merge="concat"))
        else:
            source = features[0]
        norm = graph.add(Unit(Location("t", k), "bn", [source], [Step.of("bn")]))
        conv = graph.add(
            Unit(Location("t", k), "conv", [norm], [Step.of("conv", channels=4, kernel=3, padding=1)])
        )
        features.append(conv)
    graph.add(Unit(Location("t", layers), "cat", list(features), merge="concat"))
    return graph


def test_a_concat_of_a_growing_list_becomes_a_concat_onto_the_previous_one() -> None:
    graph = _dense_graph(4)
    cats = [i for i, u in enumerate(graph.units) if u.merge == "concat"]
    convs = [i for i, u in enumerate(graph.units) if u.kind == "conv"]
    chain_concats(graph)
    # The first reads the two tensors it joins; each later one the concat before it and the newest layer.
    assert graph.units[cats[0]].inputs == [INPUT, convs[0]]
    for before, cat, conv in zip(cats, cats[1:], convs[1:], strict=False):
        assert graph.units[cat].inputs == [before, conv]
    fuse_followers(graph, [[None] * len(u.steps) for u in graph.units], graph.output_ids())
    result = import_graph(graph)
    # The same shapes as the literal concatenations: 8 input channels and 4 per layer.
    assert graph.units[-1].shape == (8 + 4 * 4, 6, 6)
    network = cnndsl.loads(result.spec)
    assert [tuple(t.shape) for t in network.outputs] == [(24, 6, 6)]
    # Every layer reads the one tensor before it and adds its own: one block, called four times.
    body = result.spec.split("network ")[1]
    assert " * 4" in body, result.spec


def test_concats_that_do_not_extend_an_earlier_one_are_left_alone() -> None:
    graph = Graph("Branches", "a test", "image", (8, 6, 6))
    a = graph.add(Unit(Location("t", 1), "conv", [INPUT], [Step.of("conv", channels=4, kernel=1)]))
    b = graph.add(Unit(Location("t", 2), "conv", [INPUT], [Step.of("conv", channels=4, kernel=1)]))
    first = graph.add(Unit(Location("t", 3), "cat", [a, b], merge="concat"))
    # Same tensors in another order, and a prefix that no concat computed: both must stay as written.
    swapped = graph.add(Unit(Location("t", 4), "cat", [b, a, first], merge="concat"))
    other = graph.add(Unit(Location("t", 5), "cat", [a, first, b], merge="concat"))
    chain_concats(graph)
    assert graph.units[swapped].inputs == [b, a, first]
    assert graph.units[other].inputs == [a, first, b]


def test_a_concat_of_the_input_still_takes_its_activation_on_its_line() -> None:
    graph = Graph("Cat", "a test", "image", (8, 6, 6))
    conv = graph.add(Unit(Location("t", 1), "conv", [INPUT], [Step.of("conv", channels=4, kernel=1)]))
    cat = graph.add(Unit(Location("t", 2), "cat", [INPUT, conv], merge="concat"))
    relu = graph.add(Unit(Location("t", 3), "relu", [cat], [Step.of("relu")]))
    graph.add(Unit(Location("t", 4), "cat", [relu, conv], merge="concat"))
    chain_concats(graph)
    fuse_followers(graph, [[None] * len(u.steps) for u in graph.units], graph.output_ids())
    assert graph.units[cat].steps == [Step.of("relu")]
    assert "concat(image | l0) -> relu" in import_graph(graph).spec
