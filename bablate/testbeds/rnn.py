from bablate.studies.rnn_chunks import TEST_SEED_OFFSET, Windows, make_sequence, to_windows  # noqa: F401
