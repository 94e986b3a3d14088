from bablate.studies.llm_concepts import load_concepts  # noqa: F401
