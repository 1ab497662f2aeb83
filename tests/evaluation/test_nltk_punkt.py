from __future__ import annotations

from evaluation.nltk_punkt import ensure_punkt, write_punkt_tables


def test_punkt_tables_load_in_nltk_as_the_english_model(tmp_path, monkeypatch):
    import nltk

    # NLTK reads model files only under its data roots
    monkeypatch.setattr(nltk.data, "path", [*nltk.data.path, str(tmp_path)])
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params
    from punkt.data import load_module

    target = write_punkt_tables(tmp_path)
    params = load_punkt_params(nltk.data.FileSystemPathPointer(str(target)))
    model = load_module("english")
    assert params.abbrev_types == set(model.ABBREV_TYPES) and "dr" in params.abbrev_types
    assert params.collocations == set(model.COLLOCATIONS)
    assert params.sent_starters == set(model.SENT_STARTERS)
    assert params.ortho_context == dict(model.ORTHO_CONTEXT)
    text = "Mr. Brown met Dr. Green at 5 p.m. today. They talked."
    assert PunktSentenceTokenizer(params).tokenize(text) == ["Mr. Brown met Dr. Green at 5 p.m. today.", "They talked."]
    assert write_punkt_tables(tmp_path) == target  # complete tables are kept
    ensure_punkt(tmp_path)
    assert nltk.sent_tokenize(text) == ["Mr. Brown met Dr. Green at 5 p.m. today.", "They talked."]
