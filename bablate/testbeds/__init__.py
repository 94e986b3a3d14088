"""Testbeds: per model family, the sites, data and task families studies build on, with plain
arguments (never a study's config type).

    toy     toy models of superposition: a trained instance's hidden site, feature tasks
    rnn     chunked sequences, windows, the RNN hidden site, one task per chunk
    llama   SmolLM2 / LLaMA: the model, concepts.json and prose, concept prompts, sink positions
    sequences      the chunk paper's seeded symbol-sequence families (the rnn testbed's data)
    toy_geometry   weight and code geometry of a trained toy model of superposition
"""
