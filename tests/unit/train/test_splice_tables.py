"""speechfm.train.splice_tables: generated tables replace only what lies between the markers."""

from speechfm.train import splice_tables


def test_splice_keeps_prose_and_replaces_tables(tmp_path):
    path = tmp_path / "RESULTS.md"
    splice_tables(path, "| a |", "# Title")
    assert path.read_text() == "# Title\n\n<!-- tables: begin -->\n| a |\n<!-- tables: end -->\n"
    path.write_text("# Title\n\nprose before\n\n" + path.read_text().split("\n\n", 1)[1]
                    + "\nprose after\n")
    splice_tables(path, "| b |", "# ignored")
    text = path.read_text()
    assert "| a |" not in text and "| b |" in text
    assert text.startswith("# Title\n\nprose before\n") and text.endswith("\nprose after\n")
