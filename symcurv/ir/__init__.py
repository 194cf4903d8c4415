"""The intermediate representation: nodes in a networkx graph, shape rules, validation."""
