"""``make release-demo`` runs end to end: prod passes, the candidate without citations fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.tools import release_demo

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType"),
    pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0 all arguments"),
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes are included by select_dtypes"),
]


def test_the_release_demo_shows_a_candidate_failing_and_prod_passing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # the demo points the environment at its own store: set both here so they are restored after
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "mangaassist-release-demo")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    assert release_demo.main(["--workdir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "as expected: prod passes, the candidate without citations fails" in out
    assert "grounded_answer_rate" in out
