"""`make demo` end to end: teacher on the embedded digits, data-free DFAD student, >= 90 % of the teacher."""
import json

import pytest

from kdvision.classification.demo import main


@pytest.mark.slow
def test_demo_student_reaches_90_percent_of_teacher(tmp_path, capsys):
    assert main(["--output", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["teacher_metric"] >= 0.95  # LeNet-5 on held-out real digits
    assert summary["student_best"] >= 0.9 * summary["teacher_metric"], summary
    assert (tmp_path / "demo" / "samples" / "last.png").is_file()
    assert (tmp_path / "demo" / "teacher" / "digits-lenet5.pt").is_file()
    out = capsys.readouterr().out
    assert "teacher accuracy on held-out real digits" in out and "of the teacher" in out
