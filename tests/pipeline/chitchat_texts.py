"""Real chat messages for embedding tests: the BYU Chit-Chat corpus the chitchat-dataset package ships, read as
the default traffic source reads it."""

from __future__ import annotations

from collections.abc import Iterator

from pipeline.source_chitchat import chitchat_path, load_json_corpus
from pipeline.source_config import SourceConfig


def conversations() -> Iterator[list[str]]:
    """Each conversation's message texts, in the corpus's order."""
    for conv in load_json_corpus(str(chitchat_path(SourceConfig()))).values():
        yield [msg["text"] for turn in conv["messages"] for msg in turn]
